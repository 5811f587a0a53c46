"""ops.fast.argmax (csrc/argmax.c) gives torch.argmax's answer on every kind of row: random values, ties (the first
index wins), NaNs (the first NaN wins), infinities, signed zeros, lengths off the vector width, several rows,
non-contiguous input; and declines what it does not take."""

import pytest
import torch

from v4stack.ops.fast import argmax

pytestmark = pytest.mark.skipif(argmax._library() is None, reason="no C compiler")

LENGTHS = [1, 5, 7, 8, 9, 15, 16, 17, 33, 1000, 129280]  # around the AVX2 (8) and AVX-512 (16) widths


def _check(x):
    got = argmax.argmax_rows(x)
    assert got is not None
    assert torch.equal(got, x.argmax(-1)), (got, x.argmax(-1))


@pytest.mark.parametrize("n", LENGTHS)
def test_random_rows(n):
    g = torch.Generator().manual_seed(n)
    _check(torch.randn(3, n, generator=g))


@pytest.mark.parametrize("n", LENGTHS)
def test_ties_take_the_first_index(n):
    g = torch.Generator().manual_seed(n + 1)
    x = torch.randint(-3, 3, (4, n), generator=g).float()  # many equal maxima
    _check(x)
    x[:, -1] = 7.0  # the maximum only in the tail
    _check(x)


@pytest.mark.parametrize("n", LENGTHS)
def test_nan_counts_as_the_largest(n):
    g = torch.Generator().manual_seed(n + 2)
    x = torch.randn(3, n, generator=g)
    x[0, n // 2] = float("nan")
    x[1, -1] = float("nan")
    x[2, 0] = float("nan")
    if n > 3:
        x[0, n - 1] = float("nan")  # a later NaN does not win
        x[1, 1] = float("inf")
    _check(x)


def test_infinities_and_signed_zeros():
    _check(torch.full((2, 40), float("-inf")))
    x = torch.zeros(3, 40)
    x[0, :17] = -0.0
    x[1, 5] = -0.0
    x[2] = -1.0
    x[2, 20], x[2, 30] = -0.0, 0.0
    _check(x)
    y = torch.randn(2, 50)
    y[0, 33] = float("inf")
    _check(y)


def test_non_contiguous_rows_and_the_table_entry():
    x = torch.randn(40, 6).t()  # [6, 40], columns of a contiguous tensor
    _check(x)
    assert torch.equal(argmax.argmax(x), x.argmax(-1))


def test_declines_what_it_does_not_take():
    assert argmax.argmax_rows(torch.randn(2, 8, dtype=torch.float64)) is None
    assert argmax.argmax_rows(torch.randn(8)) is None
    assert argmax.argmax_rows(torch.empty(2, 0)) is None
    x = torch.randn(3, 9).bfloat16()
    assert torch.equal(argmax.argmax(x), x.argmax(-1))  # the entry falls back to torch
