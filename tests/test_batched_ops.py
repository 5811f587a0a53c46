"""The batched formulations (v4stack.ops.batched) against their reference ops."""

import pytest
import torch

from v4stack.ops import batched
from v4stack.ops.reference import attention, mixing

g = torch.Generator().manual_seed(1)


def test_masked_attention_matches_sparse_attention_with_window_and_topk_lists():
    s, n, h, d = 40, 70, 3, 16
    q, kv = torch.randn(s, h, d, generator=g), torch.randn(n, d, generator=g)
    window = torch.arange(s)[:, None] - torch.arange(8)[None, :]  # 8 most recent rows, -1 padded at the start
    window = torch.where(window >= 0, window, -1)
    topk = 40 + torch.stack([torch.randperm(30, generator=g)[:6] for _ in range(s)])  # distinct entries per row
    topk[:5, 3:] = -1
    idx = torch.cat([window, topk], 1)
    sink = torch.randn(h, generator=g)
    want = attention.sparse_attention(q, kv, idx, sink, 0.3, round_probs=False)
    got = batched.sparse_attention_masked(q, kv, idx, sink, 0.3, round_probs=False)
    assert torch.allclose(got, want, atol=2e-6)
    with pytest.raises(ValueError, match="exact softmax"):
        batched.sparse_attention_masked(q, kv, idx, sink, 0.3, round_probs=True)


def test_masked_attention_gradients_match_the_gather_path():
    q, kv = torch.randn(6, 2, 8, generator=g), torch.randn(9, 8, generator=g)
    idx = torch.tensor([[0, 1, 2, -1]] * 3 + [[3, 5, 8, 7]] * 3)
    sink = torch.randn(2, generator=g)
    grads = []
    for fn in (attention.sparse_attention, batched.sparse_attention_masked):
        qq, kk = q.clone().requires_grad_(), kv.clone().requires_grad_()
        fn(qq, kk, idx, sink, 0.5, False).square().sum().backward()
        grads.append((qq.grad, kk.grad))
    assert torch.allclose(grads[0][0], grads[1][0], atol=1e-5) and torch.allclose(grads[0][1], grads[1][1], atol=1e-5)


def test_mixing_bmm_matches_reference():
    t, hc, dim = 7, 4, 32
    x, out = torch.randn(t, hc, dim, generator=g), torch.randn(t, dim, generator=g)
    pre, post = torch.rand(t, hc, generator=g), torch.rand(t, hc, generator=g)
    comb = torch.rand(t, hc, hc, generator=g)
    assert torch.allclose(batched.hc_collapse_bmm(x, pre), mixing.hc_collapse(x, pre), atol=1e-6)
    assert torch.allclose(batched.hc_expand_bmm(out, x, post, comb), mixing.hc_expand(out, x, post, comb), atol=1e-6)


def test_batched_table_overrides_only_those_ops():
    table = batched.batched_ops()
    assert table.sparse_attention is batched.sparse_attention_masked
    assert table.hc_expand is batched.hc_expand_bmm and table.linear_fp8 is not None
