"""ops.reference.blas_order: the golden machine's fp32 GEMM summation order, checked with cancelling probes."""

import pytest
import torch

from v4stack.ops.reference.blas_order import (BLOCKED_MIN_ROWS, LaneOrder, blocked_fma_linear, k_block, linear_fp32,
                                              small_row_order, small_rows_linear)

BIG = 2.0 ** 40  # absorbs every partial sum of ones it meets; +BIG and -BIG cancel exactly where they meet


def _probe(k: int, i: int, j: int, block: int) -> float:
    """sum of ones except +BIG at i, -BIG at j = the number of ones summed outside the subtree holding i and j."""
    x = torch.ones(BLOCKED_MIN_ROWS, k)
    x[:, i], x[:, j] = BIG, -BIG
    y = blocked_fma_linear(x, torch.ones(3, k), block)
    assert (y == y[0, 0]).all()
    return float(y[0, 0])


def test_blocks_are_sequential_chains_added_in_order():
    k = 768
    assert _probe(k, 0, 100, 192) == k - 101  # same block: the chain up to k = 100 is absorbed
    assert _probe(k, 0, 200, 192) == k - 384  # blocks 0 and 1 meet when their sums are added
    assert _probe(k, 0, 700, 192) == 0  # the last block meets the others only at the end
    assert _probe(k, 300, 350, 192) == k - (350 - 192 + 1)  # block 1 starts its own chain at k = 192


def test_block_widths_of_the_golden_shapes():
    assert k_block(2048, 256) == 128  # output head
    assert k_block(8, 256) == 256 and k_block(256, 256) == 256  # gate, compressor: one chain
    assert k_block(15, 768) == 192 and k_block(24, 1024) == 192  # mHC mixes


def test_fma_rounds_once_per_term():
    # fp32 products that are not exact in fp32: the fma chain differs from round(product) + add
    x = torch.tensor([[1.0, 1.0 + 2.0 ** -12]]).repeat(BLOCKED_MIN_ROWS, 1)
    w = torch.tensor([[-1.0, 1.0 + 2.0 ** -12]])
    y = blocked_fma_linear(x, w, 2)
    assert y[0, 0].item() == 2.0 ** -11 + 2.0 ** -24  # -1 + exact product (mul+add: 2^-11)


def _small_probe(rows: int, n_out: int, k: int, i: int, j: int) -> torch.Tensor:
    """[rows, n_out]: the number of ones summed outside the smallest subtree holding products i and j."""
    x = torch.ones(rows, k)
    x[:, i], x[:, j] = BIG, -BIG
    return small_rows_linear(x, torch.ones(n_out, k))


def test_one_row_tree_read_off_the_sse42_kernel():
    # one row, N = 8, K = 256 (values measured on MKL's SSE4.2 kernel): products 0-3 in order, then 4 lanes
    # (k - 4) mod 4 from k = 4, reduced as (l0 + l2) + (l1 + l3)
    assert _small_probe(1, 8, 256, 0, 3)[0, 0] == 252  # the peeled chain 0, 1, 2, 3
    assert _small_probe(1, 8, 256, 0, 8)[0, 0] == 250  # lane 0 = 0..3, 4, 8: six products
    assert _small_probe(1, 8, 256, 0, 6)[0, 0] == 126  # lanes 0 and 2 meet first (67 + 63 products)
    assert _small_probe(1, 8, 256, 0, 5)[0, 0] == 0  # lane 1 meets lane 0 only at the root
    # N = 3 (hc head): every feature is left over; feature 0: 8 lanes over steps of 8, the last 4 products in order
    y = _small_probe(1, 3, 256, 0, 8)
    assert y[0, 0] == 190 and y[0, 2] == 190  # lanes (k-4) mod 8 = 0 (0..3, 4, 12, .., 244) and 4 meet: 35 + 31
    assert y[0, 1] == 250  # feature 1: 4 lanes
    # K = 768: lanes over k = 4..763, then 764, 765, 766, 767 added in order
    assert _small_probe(1, 3, 768, 0, 764)[0, 0] == 3 and _small_probe(1, 3, 768, 764, 765)[0, 0] == 2


def test_row_pairs_tree_read_off_the_sse42_kernel():
    # 3 rows, N = 7, K = 256: row 0 (first of a pair) 8 lanes k mod 8, row 1 4 lanes, the single row 2 4 lanes on
    # features 0-3 and 8 lanes on the left-over features 4-6
    y = _small_probe(3, 7, 256, 0, 4)
    assert (y[0] == 192).all() and (y[1] == 254).all()  # lanes 0 and 4 (64 products) / lane 0 of 4 lanes: 0, 4
    assert (y[2, :4] == 254).all() and (y[2, 4:] == 192).all()
    assert (_small_probe(3, 7, 256, 0, 2)[:, 0] == 128).all()  # both: lanes 0 and 2 meet first (128 products)


def test_small_row_orders_by_shape():
    assert small_row_order(1, 0, 2048, 2047, 256) == LaneOrder(4, 4, 4)
    assert [small_row_order(1, 0, 15, c, 768).lanes for c in (11, 12, 13, 14)] == [4, 8, 4, 8]
    assert small_row_order(1, 0, 15, 12, 768).step == 8
    assert [small_row_order(5, r, 24, 0, 1024).lanes for r in range(5)] == [8, 4, 8, 4, 4]
    assert small_row_order(5, 4, 15, 13, 768) == LaneOrder(0, 8, 8)
    assert small_row_order(2, 1, 1, 0, 256) == small_row_order(1, 0, 2, 1, 256)  # matrix-vector: roles swap
    with pytest.raises(ValueError):
        small_row_order(BLOCKED_MIN_ROWS, 0, 8, 0, 256)


def test_small_rows_linear_is_exact_mul_then_add():
    # x.w products that are not exact in fp32 are rounded before the add (no fma): -1 + 1 + 2^-11 + 2^-24 -> 2^-11
    x = torch.tensor([[1.0, 1.0 + 2.0 ** -12, 0.0, 0.0]])
    w = torch.tensor([[-1.0, 1.0 + 2.0 ** -12, 0.0, 0.0]])
    assert small_rows_linear(x, w)[0, 0].item() == 2.0 ** -11
    # every output equals its own one-element GEMM's tree (rows and features grouped correctly)
    torch.manual_seed(0)
    x, w = torch.randn(5, 200), torch.randn(7, 200)
    y = small_rows_linear(x, w)
    from v4stack.ops.reference.blas_order import lane_sum
    for r in range(5):
        for c in range(7):
            assert y[r, c] == lane_sum(x[r] * w[c], small_row_order(5, r, 7, c, 200))


def test_small_gemms_take_the_small_row_order_and_bad_dtypes_are_refused():
    x, w = torch.randn(BLOCKED_MIN_ROWS - 1, 64), torch.randn(5, 64)
    assert torch.equal(linear_fp32(x, w), small_rows_linear(x, w))
    assert torch.equal(linear_fp32(x[:1].view(1, 1, 64), w), small_rows_linear(x[:1], w).view(1, 1, 5))
    big = torch.randn(BLOCKED_MIN_ROWS, 2, 64)
    expect = blocked_fma_linear(big.reshape(-1, 64), w, 64).reshape(BLOCKED_MIN_ROWS, 2, 5)
    assert torch.equal(linear_fp32(big, w), expect)
    with pytest.raises(TypeError, match="fp32"):
        linear_fp32(x.bfloat16(), w)


def test_merged_and_grouped_small_row_paths_agree():
    from v4stack.ops.reference.blas_order import _grouped_rows_linear, _merged_rows_linear, _small_row_groups

    torch.manual_seed(1)
    for m, n, k in ((1, 15, 768), (3, 7, 256), (5, 24, 1024), (2, 1, 256), (4, 2048, 256)):
        x, w = torch.randn(m, k), torch.randn(n, k)
        merged = _merged_rows_linear(x, w)
        assert torch.equal(merged, _grouped_rows_linear(x, w, _small_row_groups(m, n, k)))
        assert torch.equal(small_rows_linear(x, w), merged)
