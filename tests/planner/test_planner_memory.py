"""Byte counts: hand-derived for a tiny config, published for the three real ones."""

import pytest

from v4stack.planner import memory as mem
from v4stack.planner.model_shape import ModelShape, load_model
from tests.planner.test_planner_model_shape import tiny_v4_config


def test_published_kv_bytes_per_token():
    # model_spec s5.2: Flash 21 CSA x (584 + 68) / 4 + 20 HCA x 584 / 128 = 3423 + 91.25
    assert mem.kv_layout(load_model("v4-flash"), "fp8").bytes_per_token == 21 * 652 / 4 + 20 * 584 / 128
    # Pro: 30 CSA x 652 / 4 + 31 HCA x 584 / 128 = 4890 + 141.4375
    assert mem.kv_layout(load_model("v4-pro"), "fp8").bytes_per_token == 30 * 652 / 4 + 31 * 584 / 128
    # V4.1: 3 ratio-2 sources x (288 + 68) / 2 + one ratio-1 source x (288 + 68) = 890
    assert mem.kv_layout(load_model("v4.1-flash"), "fp4").bytes_per_token == 890


def test_entry_formats_at_512():
    m, m41 = load_model("v4-flash"), load_model("v4.1-flash")
    assert mem.entry_bytes(m, "fp8") == (584, 584, 68) == (mem.V4_FP8_ENTRY,) * 2 + (mem.INDEX_FP4_ENTRY,)
    assert mem.entry_bytes(m41, "fp4") == (528, 288, 68)
    assert mem.entry_bytes(m, "bf16") == (1024, 1024, 256)


def test_compressor_state_flash():
    # model_spec s5.2: 21 x 80 KiB (CSA main 64 + indexer 16) + 20 x 512 KiB
    fixed = mem.kv_layout(load_model("v4-flash"), "fp8").fixed
    assert fixed["compressor_state"] == 21 * 80 * 1024 + 20 * 512 * 1024
    # the window in the engine's whole blocks: 3 blocks of 128 rows x 44 layers (43 + MTP) x 584 B, plus the MTP
    # block's kept final streams (hc 4 x D 4096 bf16) once per block
    assert fixed["window"] == 3 * (44 * 128 * 584 + 4 * 4096 * 2)


def test_tiny_kv_by_hand():
    m = ModelShape.from_config(tiny_v4_config())
    lay = mem.kv_layout(m, "fp8")
    # entry: 64 nope fp8 + 64 rope bf16 (128) + 64/64 scale + 1 pad = 194; key: 128/2 + 128/32 = 68
    assert mem.entry_bytes(m, "fp8") == (194, 194, 68)
    # CSA layers 1, 3: (194 + 68) / 4 each; HCA layer 2: 194 / 128
    assert lay.bytes_per_token == pytest.approx(2 * 262 / 4 + 194 / 128)
    # window 16 -> 2 blocks of 128 rows (ceil((16 + 1) / 128) + 1) x 5 layers x 194 B + the MTP streams 2 x 256 x 2
    assert lay.fixed["window"] == 2 * (5 * 128 * 194 + 2 * 256 * 2)
    # CSA main 2 x 8 x 256 x 4 = 16384, CSA indexer 2 x 8 x 256 x 4 = 16384, HCA 2 x 128 x 128 x 4
    assert lay.fixed["compressor_state"] == 2 * (16384 + 16384) + 131072


def test_tiny_weight_bytes_by_hand():
    m = ModelShape.from_config(tiny_v4_config())
    t = {x.name: x for x in m.tensors()}
    # FP8 [512, 64], 128x128 blocks: 32768 + ceil(512/128) * ceil(64/128) = 32772
    assert mem.tensor_bytes(t["layers.1.attn.wq_b"], "native", 128) == 32772
    # expert FP4 w1|w3 [64, 256] x 16: (64*256/2 + 64*256/32) x 16 = 8704 x 16
    assert mem.tensor_bytes(t["layers.1.ffn.experts.*.w1|w3"], "native", 128) == 8704 * 16
    # W8A8: INT8 numel + 4 B per row; W4A8 experts: numel/2 + 4 B/row + 4 B per 256 elements
    assert mem.tensor_bytes(t["layers.1.attn.wq_b"], "w8a8", 128) == 32768 + 512 * 4
    assert mem.tensor_bytes(t["layers.1.ffn.experts.*.w2"], "w4a8", 128) == (8192 + 256 * 4 + 64 * 4) * 8
    w = mem.weights_by_class(m, "native")
    per_layer = 8 * 3 * 8704                      # 8 experts x (w1, w3, w2) x 8704
    assert w["experts"] == 4 * per_layer           # MTP experts are in "draft"
    w4 = mem.weights_by_class(m, "native", mem.Parallel.make(4))
    assert w4["experts"] == per_layer              # ep = 4 splits experts whole


def test_real_checkpoint_sizes():
    # V4-Flash model.safetensors.index.json total_size (model_spec s4.1)
    assert sum(mem.weights_by_class(load_model("v4-flash"), "native").values()) == 159_609_485_896
    w41 = mem.weights_by_class(load_model("v4.1-flash"), "native")
    # routed experts: 40 layers x 384 x 3 x 2304 x 5120 x (1/2 + 1/32) B  (~289 GB published)
    assert w41["experts"] == 40 * 384 * 3 * 2304 * 5120 * 17 // 32
    # Engram: (384,006,168 + 384,016,682) rows x 264 B (~189 GiB, SGLang docs)
    assert w41["engram_table"] == (384006168 + 384016682) * 264


def test_kv_replicated_across_tp_split_across_dp():
    m = load_model("v4-flash")
    kw = dict(quant="native", kv_dtype="fp8", engram="device", context=65536, concurrency=8)
    tp8 = mem.device_memory(m, 112e9, mem.Parallel.make(8, tp=8), **kw)
    dp8 = mem.device_memory(m, 112e9, mem.Parallel.make(8, tp=1), **kw)
    # per-sequence pools scale with the sequences per DP rank; one step's window rows are per device in both
    step = tp8.kv["window_step"]
    assert step == dp8.kv["window_step"] == mem.window_step_bytes(m, "fp8", mem.PREFILL_CHUNK) > 0
    assert tp8.kv_total - step == pytest.approx(8 * (dp8.kv_total - step))


def test_max_context_is_the_boundary():
    m = load_model("v4-pro")
    par = mem.Parallel.make(8)
    args = (m, 141e9, par, "native", "fp8", "device")
    t = mem.max_context(*args, 64)
    assert 0 < t < 1 << 20
    assert mem.device_memory(*args, t, 64).spare >= 0
    assert mem.device_memory(*args, t + 1, 64).spare < 0


def test_bad_parallel():
    with pytest.raises(ValueError):
        mem.Parallel(8, 4, 1, 8)
    with pytest.raises(ValueError):
        mem.Parallel(8, 8, 1, 3)
