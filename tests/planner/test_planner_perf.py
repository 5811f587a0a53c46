"""FLOP and byte counts per op class, roofline arithmetic, speculative decoding."""

import pytest

from v4stack.hardware.registry import get_chip
from v4stack.planner.memory import Parallel
from v4stack.planner.model_shape import ModelShape, load_model
from v4stack.planner.perf import Calib, Workload, _sum_min, decode_step, prefill
from tests.planner.test_planner_model_shape import tiny_v4_config

ONE = Parallel(1, 1, 1, 1)
T = 8192


@pytest.fixture(scope="module")
def flash_step():
    return decode_step(load_model("v4-flash"), ONE, "native", "fp8", "device", Workload(T, T, 1))


def test_attention_flops_and_bytes_flash(flash_step):
    ops, hd, H = flash_step.ops, 512, 64
    # CSA: 21 layers, window 128 + top-k min(512, 8192/4); QK and PV = 4 FLOP per head-dim-key
    assert ops["sparse_attn"][0] == 21 * 4 * H * hd * (128 + 512)
    assert ops["sparse_attn"][1] == 21 * (128 + 512) * 584
    # HCA: 20 layers, window + all 8192/128 = 64 compressed entries
    assert ops["hca_attn"][0] == 20 * 4 * H * hd * (128 + 64)
    assert ops["hca_attn"][1] == 20 * (128 + 64) * 584
    # window-only layers 0, 1
    assert ops["window_attn"][0] == 2 * 4 * H * hd * 128
    # indexer, 21 layers: scores 2048 keys x (2 x 64 heads x 128 dims + 2 x 64 weights), plus its
    # projections for one token: wq_b [64*128, 1024], weights_proj [64, 4096], compressor wkv+wgate [256, 4096]
    scores = 2048 * (2 * 64 * 128 + 2 * 64)
    proj = 2 * (64 * 128 * 1024 + 64 * 4096 + 2 * 256 * 4096)
    assert ops["indexer"][0] == 21 * (scores + proj)
    assert ops["indexer"][1] >= 21 * 2048 * 68


def test_moe_and_head_flash(flash_step):
    D, I, E, k, V = 4096, 2048, 256, 6, 129280
    routed = 2 * 3 * I * D * k             # one token through 6 experts
    shared = 2 * 3 * I * D
    router = 2 * E * D
    assert flash_step.ops["moe_experts"][0] == pytest.approx(43 * (routed + shared + router))
    # bytes at batch 1: exactly 6 experts hit per layer; FP4 expert = 3 x (2048*4096/2 + 2048*4096/32)
    expert = 3 * (I * D // 2 + I * D // 32)
    assert flash_step.ops["moe_experts"][1] > 43 * 6 * expert
    assert flash_step.ops["moe_experts"][1] < 43 * (6 * expert + 3 * I * D * 1.01 + E * D * 2 + E * 4 + V * 6 * 8)
    assert flash_step.ops["head"][0] == 2 * V * D
    assert flash_step.ops["head"][1] == V * D * 2 + D * 2      # head weight + one embedding row


def test_roofline_is_sum_of_per_op_max(flash_step):
    chip = get_chip("h200")
    want = sum(max(f / chip.gemm_flops(fmt), b / chip.memory_bw.value) for f, b, fmt in flash_step.ops.values())
    assert flash_step.collectives == 0 and flash_step.comm_bytes == 0          # one device
    assert flash_step.step_time(chip) == pytest.approx(want)
    # calibrated = floor + device time, additive: one forward pass x 1 s, plus every op at half the
    # peak rates, i.e. twice the roofline (no comm on one device)
    cal = Calib(bw_eff=0.5, flops_eff=0.5, link_eff=0.5, pass_overhead_s=1.0)
    assert flash_step.passes == 1
    assert flash_step.step_time(chip, cal) == pytest.approx(1.0 + 2 * want)


def test_tp_and_ep_communication():
    m = ModelShape.from_config(tiny_v4_config())
    sc = decode_step(m, Parallel(4, 4, 1, 4), "native", "fp8", "device", Workload(64, 64, 1))
    D, L = 256, 4
    # per layer: TP all-reduce 2 (tp-1)/tp x D x 2 B; EP: 1 token / 4 x top-2 x D x 3/4 x (1 + 2) B
    per_layer = 2 * 3 / 4 * D * 2 + 1 / 4 * 2 * D * 3 / 4 * 3
    assert sc.comm_bytes == pytest.approx(L * per_layer)
    assert sc.collectives == L * 3


def test_speculative_draft_passes():
    m41 = load_model("v4.1-flash")
    base = decode_step(m41, ONE, "native", "fp4", "host", Workload(T, T, 1))
    ds = decode_step(m41, ONE, "native", "fp4", "host", Workload(T, T, 1, 5, 2.75))
    assert base.layers_run == 40 and ds.layers_run == 43          # one pass over 3 DSpark stages
    assert base.passes == 1 and ds.passes == 2                    # host floor: main + one DSpark block pass
    mtp = decode_step(load_model("v4-flash"), ONE, "native", "fp8", "device", Workload(T, T, 1, 2, 2.0))
    assert mtp.layers_run == 43 + 2                               # K sequential MTP passes
    assert mtp.passes == 1 + 2
    with pytest.raises(ValueError):
        Workload(T, T, 1, 2, 3.5)                                 # acceptance > K + 1


def test_sum_min_closed_form():
    for c, r, p in [(512, 4, 100), (512, 4, 5000), (16, 1, 40)]:
        brute = sum(min(c, t / r) for t in range(1, p + 1))
        assert _sum_min(c, r, p) == pytest.approx(brute, rel=0.03)


def test_prefill_indexer_is_quadratic():
    m = load_model("v4-flash")
    a = prefill(m, ONE, "native", "fp8", "device", 16384, 4096).ops["indexer"][0]
    b = prefill(m, ONE, "native", "fp8", "device", 32768, 4096).ops["indexer"][0]
    assert b / a == pytest.approx(4.0, rel=0.01)


def test_prefill_passes_are_chunks():
    """The host floor of a prefill is one forward pass per chunk: 16,384 / 4,096 = 4."""
    m = load_model("v4-flash")
    assert prefill(m, ONE, "native", "fp8", "device", 16384, 4096).passes == 4
    assert prefill(m, ONE, "native", "fp8", "device", 100, 4096).passes == 1
