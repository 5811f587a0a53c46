"""The decode-sized C kernels of ``ops.fast.decode_ops`` against their torch formulations: the indexer's scores
(bf16 rounding points, another fp32 summation order: within a bf16 ulp), its top-k (the same indices, ties to the
lower entry) and the grouped wo_a projection."""

import pytest
import torch

from v4stack.ops.fast import attention as fast_attention
from v4stack.ops.fast import decode_ops, indexer as fast_indexer
from v4stack.ops.reference import indexer


def _need_kernel():
    if decode_ops._library() is None:
        pytest.skip("no C compiler")


@pytest.mark.parametrize("batch", [1, 16])
def test_decode_index_scores_c_matches_the_torch_path(batch):
    _need_kernel()
    g = torch.Generator().manual_seed(7)
    heads, n, d = 4, 23, 128
    q = torch.randn(batch, heads, d, generator=g).bfloat16()
    w = torch.randn(batch, heads, generator=g).bfloat16()
    keys = torch.randn(batch, n, d, generator=g).bfloat16()
    positions = torch.randint(0, 4 * n, (batch,), generator=g)
    positions[0] = 4 * n - 1  # all visible in row 0
    got = decode_ops.decode_index_scores(q, w, keys, positions, 4)
    want = fast_attention.decode_index_scores(q, w, keys, positions, 4)
    ref = indexer.decode_index_scores(q, w, keys, positions, 4)
    assert got is not None
    assert torch.equal(torch.isinf(got), torch.isinf(want)) and torch.equal(torch.isinf(got), torch.isinf(ref))
    finite = ~torch.isinf(want)
    scale = want[finite].abs().max()
    assert (got - want)[finite].abs().max() <= 2 ** -7 * scale  # one bf16 rounding after another sum order
    assert (got - ref)[finite].abs().max() <= 2 ** -7 * scale
    assert (got - want)[finite].abs().max() < (got - want.roll(1, 1))[finite].abs().max()  # not vacuous


@pytest.mark.parametrize("rows,n,topk", [(1, 40, 32), (16, 40, 32), (5, 10, 32), (3, 200, 7)])
def test_index_topk_c_equals_the_reference(rows, n, topk):
    _need_kernel()
    g = torch.Generator().manual_seed(rows * n)
    scores = (torch.randn(rows, n, generator=g) * 4).round() / 4  # many ties: the lower index must come first
    positions = torch.randint(0, 4 * n + 8, (rows,), generator=g)
    positions[0] = 2  # no entry visible yet
    hidden = torch.arange(n)[None, :] >= ((positions + 1) // 4)[:, None]
    scores = scores.masked_fill(hidden, float("-inf"))
    want = indexer.index_topk(scores, topk, positions, 4)
    got = decode_ops.index_topk(scores, topk, positions, 4)
    assert got is not None and torch.equal(got, want)
    assert torch.equal(fast_indexer.index_topk(scores, topk, positions, 4), want)
    assert bool((got[0] == -1).all())


def test_grouped_output_c_matches_the_reference_einsum():
    _need_kernel()
    g = torch.Generator().manual_seed(9)
    groups, rank, heads, d = 2, 64, 4, 128
    for t in (1, 16):
        o = torch.randn(t, heads, d, generator=g).bfloat16()
        weight = (torch.randn(groups, rank, heads // groups * d, generator=g) * 0.05).bfloat16()
        got = decode_ops.grouped_output(o, weight)
        want = torch.einsum("tgd,grd->tgr", o.reshape(t, groups, -1), weight).flatten(1)
        assert got is not None and got.dtype == torch.bfloat16 and got.shape == want.shape
        assert (got.float() - want.float()).abs().max() <= 2 ** -7 * want.float().abs().max()
        assert (got.float() - want.float()).abs().max() < (got.float() - want.roll(1, 1).float()).abs().max()


def _lane_order_dot(o: torch.Tensor, w: torch.Tensor, lanes: int = 16) -> torch.Tensor:
    """o [T, G, J], w [G, R, J] bf16 -> fp32 [T, G, R] in the C kernel's order: exact fp32 products, lane l the
    in-order sum of products j = l mod lanes (the tail's too), the lanes then added in order 0 .. lanes - 1."""
    p = o.float()[:, :, None, :] * w.float()[None]  # [T, G, R, J]
    acc = torch.zeros(*p.shape[:-1], lanes)
    for j in range(p.shape[-1]):
        acc[..., j % lanes] = acc[..., j % lanes] + p[..., j]
    out = acc[..., 0]
    for lane in range(1, lanes):
        out = out + acc[..., lane]
    return out


@pytest.mark.parametrize("t,groups,rank,width", [(1, 2, 128, 1024), (3, 2, 64, 256), (2, 2, 7, 64), (16, 2, 9, 40), (2, 1, 5, 17)])
def test_grouped_output_c_sums_in_its_lane_order(t, groups, rank, width):
    """Each output is one fixed fp32 tree (16 lanes, then in order) rounded to bf16, whatever the vector code:
    equal to the tree restated in torch, with ranks and widths off the vector width."""
    _need_kernel()
    g = torch.Generator().manual_seed(t * 31 + rank + width)
    o = torch.randn(t, groups, width, generator=g).bfloat16()
    weight = (torch.randn(groups, rank, width, generator=g) * 10.0 ** torch.randint(-3, 3, (groups, rank, width),
                                                                                     generator=g)).bfloat16()
    got = decode_ops.grouped_output(o, weight)
    assert torch.equal(got, _lane_order_dot(o, weight).bfloat16().flatten(1))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_rms_norm_c_matches_torch_for_decode_rows(dtype):
    from v4stack.ops.fast import norm as fast_norm
    from v4stack.ops.reference import norm as reference_norm

    if fast_norm._library() is None:
        pytest.skip("no C compiler")
    g = torch.Generator().manual_seed(11)
    for rows, d in ((1, 256), (16, 128), (5, 100)):
        x = (torch.randn(rows, d, generator=g) * torch.logspace(-3, 3, d)).to(dtype)
        w = (torch.randn(d, generator=g) + 1).bfloat16()
        got = fast_norm._c_rms_norm(x, w, 1e-6)
        want = torch.nn.functional.rms_norm(x.float(), (d,), w.float(), 1e-6).to(dtype)
        ref = reference_norm.rms_norm(x, w, 1e-6)
        assert got is not None and got.dtype == dtype
        ulp = 2 ** -7 if dtype == torch.bfloat16 else 2 ** -20  # one rounding of the output, an ulp of the statistic
        assert ((got.float() - want.float()).abs() <= ulp * want.float().abs() + 1e-30).all()
        assert ((got.float() - ref.float()).abs() <= ulp * ref.float().abs() + 1e-30).all()
        assert torch.equal(fast_norm.rms_norm(x, w, 1e-6), got)
    assert fast_norm._c_rms_norm(torch.randn(17, 64), w[:64], 1e-6) is None  # prefill: torch's kernel
