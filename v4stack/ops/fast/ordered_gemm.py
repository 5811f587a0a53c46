"""fp32 GEMMs of the fast table in the golden machine's summation order (``ops.reference.blas_order``), computed by
the C kernels of ``csrc/ordered_gemm.c`` instead of the BLAS, so the fast numerics do not depend on the CPU's BLAS.

``blas_order`` states the orders: prefill-sized GEMMs (``rows >= BLOCKED_MIN_ROWS``) sum every output as
per-K-block sequential fma chains, the block sums added in order (block width ``blas_order.k_block``); GEMMs with
fewer rows (decode steps, short prefills) as the small-row kernel's lane trees (``blas_order.small_row_order``:
fp32 products, 4 or 8 sequential lanes reduced by halving, a peel and a tail in order). The kernels compute exactly
those (true fp32 fma / separate mul and add, vectorised so that each output keeps its own tree), so their results
are bit-identical to ``blas_order.blocked_fma_linear`` / ``small_rows_linear`` on any CPU and for any thread count
(the blocked torch form evaluates the fma in fp64; the two differ only when an fp64 sum rounds onto an fp32
rounding midpoint, ~2^-29 a term). The small-row trees are taken from ``blas_order.small_row_order`` per call shape
(cached), not restated in C.

Weights are read as they are stored, fp32 or bf16 (bf16 -> fp32 is exact), so the bf16 output head needs no
fp32 copy. Threads: torch's intra-op count.
"""

from __future__ import annotations

import ctypes
from functools import lru_cache
from pathlib import Path

import torch

from v4stack.ops.fast.kernels import CFLAGS, compile_library
from v4stack.ops.reference import blas_order

SOURCE = Path(__file__).with_name("csrc") / "ordered_gemm.c"
# the chains' fmas are explicit (fmaf / vfmadd); contraction off keeps the block sums' adds from fusing
ORDER_CFLAGS = ("-ffp-contract=off",)
OPENMP_CFLAG = "-fopenmp"  # as in ops.fast.lowbit: torch's wheel ships libgomp.so.1, one thread pool
WEIGHT_DTYPES = (torch.float32, torch.bfloat16)
MAX_LEFT_OVER = 3  # csrc's MAX_LEFT_OVER: the N mod FEATURE_GROUP features with their own small-row order


@lru_cache(maxsize=3)
def _library(cflags: tuple[str, ...] = CFLAGS) -> ctypes.CDLL | None:
    """The kernels built with ``cflags`` (default the native build; tests also build the AVX2 and the scalar
    ones, which must give the same bits)."""
    lib = compile_library(SOURCE, (*cflags, *ORDER_CFLAGS, OPENMP_CFLAG), "ordered_gemm") or compile_library(
        SOURCE, (*cflags, *ORDER_CFLAGS), "ordered_gemm")  # no OpenMP: the pragmas are ignored, one thread
    if lib is None:
        return None
    i64, ptr, cint = ctypes.c_int64, ctypes.c_void_p, ctypes.c_int
    lib.ordered_gemm.argtypes = [ptr, i64, i64, ptr, cint, i64, i64, ptr, cint]
    lib.ordered_gemm.restype = cint
    lib.ordered_small_gemm.argtypes = [ptr, i64, i64, ptr, cint, i64, i64, ptr, ptr, cint]
    lib.ordered_small_gemm.restype = cint
    return lib


def available() -> bool:
    return _library() is not None


def blocked_fma_linear(x: torch.Tensor, w: torch.Tensor, block: int,
                       cflags: tuple[str, ...] = CFLAGS) -> torch.Tensor | None:
    """``blas_order.blocked_fma_linear``'s contract in C: x [M, K] fp32, w [N, K] fp32 or bf16 -> fp32 [M, N], the
    sum of per-``block`` sequential fma chains added in K order; None when the kernel cannot take it (no C
    compiler, a tensor off the CPU, another dtype). ``cflags``: the build (tests)."""
    lib = _library(cflags)
    if (lib is None or x.dim() != 2 or w.dim() != 2 or x.dtype != torch.float32 or w.dtype not in WEIGHT_DTYPES
            or not x.is_cpu or not w.is_cpu):
        return None
    m, k = x.shape
    n = w.shape[0]
    if w.shape[1] != k:
        raise ValueError(f"x has {k} columns, the weight {tuple(w.shape)} another K")
    x, w = x.contiguous(), w.contiguous()
    y = torch.empty(m, n, dtype=torch.float32)
    done = lib.ordered_gemm(x.data_ptr(), m, k, w.data_ptr(), int(w.dtype == torch.bfloat16), n, block,
                            y.data_ptr(), torch.get_num_threads())
    return y if done == 0 else None


@lru_cache(maxsize=256)
def _small_orders(rows: int, n_out: int, k: int) -> tuple[torch.Tensor, int] | None:
    """The C kernel's order table for a [rows, k] x [n_out, k] GEMM: int32 [rows, 1 + MAX_LEFT_OVER, 3] of
    (peel, lanes, step) from ``blas_order.small_row_order`` (slot 0: the features below ``first_left_over``, slot
    1 + i: feature first_left_over + i), and first_left_over; None where it has more left-over features or a
    shorter K than the kernel takes."""
    first_left_over = blas_order.FEATURE_GROUP * (n_out // blas_order.FEATURE_GROUP)
    if n_out - first_left_over > MAX_LEFT_OVER:  # n_out = 1 with several rows: the roles swap (all left over)
        return None
    table = torch.zeros(rows, 1 + MAX_LEFT_OVER, 3, dtype=torch.int32)
    for r in range(rows):
        cols = ([0] if first_left_over else []) + list(range(first_left_over, n_out))
        for c in cols:
            o = blas_order.small_row_order(rows, r, n_out, c, k)
            if o.peel > k:
                return None
            table[r, 0 if c < first_left_over else 1 + c - first_left_over] = torch.tensor([o.peel, o.lanes, o.step])
    return table, first_left_over


def small_rows_linear(x: torch.Tensor, w: torch.Tensor, cflags: tuple[str, ...] = CFLAGS) -> torch.Tensor | None:
    """``blas_order.small_rows_linear``'s contract in C: x [M, K] fp32 (0 < M < ``BLOCKED_MIN_ROWS``), w [N, K] fp32
    or bf16 -> fp32 [M, N] in the small-row kernel's order; None when the kernel cannot take it. ``cflags``: the
    build (tests)."""
    lib = _library(cflags)
    if (lib is None or x.dim() != 2 or w.dim() != 2 or x.dtype != torch.float32 or w.dtype not in WEIGHT_DTYPES
            or not x.is_cpu or not w.is_cpu or not 0 < x.shape[0] < blas_order.BLOCKED_MIN_ROWS):
        return None
    m, k = x.shape
    n = w.shape[0]
    if w.shape[1] != k:
        raise ValueError(f"x has {k} columns, the weight {tuple(w.shape)} another K")
    plan = _small_orders(m, n, k)
    if plan is None:
        return None
    orders, first_left_over = plan
    x, w = x.contiguous(), w.contiguous()
    y = torch.empty(m, n, dtype=torch.float32)
    done = lib.ordered_small_gemm(x.data_ptr(), m, k, w.data_ptr(), int(w.dtype == torch.bfloat16), n,
                                  first_left_over, orders.data_ptr(), y.data_ptr(), torch.get_num_threads())
    return y if done == 0 else None


def linear(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor | None:
    """x [..., K] fp32, w [N, K] (fp32 or bf16) -> fp32 [..., N] in the golden order (``blas_order.linear_fp32``:
    the small-row kernel's below ``BLOCKED_MIN_ROWS`` rows, the blocked fma order with ``k_block(N, K)`` from
    there); None when the kernel cannot take the call (no rows, no compiler, another dtype or device)."""
    flat = x if x.dim() == 2 else x.reshape(-1, x.shape[-1])  # decode rows come 2-D: no reshape / view (~1 us each)
    if flat.shape[0] < blas_order.BLOCKED_MIN_ROWS:
        y = small_rows_linear(flat, w)
    else:
        y = blocked_fma_linear(flat, w, blas_order.k_block(w.shape[0], w.shape[1]))
    return y if y is None or flat is x else y.view(*x.shape[:-1], w.shape[0])


def linear_fp32(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``blas_order.linear_fp32``'s contract (fp32 x [..., K] and w [N, K] -> fp32 [..., N]): the fast table's
    ``fp32_linear``, the C kernels where they apply, else ``blas_order`` itself (same values, in torch)."""
    if x.dtype != torch.float32 or w.dtype != torch.float32:
        raise TypeError(f"linear_fp32 takes fp32 tensors, got {x.dtype} and {w.dtype}")
    y = linear(x, w)
    return blas_order.linear_fp32(x, w) if y is None else y
