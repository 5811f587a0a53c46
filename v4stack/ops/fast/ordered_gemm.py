"""fp32 GEMMs of the fast table in the golden machine's summation order (``ops.reference.blas_order``), computed by
the C kernel ``csrc/ordered_gemm.c`` instead of the BLAS, so the fast numerics do not depend on the CPU's BLAS.

``blas_order`` states the order: for prefill-sized GEMMs (``rows >= BLOCKED_MIN_ROWS``) every output is a sum of
per-K-block sequential fma chains, the block sums added in order, with the block width of ``blas_order.k_block``.
The kernel computes exactly that (true fp32 fma, vectorised across output columns; see the C file), so its
results are bit-identical to ``blas_order.blocked_fma_linear`` (which evaluates the fma in fp64; the two differ
only when an fp64 sum rounds onto an fp32 rounding midpoint, ~2^-29 a term) on any CPU, for any thread count.
GEMMs with fewer rows are not ordered yet (``blas_order`` leaves them to the BLAS too): ``linear`` returns None
for them and the callers keep their own path.

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


@lru_cache(maxsize=1)
def _library() -> ctypes.CDLL | None:
    lib = compile_library(SOURCE, (*CFLAGS, *ORDER_CFLAGS, OPENMP_CFLAG), "ordered_gemm") or compile_library(
        SOURCE, (*CFLAGS, *ORDER_CFLAGS), "ordered_gemm")  # no OpenMP: the pragmas are ignored, one thread
    if lib is None:
        return None
    i64, ptr, cint = ctypes.c_int64, ctypes.c_void_p, ctypes.c_int
    lib.ordered_gemm.argtypes = [ptr, i64, i64, ptr, cint, i64, i64, ptr, cint]
    lib.ordered_gemm.restype = cint
    return lib


def available() -> bool:
    return _library() is not None


def blocked_fma_linear(x: torch.Tensor, w: torch.Tensor, block: int) -> torch.Tensor | None:
    """``blas_order.blocked_fma_linear``'s contract in C: x [M, K] fp32, w [N, K] fp32 or bf16 -> fp32 [M, N], the
    sum of per-``block`` sequential fma chains added in K order; None when the kernel cannot take it (no C
    compiler, a tensor off the CPU, another dtype)."""
    lib = _library()
    if (lib is None or x.dim() != 2 or w.dim() != 2 or x.dtype != torch.float32 or w.dtype not in WEIGHT_DTYPES
            or x.device.type != "cpu" or w.device.type != "cpu"):
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


def linear(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor | None:
    """x [..., K] fp32, w [N, K] (fp32 or bf16) -> fp32 [..., N] in the golden order (``blas_order.linear_fp32``'s
    rows >= ``BLOCKED_MIN_ROWS`` branch, block ``k_block(N, K)``); None for fewer rows (no order fixed for them
    yet) or when the kernel cannot take the call."""
    flat = x.reshape(-1, x.shape[-1])
    if flat.shape[0] < blas_order.BLOCKED_MIN_ROWS:
        return None
    y = blocked_fma_linear(flat, w, blas_order.k_block(w.shape[0], w.shape[1]))
    return None if y is None else y.view(*x.shape[:-1], w.shape[0])


def linear_fp32(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``blas_order.linear_fp32``'s contract (fp32 x [..., K] and w [N, K] -> fp32 [..., N]): the fast table's
    ``fp32_linear``, the C kernel where it applies, else ``blas_order`` itself (the BLAS for few rows)."""
    if x.dtype != torch.float32 or w.dtype != torch.float32:
        raise TypeError(f"linear_fp32 takes fp32 tensors, got {x.dtype} and {w.dtype}")
    y = linear(x, w)
    return blas_order.linear_fp32(x, w) if y is None else y
