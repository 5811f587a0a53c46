"""mHC pre and head of decode-sized batches in one C call each (``csrc/mhc_pre.c``): the mixes GEMM, the RMS scale,
the split with its Sinkhorn normalisations and the stream collapse, instead of ~20 torch ops and their Python frames.

Numerics: the mixes GEMM is the fast table's ``fp32_linear`` order (bit-identical raw mixes); the mean of squares
(summed in double, rounded once) and the sigmoid / exp (libm ``expf``) are not bit-identical to the reference's
torch ops (an fp32 ulp on some values), so the fast mHC of these rows is within bf16 noise of the reference, not
bit-exact (docs/numerics.md). Rows above ``FUSED_MAX_ROWS`` (prefills) keep the bit-identical torch + C path.
"""

from __future__ import annotations

import ctypes
from functools import lru_cache

import torch

from v4stack.ops.fast.kernels import CFLAGS, compile_library
from v4stack.ops.fast.ordered_gemm import OPENMP_CFLAG, ORDER_CFLAGS, SOURCE as ORDERED_SOURCE, _small_orders
from v4stack.ops.reference import blas_order

SOURCE = ORDERED_SOURCE.with_name("mhc_pre.c")
# decode batches (engine max-num-seqs 64) take the fused call; longer prefills keep the reference-exact path
FUSED_MAX_ROWS = 64
_STREAM_DTYPES = (torch.bfloat16, torch.float32)


@lru_cache(maxsize=3)
def _library(cflags: tuple[str, ...] = CFLAGS) -> ctypes.CDLL | None:
    """The kernel built with ``cflags`` (default the native build; tests also build the AVX2 and the scalar ones,
    which must give the same bits)."""
    lib = compile_library(SOURCE, (*cflags, *ORDER_CFLAGS, OPENMP_CFLAG), "mhc_pre") or compile_library(
        SOURCE, (*cflags, *ORDER_CFLAGS), "mhc_pre")
    if lib is None:
        return None
    i64, ptr, cint, f32 = ctypes.c_int64, ctypes.c_void_p, ctypes.c_int, ctypes.c_float
    lib.hc_pre_fused.argtypes = [ptr, cint, i64, i64, i64, ptr, i64, ptr, i64, i64, ptr, ptr, i64, f32, f32, cint,
                                 ptr, ptr, ptr, cint]
    lib.hc_pre_fused.restype = cint
    return lib


def available() -> bool:
    return _library() is not None


def _takes(x: torch.Tensor, fn: torch.Tensor, scale: torch.Tensor, base: torch.Tensor) -> bool:
    f32 = torch.float32
    return (x.dim() == 3 and 0 < x.shape[0] <= FUSED_MAX_ROWS and x.dtype in _STREAM_DTYPES
            and fn.dtype == f32 and scale.dtype == f32 and base.dtype == f32
            and x.is_cpu and fn.is_cpu and scale.is_cpu and base.is_cpu and fn.shape[1] == x.shape[1] * x.shape[2])


def _run(x: torch.Tensor, fn: torch.Tensor, scale: torch.Tensor, base: torch.Tensor, shape, head: bool,
         post: torch.Tensor | None, comb: torch.Tensor | None, cflags: tuple[str, ...]) -> torch.Tensor | None:
    """The C call for x [T, hc, D]; y [T, D] in x.dtype, or None when the kernel cannot take it."""
    lib = _library(cflags)
    t, hc, d = x.shape
    n, k = fn.shape
    if t < blas_order.BLOCKED_MIN_ROWS:
        plan = _small_orders(t, n, k)
        if plan is None:
            return None
        orders, first_left_over = plan
        orders_ptr, block = orders.data_ptr(), 0
    else:
        orders_ptr, first_left_over, block = None, 0, blas_order.k_block(n, k)
    x, fn, scale, base = x.contiguous(), fn.contiguous(), scale.contiguous(), base.contiguous()
    y = torch.empty(t, d, dtype=x.dtype)
    done = lib.hc_pre_fused(x.data_ptr(), int(x.dtype == torch.bfloat16), t, hc, d, fn.data_ptr(), n, orders_ptr,
                            first_left_over, block, scale.data_ptr(), base.data_ptr(), shape.iters, shape.norm_eps,
                            shape.hc_eps, int(head), y.data_ptr(), None if post is None else post.data_ptr(),
                            None if comb is None else comb.data_ptr(), torch.get_num_threads())
    return y if done == 0 else None


def hc_pre(x: torch.Tensor, fn: torch.Tensor, scale: torch.Tensor, base: torch.Tensor, shape,
           cflags: tuple[str, ...] = CFLAGS) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """``ops.reference.mixing.hc_pre``'s contract (streams x [T, hc, D] -> (y [T, D] in x.dtype, post [T, hc],
    comb [T, hc, hc] fp32)) in one C call, or None when the kernel cannot take the call (no compiler, too many rows,
    another dtype or device). ``cflags``: the build (tests)."""
    if _library(cflags) is None or not _takes(x, fn, scale, base) or fn.shape[0] != (2 + shape.hc) * shape.hc:
        return None
    t, hc = x.shape[0], x.shape[1]
    post = torch.empty(t, hc, dtype=torch.float32)
    comb = torch.empty(t, hc, hc, dtype=torch.float32)
    y = _run(x, fn, scale, base, shape, False, post, comb, cflags)
    return None if y is None else (y, post, comb)


def hc_head(x: torch.Tensor, fn: torch.Tensor, scale: torch.Tensor, base: torch.Tensor, shape,
            cflags: tuple[str, ...] = CFLAGS) -> torch.Tensor | None:
    """``ops.reference.mixing.hc_head``'s contract (streams x [T, hc, D] -> [T, D] in x.dtype) in one C call, or
    None when the kernel cannot take the call. ``cflags``: the build (tests)."""
    if _library(cflags) is None or not _takes(x, fn, scale, base) or fn.shape[0] != shape.hc:
        return None
    return _run(x, fn, scale, base, shape, True, None, None, cflags)
