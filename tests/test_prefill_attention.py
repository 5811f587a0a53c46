"""The C prefill sparse attention (ops.fast.prefill_attention) against the C decode kernel on the gathered keys (the
same scores and weights; P.V in double instead of fp32), the reference op (a few bf16 ulps) and the torch form it
replaces; key segments read in place; the calls it declines."""

import pytest
import torch

from v4stack.ops.fast import attention, kernels, prefill_attention
from v4stack.ops.key_rows import KeyRows
from v4stack.ops.reference.attention import sparse_attention as reference

pytestmark = pytest.mark.skipif(not prefill_attention.available(), reason="no C compiler")

# (queries, heads, head dim, key rows, list slots): the V4 shape's 4-head blocks and 32-dim P.V blocks, head counts
# and dims the vector blocks do not divide (the scalar tails), a list longer than one 64-slot kernel block; a dim
# off the AVX2 blocks' 8 (the q.k's lane tail; P.V in plain C there; the lists of 70 and 200 slots span 2 and 4
# of the AVX2 P.V's 64-row chunks)
# the build for CPUs without AVX-512 (CI machines vary): the kernel's AVX2 + FMA blocks
PORTABLE_CFLAGS = tuple("-march=x86-64-v3" if f == "-march=native" else f for f in kernels.CFLAGS)
# the baseline x86-64 build (SSE2): the kernel's plain C loops, the values every vector path must give
SCALAR_CFLAGS = tuple("-march=x86-64" if f == "-march=native" else f for f in kernels.CFLAGS)
SHAPES = [(24, 4, 512, 700, 200), (9, 6, 64, 90, 70), (11, 3, 48, 60, 30), (5, 1, 24, 40, 40),
          (6, 5, 20, 200, 150)]


def _case(s, heads, d, n, slots, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(s, heads, d, generator=g).bfloat16()
    kv = torch.randn(n, d, generator=g).bfloat16()
    idx = torch.stack([torch.randperm(n, generator=g)[:slots] for _ in range(s)])
    idx[:3, slots - 9:] = -1  # empty slots at the end of some lists
    idx[3, 1:20] = -1  # and inside one (the kernel's blocks still count them)
    return q, kv, idx, torch.randn(heads, generator=g), d ** -0.5


@pytest.mark.parametrize("shape", SHAPES)
def test_prefill_kernel_is_the_decode_kernel_on_the_gathered_keys_up_to_the_pv_sum(shape):
    q, kv, idx, sink, scale = _case(*shape)
    got = prefill_attention.sparse_attention(q, kv, idx, sink, scale)
    valid = idx >= 0
    want = kernels.decode_attention_blocked(q, kv[idx.clamp_min(0)], valid, sink, scale)
    assert got is not None
    bf16_ulp = 2.0 ** -8 * want.float().abs().clamp_min(2.0 ** -6)
    assert ((got.float() - want.float()).abs() <= bf16_ulp).all()  # one bf16 step at most: fp32 vs double P.V
    assert (got != want).float().mean() < 0.01


@pytest.mark.parametrize("shape", SHAPES)
def test_prefill_kernel_matches_the_reference_and_the_torch_form(shape):
    q, kv, idx, sink, scale = _case(*shape, seed=1)
    got = attention.sparse_attention(q, kv, idx, sink, scale, True).float()
    want = reference(q, kv, idx, sink, scale, True).float()
    bf16_ulp = 2.0 ** -8 * want.abs().clamp_min(2.0 ** -6)
    assert ((got - want).abs() <= 2 * bf16_ulp).all()  # fp32 P.V in list order vs the reference's exact blocks
    assert (got != want).float().mean() < 0.01  # most outputs round to the same bf16
    torch_form = attention.sliced_attention(q, kv, idx, sink, scale, True).float()
    assert ((got - torch_form).abs() <= 2 * bf16_ulp).all()


def test_prefill_kernel_reads_key_segments_in_place():
    """Window rows, pool slots and fresh rows (the model's KeyRows), a strided dense segment: the same bits as one
    joined tensor."""
    q, kv, idx, sink, scale = _case(16, 4, 64, 300, 120, seed=2)
    g = torch.Generator().manual_seed(3)
    pool = torch.randn(700, 64, generator=g).bfloat16()
    slots = torch.randperm(700, generator=g)[:150]
    pool[slots] = kv[100:250]
    wide = torch.zeros(50, 128).bfloat16()
    wide[:, :64] = kv[250:]  # rows with stride 128
    keys = KeyRows([(kv[:100], None), (pool, slots), (wide[:, :64], None)])
    want = prefill_attention.sparse_attention(q, kv, idx, sink, scale)
    assert torch.equal(prefill_attention.sparse_attention(q, keys, idx, sink, scale), want)


def test_prefill_kernel_declines_what_it_cannot_take_and_rejects_bad_indices():
    q, kv, idx, sink, scale = _case(4, 4, 32, 50, 20, seed=4)
    assert prefill_attention.sparse_attention(q.float(), kv, idx, sink, scale) is None
    assert prefill_attention.sparse_attention(q, kv.float(), idx, sink, scale) is None
    many = KeyRows([(kv[i:i + 5], None) for i in range(0, 50, 5)])  # 10 segments > MAX_SEGMENTS
    assert prefill_attention.sparse_attention(q, many, idx, sink, scale) is None
    assert torch.equal(attention.sparse_attention(q, many, idx, sink, scale, True),
                       attention.sliced_attention(q, kv, idx, sink, scale, True))  # the torch form took it
    bad = idx.clone()
    bad[2, 0] = 50
    with pytest.raises(IndexError):
        prefill_attention.sparse_attention(q, kv, bad, sink, scale)


@pytest.mark.parametrize("cflags", [PORTABLE_CFLAGS, SCALAR_CFLAGS], ids=["x86-64-v3", "x86-64"])
def test_portable_builds_give_the_native_bits(cflags):
    """The AVX-512 blocks, the AVX2 blocks and the plain C loops sum the same exact products in the same order
    (the native build is AVX-512 or AVX2 by CPU; x86-64-v3 is AVX2; x86-64 plain C)."""
    for shape in SHAPES:
        q, kv, idx, sink, scale = _case(*shape, seed=5)
        native = prefill_attention.sparse_attention(q, kv, idx, sink, scale)
        portable = prefill_attention.sparse_attention(q, kv, idx, sink, scale, cflags=cflags)
        if portable is None:
            pytest.skip(f"the compiler cannot build with {cflags}")
        assert torch.equal(portable, native), shape


def test_the_wrapper_sizes_the_avx2_weights_for_the_kernels_head_block():
    """qd's AVX2 weight scratch is HEAD_BLOCK doubles per slot: the Python constant is the C one."""
    source = prefill_attention.SOURCE.read_text()
    assert f"#define HEAD_BLOCK {prefill_attention.HEAD_BLOCK} " in source
