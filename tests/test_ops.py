"""Reference ops: each checked against an independent formulation or a mathematical property."""

import math

import torch

from v4stack.ops.reference.indexer import topk_lower_index_on_ties
from v4stack.model.rope import RopeSpec, Rotary, inverse_frequencies
from v4stack.ops.reference import attention, gemm, hadamard, mixing, quant
from v4stack.weights.formats import quantize_fp4_weight, quantize_fp8_weight

g = torch.Generator().manual_seed(0)


def _naive_attention(q, kv, idx, sink, scale):
    """Per query and head: softmax over the selected keys plus a sink logit with a zero value vector."""
    out = torch.zeros(q.shape, dtype=torch.float64)
    for t in range(q.shape[0]):
        keys = kv[[int(j) for j in idx[t] if j >= 0]].double()
        for h in range(q.shape[1]):
            s = keys @ q[t, h].double() * scale
            w = torch.exp(torch.cat([s, sink[h:h + 1].double()]))
            out[t, h] = (w[:-1, None] * keys).sum(0) / w.sum()
    return out


def test_sparse_attention_matches_naive_softmax_with_sink():
    q, kv = torch.randn(5, 3, 16, generator=g), torch.randn(40, 16, generator=g)
    idx = torch.randint(0, 40, (5, 70), generator=g)
    idx[:, 50:] = -1
    idx[2, 3:] = -1
    sink = torch.randn(3, generator=g)
    got = attention.sparse_attention(q, kv, idx, sink, 0.25, round_probs=False)
    assert torch.allclose(got.double(), _naive_attention(q, kv, idx, sink, 0.25), atol=1e-5)
    # permuting the index list changes nothing in exact mode
    perm = torch.randperm(70, generator=g)
    assert torch.allclose(attention.sparse_attention(q, kv, idx[:, perm], sink, 0.25, False), got, atol=1e-6)


def test_kernel_order_rounding_is_close_and_blockwise():
    q, kv = torch.randn(4, 2, 32, generator=g).bfloat16(), torch.randn(300, 32, generator=g).bfloat16()
    idx = torch.randint(0, 300, (4, 150), generator=g)
    sink = torch.randn(2, generator=g)
    exact = attention.sparse_attention(q, kv, idx, sink, 0.2, round_probs=False).float()
    kernel = attention.sparse_attention(q, kv, idx, sink, 0.2, round_probs=True).float()
    assert (kernel - exact).abs().max() < 0.03  # bf16 numerators: ~2^-8 relative
    # a single block, whose max is the global max: rounding the numerators is all that differs
    one = idx[:, :64]
    keys = kv.float()[one]
    s = torch.einsum("shd,skd->shk", q.float(), keys) * 0.2
    m = s.amax(-1, keepdim=True)
    p = torch.exp(s - m)
    want = torch.einsum("shk,skd->shd", p.bfloat16().float(), keys) / (p.sum(-1) + torch.exp(sink - m[..., 0]))[..., None]
    got = attention.sparse_attention(q, kv, one, sink, 0.2, round_probs=True).float()
    assert (got - want).abs().max() <= 2 ** -7 * want.abs().max()


def test_sinkhorn_makes_comb_doubly_stochastic():
    hc = 4
    mixes = torch.randn(6, (2 + hc) * hc, generator=g)
    pre, post, comb = mixing.hc_split_sinkhorn(mixes, torch.rand(3, generator=g), torch.randn(24, generator=g), hc, 20, 1e-6)
    assert torch.all(pre > 0) and torch.all(pre < 1 + 1e-5) and torch.all((post > 0) & (post < 2))
    assert torch.allclose(comb.sum(-2), torch.ones(6, hc), atol=1e-5)  # last step: columns
    assert torch.allclose(comb.sum(-1), torch.ones(6, hc), atol=1e-3)


def test_hadamard_is_orthonormal_sylvester():
    h = hadamard.hadamard_matrix(8)
    assert torch.equal(h @ h.T, 8 * torch.eye(8))
    assert h[1].tolist() == [1, -1, 1, -1, 1, -1, 1, -1]  # Sylvester ordering
    x = torch.randn(3, 128, generator=g)
    y = hadamard.hadamard_rotate(x)
    assert torch.allclose(y.norm(dim=-1), x.norm(dim=-1), atol=1e-4)
    assert torch.allclose(hadamard.hadamard_rotate(y), x, atol=1e-5)


def test_rope_inverse_and_yarn_ramp():
    plain, yarn = RopeSpec(64, 160000.0), RopeSpec(64, 160000.0, 16.0, 65536, 32.0, 1.0)
    f_plain, f_yarn = inverse_frequencies(plain), inverse_frequencies(yarn)
    assert torch.allclose(f_plain, 160000.0 ** (-torch.arange(0, 64, 2) / 64))
    assert torch.equal(f_yarn[:4], f_plain[:4])  # fast-rotating dims are not interpolated
    assert torch.allclose(f_yarn[-2:], f_plain[-2:] / 16)  # slow dims are divided by the factor
    rot = Rotary(yarn)
    x, pos = torch.randn(5, 2, 128, generator=g), torch.tensor([0, 1, 7, 1000, 65535])
    y = rot.apply(x, pos)
    assert torch.equal(y[..., :64], x[..., :64]) and torch.equal(y[0], x[0])  # position 0 is the identity
    assert torch.allclose(rot.apply(y, pos, inverse=True), x, atol=1e-5)
    # interleaved pairs: (x0, x1) of the rope part rotate by angle p * f_0
    p, f0 = 7.0, float(f_yarn[0])
    c, s = math.cos(p * f0), math.sin(p * f0)
    a, b = x[2, 0, 64], x[2, 0, 65]
    assert torch.allclose(y[2, 0, 64:66], torch.stack([a * c - b * s, a * s + b * c]), atol=1e-5)


def test_fp8_linear_blocked_exact_and_batch_invariant():
    w, x = torch.randn(256, 384, generator=g) * 0.05, torch.randn(9, 384, generator=g).bfloat16()
    wq, ws = quantize_fp8_weight(w, 128)
    y = gemm.linear_fp8(x, wq, ws, 128, 128, torch.float32)
    deq_w = gemm.dequant_fp8_weight(wq, ws, 128)
    y_plain = quant.quant_dequant_fp8(x, 128) @ deq_w.T
    assert torch.allclose(y, y_plain, rtol=1e-5, atol=1e-5)
    rows = torch.cat([gemm.linear_fp8(x[i:i + 1], wq, ws, 128, 128, torch.float32) for i in range(9)])
    assert torch.equal(rows, y)  # a row's result does not depend on its batch


def test_fp4_linear_matches_dequantised_matmul():
    w, x = torch.randn(64, 256, generator=g) * 0.05, torch.randn(5, 256, generator=g)
    packed, scale = quantize_fp4_weight(w)
    y = gemm.linear_fp4(x, packed, scale, 128, torch.float32)
    want = quant.quant_dequant_fp8(x, 128) @ gemm.dequant_fp4_weight(packed, scale).T
    assert torch.allclose(y, want, rtol=1e-5, atol=1e-5)
    exact = gemm.linear_fp4(x, packed, scale, None, torch.float32)
    assert torch.allclose(exact, x @ gemm.dequant_fp4_weight(packed, scale).T, atol=1e-5)


def test_activation_quant_grid():
    x = torch.randn(4, 256, generator=g) * 3
    q8 = quant.quant_dequant_fp8(x, 64)
    assert torch.equal(quant.quant_dequant_fp8(q8, 64), q8)  # idempotent: already on the grid
    assert (q8 - x).abs().max() <= x.abs().max() * 2 ** -3
    q4 = quant.quant_dequant_fp4(x, 32)
    scale = torch.exp2(torch.ceil(torch.log2(x.view(4, 8, 32).abs().amax(-1) / 6)))
    codes = (q4.view(4, 8, 32) / scale[..., None]).abs()
    assert set(codes.unique().tolist()) <= {0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0}


def test_topk_ties_keep_lower_index():
    scores = torch.tensor([[1.0, 3.0, 3.0, 2.0, 3.0]])
    assert topk_lower_index_on_ties(scores, 3).tolist() == [[1, 2, 4]]
