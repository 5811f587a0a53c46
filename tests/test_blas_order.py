"""ops.reference.blas_order: the golden machine's fp32 GEMM summation order, checked with cancelling probes."""

import pytest
import torch

from v4stack.ops.reference.blas_order import BLOCKED_MIN_ROWS, blocked_fma_linear, k_block, linear_fp32

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


def test_small_gemms_use_the_blas_and_bad_dtypes_are_refused():
    x, w = torch.randn(BLOCKED_MIN_ROWS - 1, 64), torch.randn(5, 64)
    assert torch.equal(linear_fp32(x, w), torch.nn.functional.linear(x, w))
    big = torch.randn(BLOCKED_MIN_ROWS, 2, 64)
    expect = blocked_fma_linear(big.reshape(-1, 64), w, 64).reshape(BLOCKED_MIN_ROWS, 2, 5)
    assert torch.equal(linear_fp32(big, w), expect)
    with pytest.raises(TypeError, match="fp32"):
        linear_fp32(x.bfloat16(), w)
