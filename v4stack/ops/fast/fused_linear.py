"""A decode-sized linear in one C call (``csrc/fused_linear.c``): act quant (or rounding to the compute dtype),
the GEMM on the checkpoint bytes (``lowbit_gemm``) and the rounding of the fp32 result, bit-identical to the
chain ``ops.fast.linear.linear`` runs otherwise (``act_quant`` -> ``lowbit.matmul`` -> ``.to(dtype)``).

``linear(layer, x)`` returns None where the one-call path does not apply (not a direct low-bit layer, more than
``lowbit.DECODE_ROWS`` rows, a compute dtype or activation block the C act quant does not take, no compiler);
the caller then runs its chain. Threads: torch's intra-op count, as ``lowbit.matmul``.
"""

from __future__ import annotations

import ctypes
from functools import lru_cache
from pathlib import Path

import torch

from v4stack.ops.fast import kernels, lowbit
from v4stack.ops.fast.kernels import CFLAGS, compile_library
from v4stack.ops.fast.prepare import LOWBIT, LOWBIT_RAW
from v4stack.ops.reference.layers import DENSE, FP4

SOURCE = Path(__file__).with_name("csrc") / "fused_linear.c"
ACT_QUANT_FP8, ACT_ROUND_BF16, ACT_AS_IS = 0, 1, 2  # the C enum: what happens to x before the GEMM
_IN_DTYPES = (torch.bfloat16, torch.float32)


@lru_cache(maxsize=1)
def _library() -> ctypes.CDLL | None:
    lib = compile_library(SOURCE, (*CFLAGS, lowbit.OPENMP_CFLAG), "fused_linear") or compile_library(
        SOURCE, CFLAGS, "fused_linear")
    if lib is None:
        return None
    i64, ptr, cint = ctypes.c_int64, ctypes.c_void_p, ctypes.c_int
    lib.fused_linear.argtypes = [ptr, cint, i64, i64, cint, i64, ptr, ptr, cint, i64, i64, ptr, cint, ptr, ptr, cint]
    lib.fused_linear.restype = cint
    return lib


def _plan(layer, x: torch.Tensor) -> tuple[int, torch.dtype] | None:
    """(act code, output dtype) as ``ops.fast.linear.linear`` would compute this call, or None if C cannot."""
    c = layer.compute
    if layer.fmt == DENSE:
        dtype = torch.float32 if layer.dense_compute_fp32 else c.dtype
        act = ACT_ROUND_BF16 if dtype == torch.bfloat16 else ACT_AS_IS
    elif c.quant:
        dtype = c.dtype
        k = x.shape[-1]
        if dtype != torch.bfloat16 or k % c.act_block or c.act_block > kernels.MAX_ACT_BLOCK:
            return None  # the torch act_quant paths
        act = ACT_QUANT_FP8
    else:
        dtype = c.dtype
        act = ACT_ROUND_BF16 if dtype == torch.bfloat16 else ACT_AS_IS
    return (act, dtype) if dtype in _IN_DTYPES else None


def linear(layer, x: torch.Tensor) -> torch.Tensor | None:
    """``ops.fast.linear.linear(layer, x)``'s values in one call: x [..., in] -> [..., out]; None if not taken."""
    raw = getattr(layer, LOWBIT_RAW, None)
    if raw is None or not getattr(layer, LOWBIT, False) or raw[0].data_ptr() != layer.weight.data_ptr():
        return None
    if x.device.type != "cpu" or x.dtype not in _IN_DTYPES or x.dim() == 0:
        return None
    k = x.shape[-1]
    m = x.numel() // k if k else 0
    n = layer.weight.shape[0]
    if m == 0 or m > lowbit.DECODE_ROWS or k != (2 * layer.weight.shape[1] if layer.fmt == FP4 else
                                                 layer.weight.shape[1]):
        return None
    plan = _plan(layer, x)
    lib = _library()
    if plan is None or lib is None:
        return None
    act, dtype = plan
    x = x.contiguous()
    w, s = raw
    y = torch.empty(*x.shape[:-1], n, dtype=dtype)
    scratch = torch.empty(m * k + (m * n if dtype == torch.bfloat16 else 0), dtype=torch.float32)
    done = lib.fused_linear(x.data_ptr(), int(x.dtype == torch.bfloat16), m, k, act, layer.compute.act_block,
                            w.data_ptr(), 0 if s is None else s.data_ptr(), lowbit.FORMAT_CODE[layer.fmt], n,
                            layer.compute.weight_block, y.data_ptr(), int(dtype == torch.bfloat16),
                            scratch.data_ptr(), scratch.data_ptr() + 4 * m * k, torch.get_num_threads())
    return y if done == 0 else None
