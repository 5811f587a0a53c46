"""Fast linears: the activation is FP8-quantised exactly like the reference (same e4m3 values, same power-of-two
scales), then one GEMM against the prepared dense weight in the compute dtype (fp32 accumulation inside the
GEMM) replaces the reference's per-block exact sums. Differences from the reference are accumulation order only."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from v4stack.ops.fast import kernels
from v4stack.ops.fast.prepare import PREPARED
from v4stack.ops.reference import layers as reference_layers
from v4stack.ops.reference.layers import DENSE
from v4stack.ops.reference.quant import FP8_AMAX_FLOOR, quant_dequant_fp8
from v4stack.weights.formats import FP8_E4M3_MAX


def act_quant(x: torch.Tensor, block: int, dtype: torch.dtype) -> torch.Tensor:
    """x [..., K] -> the reference's FP8 quant-dequant of x (blocks of ``block`` along K) in ``dtype``; the values
    e4m3 x 2^k are exact in bf16. K not a multiple of ``block`` takes the reference's padded path."""
    k = x.shape[-1]
    if dtype == torch.bfloat16:
        fused = kernels.act_quant(x, block)  # one C pass instead of ~10 torch ops
        if fused is not None:
            return fused
    if k % block:
        return quant_dequant_fp8(x, block).to(dtype)
    xb = x.float().unflatten(-1, (k // block, block))  # [..., K/b, b]
    amax = xb.abs().amax(-1, keepdim=True).clamp_min(FP8_AMAX_FLOOR)
    scale = torch.exp2(torch.ceil(torch.log2(amax / FP8_E4M3_MAX)))
    codes = (xb / scale).clamp(-FP8_E4M3_MAX, FP8_E4M3_MAX).to(torch.float8_e4m3fn)
    return (codes.to(dtype) * scale.to(dtype)).flatten(-2)


def linear(layer, x: torch.Tensor) -> torch.Tensor:
    """``ops.reference.layers.linear``'s contract on the layer's prepared weight (reference path when the layer has
    none, e.g. a model whose weights were not prepared)."""
    weight = getattr(layer, PREPARED, None)
    if weight is None:
        return reference_layers.linear(layer, x)
    c = layer.compute
    if layer.fmt == DENSE:
        return F.linear(x.to(weight.dtype), weight)
    xq = act_quant(x, c.act_block, c.dtype) if c.quant else x.to(c.dtype)
    return F.linear(xq.to(weight.dtype), weight).to(c.dtype)  # fp32 accumulation, one rounding to c.dtype


def grouped_output(wo_a, o: torch.Tensor, groups: int, rank: int) -> torch.Tensor:
    """``ops.reference.layers.grouped_output`` as one batched GEMM over the groups: o [T, H, d] -> [T, G*rank]."""
    weight = getattr(wo_a, "prepared_grouped", None)  # [G, r, H/G*d] in the compute dtype
    if weight is None or weight.dtype != o.dtype:
        return reference_layers.grouped_output(wo_a, o, groups, rank)
    t = o.shape[0]
    og = o.reshape(t, groups, -1).transpose(0, 1)  # [G, T, H/G*d]
    u = torch.bmm(og, weight.transpose(1, 2))  # [G, T, r]
    return u.transpose(0, 1).reshape(t, groups * rank)
