"""Fast quantisation-point entries: the reference's FP8 / FP4 quant-dequant of activations and KV, and the
indexer's Hadamard rotation, with the reference's values (bit-identical, checked in ``tests/test_fast_ops.py``) in
one C pass or on a cached matrix instead of ~10 torch ops per call."""

from __future__ import annotations

import math
from functools import lru_cache

import torch

from v4stack.ops.fast import kernels
from v4stack.ops.reference import hadamard, quant


def quant_dequant_fp8(x: torch.Tensor, block: int) -> torch.Tensor:
    """``ops.reference.quant.quant_dequant_fp8``'s contract (fp32 out); the C kernel writes bf16, which holds
    every e4m3 value times a power-of-two scale exactly. bf16 inputs only: the kernel's scale is the exact
    2^ceil(log2(amax / 448)), which the reference's fp32 log2 can miss for an fp32 amax a few ulps above 7 x 2^k
    (a bf16 amax is never that close)."""
    fused = kernels.act_quant(x, block) if x.dtype == torch.bfloat16 else None
    return quant.quant_dequant_fp8(x, block) if fused is None else fused.float()


def quant_dequant_fp4(x: torch.Tensor, block: int) -> torch.Tensor:
    """``ops.reference.quant.quant_dequant_fp4``'s contract (fp32 out)."""
    fused = kernels.fp4_quant(x, block)
    return quant.quant_dequant_fp4(x, block) if fused is None else fused


@lru_cache(maxsize=8)
def _hadamard(n: int, device: torch.device) -> torch.Tensor:
    """fp64 [n, n] Sylvester matrix, built once per size and device (the reference rebuilds it per call)."""
    return hadamard.hadamard_matrix(n, device).double()


def hadamard_rotate(x: torch.Tensor) -> torch.Tensor:
    """``ops.reference.hadamard.hadamard_rotate``'s contract and rounding: exact +-1 sums in fp64, one rounding to
    fp32, times fp32(n^-1/2); the C butterflies where they apply, else the cached matrix."""
    fused = kernels.hadamard_rotate(x)  # one C pass of butterflies: the same exact fp64 sums
    if fused is not None:
        return fused
    n = x.shape[-1]
    h = _hadamard(n, x.device)
    return ((x.double() @ h).float() * math.sqrt(1.0 / n)).to(x.dtype)
