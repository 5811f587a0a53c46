"""The C kernels' vector paths give their plain C loops' bits: the native build (AVX-512 or AVX2 + FMA, by CPU)
of ``csrc/fast_kernels.c``, ``csrc/decode_ops.c`` and ``csrc/argmax.c`` against their ``-march=x86-64-v3`` (AVX2)
and ``-march=x86-64`` (plain C) builds, on shapes with vector tails and special values (NaN, infinities, signed
zeros)."""

import pytest
import torch

from v4stack.ops.fast import argmax, decode_ops, kernels

PORTABLE_CFLAGS = tuple("-march=x86-64-v3" if f == "-march=native" else f for f in kernels.CFLAGS)  # AVX2 + FMA
SCALAR_CFLAGS = tuple("-march=x86-64" if f == "-march=native" else f for f in kernels.CFLAGS)  # SSE2: plain C
BUILDS = {"x86-64-v3": PORTABLE_CFLAGS, "x86-64": SCALAR_CFLAGS}

pytestmark = pytest.mark.skipif(not kernels.available(), reason="no C compiler")


def _special(x: torch.Tensor) -> torch.Tensor:
    """x [rows >= 4, n >= 6] with NaN, infinities, signed zeros and a tiny value in its first rows."""
    x = x.clone()
    x[0, :6] = torch.tensor([float("nan"), float("inf"), -0.0, 1e-30, -7.0, float("-inf")])
    x[1] = 0.0
    x[2, ::2] = -0.0
    return x


@pytest.fixture(params=list(BUILDS), ids=list(BUILDS))
def other_build(request, monkeypatch):
    """on_other(fn, *args): fn (a wrapper of kernels, or of the module given as module=) run on another build of its
    library."""
    flags = BUILDS[request.param]

    def on_other(fn, *args, module=kernels):
        native = module._library
        lib = native(flags)
        if lib is None:
            pytest.skip(f"the compiler cannot build with {flags}")
        monkeypatch.setattr(module, "_library", lambda cflags=kernels.CFLAGS: lib)
        try:
            return fn(*args)
        finally:
            monkeypatch.setattr(module, "_library", native)
    return on_other


def _same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.dtype == b.dtype and torch.equal(a.contiguous().view(torch.uint8), b.contiguous().view(torch.uint8))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("rows, k, block", [(37, 128, 32), (9, 120, 12), (5, 21, 7)])  # 32: the indexer's blocks
def test_fp4_quant_builds_agree(other_build, dtype, rows, k, block):
    g = torch.Generator().manual_seed(rows)
    x = _special(torch.randn(rows, k, generator=g) * torch.rand(rows, 1, generator=g) * 12).to(dtype)
    native = kernels.fp4_quant(x, block)
    assert _same_bits(other_build(kernels.fp4_quant, x, block), native)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("n", [1, 2, 4, 8, 16, 128, 4096])  # under, at and over the AVX2 path's 8-value vectors
def test_hadamard_builds_agree(other_build, dtype, n):
    g = torch.Generator().manual_seed(n)
    x = torch.randn(6, n, generator=g) * 3
    if n >= 8:
        x = _special(x)
    x = x.to(dtype)
    assert _same_bits(other_build(kernels.hadamard_rotate, x), kernels.hadamard_rotate(x))


# (sequences, heads, head dim, window slots, compressed slots): the 4-head blocks with 16-dim P.V blocks, a head
# tail (5, 6 heads), dims off the 8-lane q.k (20) and off the 16-dim P.V blocks (20, 40), a list past one 64-slot
# kernel block, no compressed part; 16 x 8 heads x 512 dims: 65K outputs, enough that a P.V sum one fp32 ulp off
# (a fused multiply-add for the multiply then add, say) shows through the bf16 rounding somewhere
DECODE_SHAPES = [(3, 4, 128, 96, 40), (2, 5, 20, 30, 9), (2, 6, 40, 70, 0), (16, 8, 512, 128, 64)]


@pytest.mark.parametrize("shape", DECODE_SHAPES)
def test_decode_attention_builds_agree(other_build, shape):
    b, heads, d, n0, n1 = shape
    g = torch.Generator().manual_seed(d)
    q = torch.randn(b, heads, d, generator=g).bfloat16()
    pools = [torch.randn(300, d, generator=g).bfloat16() for _ in range(2)]
    parts = [(pools[0], torch.stack([torch.randperm(300, generator=g)[:n0] for _ in range(b)])),
             (pools[1], torch.stack([torch.randperm(300, generator=g)[:n1] for _ in range(b)]))]
    valid = torch.rand(b, n0 + n1, generator=g) < 0.8
    valid[:, 0] = True
    sink, scale = torch.randn(heads, generator=g), d ** -0.5
    native = kernels.decode_attention_pooled(q, parts, valid, sink, scale)
    assert _same_bits(other_build(kernels.decode_attention_pooled, q, parts, valid, sink, scale), native)
    keys = torch.cat([pools[0][parts[0][1]], pools[1][parts[1][1]]], dim=1)  # [B, K, d] gathered
    assert _same_bits(other_build(kernels.decode_attention_blocked, q, keys, valid, sink, scale), native)


@pytest.mark.parametrize("rows, groups, rank, width",
                         [(3, 2, 64, 256), (2, 2, 6, 48), (1, 3, 5, 40), (16, 2, 64, 256), (6, 2, 6, 48), (9, 3, 5, 40)])
def test_grouped_output_builds_agree(other_build, rows, groups, rank, width):
    """4-row passes and their row tail (rank 6, 5), widths off the 16-lane blocks (40); from 4 tokens the AVX2
    4-token blocks and their token tail (6, 9 rows)."""
    g = torch.Generator().manual_seed(width)
    o = torch.randn(rows, groups, width, generator=g).bfloat16()
    weight = torch.randn(groups, rank, width, generator=g).bfloat16()
    native = decode_ops.grouped_output(o, weight)
    assert _same_bits(other_build(decode_ops.grouped_output, o, weight, module=decode_ops), native)


# 16-lane dims (the AVX2 path's 8-key blocks, then a key tail), dims with a 40 and a 9 tail, one over the AVX2
# path's INDEX_MAX_DIM (plain C)
@pytest.mark.parametrize("heads, d", [(4, 128), (5, 32), (3, 40), (2, 9), (2, 528)])
def test_decode_index_scores_builds_agree(other_build, heads, d):
    """16 rows of 200 entries: enough scores (~2K) that a lane sum in another order shows through the bf16
    roundings."""
    g = torch.Generator().manual_seed(d)
    q = torch.randn(16, heads, d, generator=g).bfloat16()
    weights = torch.randn(16, heads, generator=g).bfloat16()
    keys = torch.randn(16, 200, d, generator=g).bfloat16()
    positions = torch.randint(0, 1000, (16,), generator=g)  # ratio 4: 0 to 200 (all) entries visible
    positions[:3] = torch.tensor([799, 122, 3])  # all; 30 (blocks of 8 and a tail); 1
    native = decode_ops.decode_index_scores(q, weights, keys, positions, 4)
    assert _same_bits(other_build(decode_ops.decode_index_scores, q, weights, keys, positions, 4, module=decode_ops),
                      native)


@pytest.mark.parametrize("n", [1, 7, 8, 9, 17, 1000])
def test_argmax_builds_agree(other_build, n):
    g = torch.Generator().manual_seed(n)
    x = torch.randint(-3, 3, (5, n), generator=g).float()  # ties
    x[1] = 0.0
    x[1, ::2] = -0.0
    x[2, n // 2] = float("nan")
    x[3] = float("-inf")
    native = argmax.argmax_rows(x)
    assert torch.equal(other_build(argmax.argmax_rows, x, module=argmax), native)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("rows, k, block", [(37, 256, 128), (9, 60, 12), (5, 21, 7)])  # 128: the model's blocks
def test_fp8_act_quant_builds_agree(other_build, dtype, rows, k, block):
    """e4m3's normal and subnormal steps (values spread over 2^-12 .. 2^4 of the block's scale), the clamp, NaN."""
    g = torch.Generator().manual_seed(rows)
    x = torch.randn(rows, k, generator=g) * torch.exp2(torch.randint(-12, 4, (rows, k), generator=g).float())
    x = _special(x).to(dtype)
    native = kernels.act_quant(x, block)
    assert _same_bits(other_build(kernels.act_quant, x, block), native)
