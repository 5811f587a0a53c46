"""Fast RMSNorm: the reference's formula in fp32 (rounding may differ by an ulp). Decode-sized calls (at most
``MAX_ROWS`` rows) run in one C pass (``csrc/rms_norm.c``: ~4 torch ops and their frames per call, 26 calls per
demo decode step); larger ones use torch's fused ``rms_norm``, so prefill numerics are unchanged."""

from __future__ import annotations

import ctypes
from functools import lru_cache
from pathlib import Path

import torch
import torch.nn.functional as F

from v4stack.ops.fast.kernels import CFLAGS, compile_library

SOURCE = Path(__file__).with_name("csrc") / "rms_norm.c"
MAX_ROWS = 16  # a decode step of up to 16 streams (as lowbit.DECODE_ROWS)
_DTYPES = (torch.bfloat16, torch.float32)


@lru_cache(maxsize=1)
def _library() -> ctypes.CDLL | None:
    lib = compile_library(SOURCE, CFLAGS, "rms_norm")
    if lib is None:
        return None
    i64, ptr, cint = ctypes.c_int64, ctypes.c_void_p, ctypes.c_int
    lib.rms_norm_rows.argtypes = [ptr, ptr, ptr, i64, i64, ctypes.c_float, cint, cint]
    return lib


def _c_rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor | None:
    d = x.shape[-1] if x.dim() else 0
    if (d == 0 or not x.is_cpu or not weight.is_cpu or x.dtype not in _DTYPES
            or weight.dtype not in _DTYPES or x.numel() > MAX_ROWS * d or weight.numel() != d):
        return None
    lib = _library()
    if lib is None:
        return None
    x, weight = x.contiguous(), weight.contiguous()
    out = torch.empty_like(x)
    lib.rms_norm_rows(x.data_ptr(), weight.data_ptr(), out.data_ptr(), x.numel() // d, d, eps,
                      int(x.dtype == torch.bfloat16), int(weight.dtype == torch.bfloat16))
    return out


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """``ops.reference.norm.rms_norm``'s contract: x [..., D], weight [D] -> [..., D] in x.dtype."""
    fused = _c_rms_norm(x, weight, eps)
    if fused is not None:
        return fused
    return F.rms_norm(x.float(), (x.shape[-1],), weight.float(), eps).to(x.dtype)
