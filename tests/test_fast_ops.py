"""The fast op table (v4stack.ops.fast) against the reference, through the parity harness, plus its C kernels,
its weight preparation and the thread choice."""

import pytest
import torch

from v4stack.config.numerics import Numerics
from v4stack.ops.fast import fast_ops, kernels
from v4stack.ops.fast.linear import act_quant
from v4stack.ops.fast.prepare import LOWBIT
from v4stack.ops.parity import Tolerance, check_parity, record_reference_calls
from v4stack.ops.reference import mixing, quant
from v4stack.platforms.threads import choose_threads

BF16_ULPS = Tolerance(rtol=2 ** -6)  # outputs rounded to bf16 after another summation order: a few bf16 ulps
FP32_SUMS = Tolerance(atol=1e-5, rtol=1e-5)  # fp32 head logits summed in another order: far below any bf16 ulp
# decode-sized routing in one C call (ops.fast.route_kernel): libm's transcendentals, weights within 8 fp32 ulps of
# the reference's (tests/test_route_kernel.py); the expert ids (integers) must still match exactly
ROUTE_ULPS = Tolerance(rtol=8 * 2 ** -24)


@pytest.fixture(scope="module")
def recorded(tiny_checkpoint):
    return record_reference_calls(tiny_checkpoint, Numerics.reference(), per_op=6)


def test_fast_table_matches_the_reference_entry_by_entry(recorded):
    model, calls = recorded
    loose = {name: BF16_ULPS for name in ("linear", "attention_qkv", "moe_experts", "sparse_attention", "grouped_output",
                                          "index_scores", "rms_norm", "decode_attention", "decode_attention_pooled",
                                          "decode_index_scores", "hc_pre", "hc_head")}
    loose["lm_head"] = FP32_SUMS
    loose["route"] = ROUTE_ULPS
    results = {r.op: r for r in check_parity(fast_ops(), model, calls, tolerances=loose)}
    assert all(r.ok for r in results.values()), [r.line() for r in results.values() if not r.ok]
    # exact where the fast entry keeps the reference's rounding points: mixing, the untouched entries (routing: the
    # same experts, the weights of decode-sized calls within fp32 ulps, ROUTE_ULPS)
    for name in ("hc_split_sinkhorn", "index_topk", "rope", "compress_pool", "quant_dequant_fp8",
                 "quant_dequant_fp4", "hadamard_rotate", "hc_collapse", "hc_post"):
        assert results[name].max_abs == 0, results[name].line()
    # hc_pre / hc_head of decode-sized calls are one C call with libm's exp (ops.fast.mhc_fused): within a bf16
    # ulp of the reference's collapse, not bit-exact (tests/test_mhc_fused.py bounds them tightly)
    assert results["linear"].max_abs < 0.05  # a real difference would be O(1)


def test_fast_model_prepares_weights_once_and_stays_close(tiny_checkpoint):
    from v4stack.model import ForwardBatch
    from v4stack.modelio.loader import load_model

    ref = load_model(tiny_checkpoint, Numerics.reference(), progress=False)
    fast = load_model(tiny_checkpoint, Numerics.fast_kernels(), progress=False)  # the CPU platform's fast table
    assert fast.compute.ops.linear is not ref.compute.ops.linear
    wq = fast.layers[0].attn.wq_a
    assert getattr(wq, LOWBIT) and not hasattr(wq, "prepared")  # FP8 bytes read directly: no dense copy
    assert "prepared" not in dict(fast.state_dict())
    ids = torch.arange(3, 12)
    a = ref(ForwardBatch.build([ref.new_state()], [ids])).logits
    b = fast(ForwardBatch.build([fast.new_state()], [ids])).logits
    assert (a - b).abs().max() < 0.05, (a - b).abs().max()  # 9 tokens: the short-context regime
    assert fast.head._fp32 is None  # the head read its bf16 weight: no fp32 [V, D] copy


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("n", [1, 2, 16, 128, 512])
def test_hadamard_butterflies_equal_the_reference_rotation(dtype, n):
    """The C butterflies (kernels.hadamard_rotate, the fast entry's path) give the reference's fp64-GEMM values bit
    for bit, on values spread over 2^-23 .. 2^13 (the sums stay exact in fp64) and in several leading shapes."""
    from v4stack.ops.fast import quant as fast_quant
    from v4stack.ops.reference import hadamard

    if not kernels.available():
        pytest.skip("no C compiler")
    g = torch.Generator().manual_seed(n)
    x = (torch.randn(3, 5, n, generator=g) * torch.logspace(-7, 4, n)).to(dtype)
    got = kernels.hadamard_rotate(x)
    assert got is not None and got.dtype == dtype
    assert torch.equal(got, hadamard.hadamard_rotate(x))
    assert torch.equal(fast_quant.hadamard_rotate(x[:, 1]), hadamard.hadamard_rotate(x[:, 1]))
    assert kernels.hadamard_rotate(torch.randn(2, 24)) is None  # not a power of two: the matrix path


def test_act_quant_equals_the_reference_quant_dequant():
    g = torch.Generator().manual_seed(1)
    x = (torch.randn(7, 384, generator=g) * torch.logspace(-7, 4, 384)).bfloat16()  # tiny, subnormal, huge
    want = quant.quant_dequant_fp8(x, 128).bfloat16()
    assert torch.equal(act_quant(x, 128, torch.bfloat16), want)  # C kernel where a compiler exists
    assert torch.equal(act_quant(x.float(), 128, torch.float32).bfloat16(), want)  # torch formulation
    assert torch.equal(act_quant(x[:, :200], 128, torch.bfloat16), quant.quant_dequant_fp8(x[:, :200], 128).bfloat16())


def test_fp4_quant_equals_the_reference_quant_dequant():
    from v4stack.ops.fast import quant as fast_quant

    g = torch.Generator().manual_seed(3)
    x = torch.randn(5, 256, generator=g) * torch.logspace(-40, 6, 256)  # below the amax floor up to huge
    x[0, :32] = torch.tensor([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, 6.0] * 4)  # ties of the e2m1 grid (amax 6)
    x[1, :32] = 0.0  # an all-zero block
    x[2, :32] = 0.001
    x[2, 0] = 0.0468750075  # amax / 6 a few ulps above 2^-7: the reference's fp32 log2 gives -7, kept as -7
    for inp in (x, x.bfloat16()):
        want = quant.quant_dequant_fp4(inp, 32)
        got = fast_quant.quant_dequant_fp4(inp, 32)
        assert got.dtype == want.dtype and torch.equal(got, want)
    assert kernels.fp4_quant(x, 32) is not None  # really the C kernel


def test_sinkhorn_is_bit_identical_to_the_reference():
    from v4stack.ops.fast import mixing as fast_mixing

    g = torch.Generator().manual_seed(2)
    assert kernels.hc_split(torch.zeros(1, 24), torch.ones(3), torch.zeros(24), 4, 20, 1e-6) is not None
    for t in (1, 17, 300):  # torch vectorises the sigmoid / exp of the longer ones: the fast entry must follow
        mixes, scale, base = torch.randn(t, 24, generator=g) * 3, torch.rand(3, generator=g), torch.randn(24, generator=g)
        want = mixing.hc_split_sinkhorn(mixes, scale, base, 4, 20, 1e-6)
        got = fast_mixing.hc_split_sinkhorn(mixes, scale, base, 4, 20, 1e-6)
        assert all(torch.equal(a, b) for a, b in zip(want, got))


def test_c_kernels_compile_here():
    """The CI box has a C compiler; without one the fast table runs its torch formulations (tested above)."""
    assert kernels.available()


def test_thread_choice_leaves_busy_cores_alone(monkeypatch):
    monkeypatch.delenv("V4STACK_THREADS", raising=False)
    assert choose_threads(cores=2, load=0.1) == 2
    assert choose_threads(cores=2, load=1.2) == 1
    assert choose_threads(cores=2, load=9.0) == 1  # never 0
    assert choose_threads(cores=16, load=3.4) == 13
    monkeypatch.setenv("V4STACK_THREADS", "3")
    assert choose_threads(cores=2, load=9.0) == 3


def test_attached_bytes_counts_what_prepare_model_adds(tiny_checkpoint):
    from v4stack.modelio.loader import load_model
    from v4stack.ops.fast.prepare import attached_bytes, prepare_model

    ref = load_model(tiny_checkpoint, Numerics.reference(), progress=False)
    assert attached_bytes(ref) == 0  # the exact modes keep only the checkpoint tensors
    fast = load_model(tiny_checkpoint, Numerics.fast_kernels(), progress=False)
    added = prepare_model(fast)  # idempotent: rebuilds the same copies and reports their bytes
    assert added > 0 and attached_bytes(fast) == added


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_c_rope_and_mhc_mixing_are_bit_identical_to_the_reference(dtype):
    """The C RoPE, stream collapse and post mixing keep the reference's products and summation order, at decode
    and prefill sizes (torch may vectorise the longer ones differently: the results must not change)."""
    from v4stack.model.rope import RopeSpec, Rotary
    from v4stack.ops.fast import mixing as fast_mixing
    from v4stack.ops.fast import rope as fast_rope
    from v4stack.ops.reference import rope as reference_rope
    from v4stack.ops.table import reference_ops

    g = torch.Generator().manual_seed(5)
    rotary = Rotary(RopeSpec(16, 160000.0, 16.0, 65536))
    for t in (1, 16, 300):
        positions = torch.randint(0, 5000, (t,), generator=g)
        for shape in ((t, 3, 40), (t, 40)):
            x = (torch.randn(shape, generator=g) * 30).to(dtype)
            for inverse in (False, True):
                want = reference_rope.rope(rotary, x, positions, inverse)
                assert torch.equal(fast_rope.rope(rotary, x, positions, inverse), want)
        streams = (torch.randn(t, 4, 64, generator=g) * 5).to(dtype)
        out = torch.randn(t, 64, generator=g).to(dtype)
        pre, post = torch.rand(t, 4, generator=g), torch.rand(t, 4, generator=g) * 2
        comb = torch.rand(t, 4, 4, generator=g)
        assert kernels.hc_post(out, streams, post, comb) is not None  # really the C kernels
        assert torch.equal(fast_mixing.hc_collapse(streams, pre), mixing.hc_collapse(streams, pre))
        assert torch.equal(fast_mixing.hc_post(out, streams, post, comb, reference_ops()),
                           mixing.hc_post(out, streams, post, comb, reference_ops()))


def test_fast_index_scores_skip_only_hidden_entries():
    """Chunks that score only the entries their last query sees: the same bits whatever the chunk (one chunk of
    every query scores all visible columns), -inf exactly where hidden, and close to the reference."""
    from v4stack.ops.fast.attention import index_scores
    from v4stack.ops.reference.indexer import _hidden, index_scores as reference

    g = torch.Generator().manual_seed(6)
    s, heads, d, n, ratio = 300, 8, 32, 90, 4
    q = torch.randn(s, heads, d, generator=g).bfloat16()
    w = torch.randn(s, heads, generator=g).bfloat16()
    keys = torch.randn(n, d, generator=g).bfloat16()
    for first in (0, 57, 400):  # a prompt from position 0, a later chunk, a chunk that sees every entry
        positions = torch.arange(first, first + s)
        whole = index_scores(q, w, keys, positions, ratio, chunk=s)
        for chunk in (1, 7, 128):
            assert torch.equal(index_scores(q, w, keys, positions, ratio, chunk=chunk), whole), (first, chunk)
        hidden = _hidden(n, positions, ratio)
        assert torch.isinf(whole[hidden]).all() and torch.isfinite(whole[~hidden]).all()
        want = reference(q, w, keys, positions, ratio)
        assert torch.allclose(whole[~hidden], want[~hidden], rtol=2 ** -6, atol=1e-2), first
