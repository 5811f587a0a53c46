"""csrc/ordered_gemm.c's builds give the same bits: the native one (AVX-512 on the Intel CI machines, AVX2 + FMA on
AMD Zen), the AVX2 one (-march=x86-64-v3, so the AVX2 kernels are checked on AVX-512 machines too) and the plain C
one (-march=x86-64: fmaf, no vector intrinsics), on shapes that end every vector, panel, micro-tile and K block
part way, and all equal to blas_order's torch formulation."""

import pytest
import torch

from v4stack.ops.fast import kernels, ordered_gemm
from v4stack.ops.reference import blas_order

pytestmark = pytest.mark.skipif(not ordered_gemm.available(), reason="no C compiler")


def _with_march(march: str) -> tuple[str, ...]:
    return tuple(f"-march={march}" if f == "-march=native" else f for f in kernels.CFLAGS)


AVX2_CFLAGS = _with_march("x86-64-v3")
SCALAR_CFLAGS = _with_march("x86-64")
# N: below one 8-lane vector, between the vectors of a 16-column strip, one strip and a bit, the 32-column panel
# and one column past it, two panels and a part; M: 6-row (AVX2) and 12-row (AVX-512) micro-tiles with every
# remainder of the 4 / 3 / 2 / 1-row tiles, and more than a 384-row work item
COLUMNS = [1, 5, 8, 13, 16, 20, 24, 31, 32, 33, 45, 71]
ROWS = [8, 9, 10, 11, 13, 17, 23, 29, 390]
# (K, block): K not a multiple of 8 or 16 (the packing's scalar columns), the last block shorter, one column
DEPTHS = [(7, 7), (193, 64), (300, 192), (389, 100), (1, 1)]


def _data(m: int, n: int, k: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    scale = torch.logspace(-3, 3, k)  # mixed magnitudes: any other order of the sums shows in the last bits
    return torch.randn(m, k, generator=g) * scale, torch.randn(n, k, generator=g)


def _builds(call):
    """call(cflags) for the native, AVX2 and scalar builds; skips when the compiler cannot target one."""
    outs = [call(kernels.CFLAGS), call(AVX2_CFLAGS), call(SCALAR_CFLAGS)]
    if any(o is None for o in outs):
        pytest.skip("the compiler cannot build for x86-64-v3 / x86-64")
    return outs


@pytest.mark.parametrize("k,block", DEPTHS)
def test_blocked_builds_agree_bit_for_bit(k, block):
    for n in COLUMNS:
        for m in ROWS if k < 300 else ROWS[::3]:
            x, w = _data(m, n, k, seed=m * 7919 + n * 31 + k)
            want = blas_order.blocked_fma_linear(x, w, block)
            for dtype in (torch.float32, torch.bfloat16):
                wd = w.to(dtype)
                native, avx2, scalar = _builds(lambda f: ordered_gemm.blocked_fma_linear(x, wd, block, cflags=f))
                assert torch.equal(native, scalar) and torch.equal(avx2, scalar), (m, n, k, dtype)
                if dtype == torch.float32:
                    assert torch.equal(scalar, want), (m, n, k)
                else:
                    assert torch.equal(scalar, blas_order.blocked_fma_linear(x, wd.float(), block)), (m, n, k)


# the small-row kernel (1-7 rows): N with 0-3 left-over features, a block of 8 features and part of one, K with a
# tail after the lanes and K below one 16-column step
SMALL_SHAPES = [(4, 64), (8, 36), (12, 257), (24, 1024), (29, 515), (64, 130), (3, 20), (1, 40)]


@pytest.mark.parametrize("n,k", SMALL_SHAPES)
def test_small_row_builds_agree_bit_for_bit(n, k):
    for m in range(1, blas_order.BLOCKED_MIN_ROWS):
        x, w = _data(m, n, k, seed=m * 13 + n * 101 + k)
        for dtype in (torch.float32, torch.bfloat16):
            wd = w.to(dtype)
            native, avx2, scalar = _builds(lambda f: ordered_gemm.small_rows_linear(x, wd, cflags=f))
            assert torch.equal(native, scalar) and torch.equal(avx2, scalar), (m, n, k, dtype)
            assert torch.equal(scalar, blas_order.small_rows_linear(x, wd.float())), (m, n, k, dtype)


# the AVX2 bf16 kernel of the one-row order (peel 4, 4 lanes, csrc/ordered_small_avx2.h): N with full blocks of 8
# outputs, a half block of 4 (N = 4 mod 8) and left-over features; K with no loop step at all (K - 4 < 4), single
# steps only, 16-column spans with 0-3 single steps after them, in-order tails of 1-3 products, and a row stride of
# 4 KiB (K = 2,048: no prefetch)
AVX2_BF16_COLUMNS = [4, 8, 12, 20, 29, 40]
AVX2_BF16_DEPTHS = [4, 7, 10, 20, 23, 36, 40, 64, 101, 258, 2048]


@pytest.mark.parametrize("k", AVX2_BF16_DEPTHS)
def test_one_row_bf16_blocks_agree_bit_for_bit(k):
    for n in AVX2_BF16_COLUMNS:
        x, w = _data(1, n, k, seed=n * 17 + k)
        wb = w.bfloat16()
        native, avx2, scalar = _builds(lambda f: ordered_gemm.small_rows_linear(x, wb, cflags=f))
        assert torch.equal(native, scalar) and torch.equal(avx2, scalar), (n, k)
        assert torch.equal(scalar, blas_order.small_rows_linear(x, wb.float())), (n, k)


def test_no_c_kernels_falls_back_to_torch(monkeypatch):
    """V4STACK_NO_C_KERNELS=1: no library, and fp32_linear takes blas_order's torch form (same values)."""
    monkeypatch.setenv("V4STACK_NO_C_KERNELS", "1")
    assert kernels.compile_library(ordered_gemm.SOURCE, AVX2_CFLAGS, "ordered_gemm_disabled") is None
    x, w = _data(9, 20, 300, seed=3)
    ordered_gemm._library.cache_clear()
    try:
        assert ordered_gemm.blocked_fma_linear(x, w, 192) is None
        assert torch.equal(ordered_gemm.linear_fp32(x, w), blas_order.linear_fp32(x, w))
    finally:
        monkeypatch.delenv("V4STACK_NO_C_KERNELS")
        ordered_gemm._library.cache_clear()
    assert ordered_gemm.available()


def test_a_header_enters_the_cache_key(tmp_path, monkeypatch):
    """ordered_gemm.c includes ordered_gemm_avx2.h: editing a header beside a source must rebuild the library."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    (tmp_path / "src").mkdir()
    source, header = tmp_path / "src" / "k.c", tmp_path / "src" / "k.h"
    source.write_text('#include "k.h"\nint value(void) { return VALUE; }\n')
    for value in (1, 2):
        header.write_text(f"#define VALUE {value}\n")
        lib = kernels.compile_library(source, kernels.CFLAGS, "header_key")
        if lib is None:
            pytest.skip("no C compiler")
        assert lib.value() == value
