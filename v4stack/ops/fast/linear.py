"""Fast linears: the activation is FP8-quantised exactly like the reference (same e4m3 values, same power-of-two
scales), then one GEMM with fp32 accumulation replaces the reference's per-block exact sums: on the checkpoint
bytes directly (``ops.fast.lowbit``) or, without the C kernels, on the prepared dense fp32 copy. Differences from
the reference are accumulation order only."""

from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn.functional as F

from v4stack.ops.fast import bf16_gemm, decode_ops, fused_linear, kernels, lowbit, ordered_gemm
from v4stack.ops.fast.prepare import LOWBIT, LOWBIT_RAW, PREPARED, dense_copy
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


def _prepared(layer) -> bool:
    """Whether ``prepare_model`` readied the layer: read directly by the C kernel, or given a dense copy."""
    attached = vars(layer)  # prepare_model's plain attributes (no nn.Module lookup, no AttributeError when absent)
    return attached.get(LOWBIT, False) or PREPARED in attached


def project(layer, xq: torch.Tensor) -> torch.Tensor | None:
    """The layer's GEMM on an activation already quantised (or rounded) as its compute wants: xq [..., in] ->
    fp32 [..., out], from the checkpoint bytes (direct kernel) or the prepared copy; None when the layer has
    neither (not prepared)."""
    if getattr(layer, LOWBIT, False):
        flat = xq.reshape(-1, xq.shape[-1])
        y = lowbit.matmul(flat, layer.fmt, layer.weight, getattr(layer, "scale", None), layer.compute.weight_block,
                          raw=getattr(layer, LOWBIT_RAW, None))
        if y is not None:
            return y.view(*xq.shape[:-1], y.shape[-1])
        weight = dense_copy(layer, torch.float32)  # a tensor the kernel refused (e.g. moved off the CPU): exact
        return F.linear(xq.to(weight.dtype), weight).float()
    weight = getattr(layer, PREPARED, None)
    if weight is None:
        return None
    return F.linear(xq.to(weight.dtype), weight).float()


def linear(layer, x: torch.Tensor) -> torch.Tensor:
    """``ops.reference.layers.linear``'s contract on the layer's prepared weight (reference path when the layer was
    not prepared, e.g. a model whose weights were not prepared)."""
    if layer.fmt == DENSE and layer.dense_compute_fp32 and _prepared(layer):
        # the reference's fp32 GEMM (compressor projections) in its summation order (every row count)
        weight = vars(layer).get(PREPARED)
        y = ordered_gemm.linear(x if x.dtype == torch.float32 else x.float(), layer.weight if weight is None else weight)
        if y is not None:
            return y
        if not ordered_gemm.available():  # no C kernel: blas_order's torch formulation, like the reference
            return reference_layers.linear(layer, x)
    fused = fused_linear.linear(layer, x)  # decode rows: the whole chain below in one C call, same values
    if fused is not None:
        return fused
    c = layer.compute
    if layer.fmt == DENSE:
        dtype = torch.float32 if layer.dense_compute_fp32 else c.dtype
        if _prepared(layer):
            return project(layer, x.to(dtype)).to(dtype)  # x rounded to the compute dtype like the reference
        return reference_layers.linear(layer, x)
    if not _prepared(layer):
        return reference_layers.linear(layer, x)
    xq = act_quant(x, c.act_block, c.dtype) if c.quant else x.to(c.dtype)
    return project(layer, xq).to(c.dtype)  # fp32 accumulation, one rounding to c.dtype


# The rows up to which the head takes the direct kernel, per build (lowbit.isa()); from one row more the ordered
# kernel computes it in the reference's summation order. The direct kernel reads the bf16 head once a call and is
# FMA-bound at these row counts; the ordered one converts each weight once. Measured (1 thread, AMD EPYC Zen 4, bf16
# 129,280 x 512, CPU time, bench/lowbit_bench.py; the AVX2 build forced with -march=x86-64-v3), direct / ordered ms:
# AVX-512 15.2 / 39.2 at 8 rows, 29.5 / 43.4 at 16 (above 16 the direct kernel is not offered: 52.3 / 43.8 at 17 with
# the dequantised tiles); AVX2 15.5 / 30.5 at 8, 28.4 / 37.0 at 12, 43.1 / 38.9 at 14, 41.9 / 36.7 at 16. The plain C
# build keeps the earlier bound (ordered from blas_order's 8 rows). The logits' ulps feed nothing back into the
# model: the golden fast checks pass either way (docs/numerics.md), and the direct kernel's logits of a row do not
# depend on the other rows of the batch.
HEAD_DIRECT_MAX_ROWS = {"AVX-512": lowbit.BF16_DIRECT_ROWS, "AVX2": 12, "plain C": 7}


@lru_cache(maxsize=1)
def head_ordered_min_rows() -> int:
    """The row count from which ``lm_head`` computes in the reference's order (this machine's native build)."""
    return HEAD_DIRECT_MAX_ROWS.get(lowbit.isa(), HEAD_DIRECT_MAX_ROWS["plain C"]) + 1


def lm_head(head, x: torch.Tensor) -> torch.Tensor:
    """``ops.reference.layers.lm_head``'s contract (fp32 logits [n, V]) reading the bf16 head weight directly, so
    no fp32 copy of [V, D] is made: from ``head_ordered_min_rows()`` rows in the reference's summation order
    (``ordered_gemm``), below that (decode) and where that kernel cannot take the call the direct low-bit kernel,
    the reference head where neither can."""
    if head.weight.dtype == torch.bfloat16 and x.dim() == 2:
        y = ordered_gemm.linear(x.float(), head.weight) if x.shape[0] >= head_ordered_min_rows() else None
        if y is None:
            y = lowbit.matmul(x.float(), DENSE, head.weight, None, 0)
        if y is not None:
            return y
    return reference_layers.lm_head(head, x)


def grouped_output(wo_a, o: torch.Tensor, groups: int, rank: int) -> torch.Tensor:
    """``ops.reference.layers.grouped_output`` as one batched GEMM over the groups: o [T, H, d] -> [T, G*rank]."""
    weight = getattr(wo_a, "prepared_grouped", None)  # [G, r, H/G*d] in the compute dtype
    if weight is None or weight.dtype != o.dtype:
        return reference_layers.grouped_output(wo_a, o, groups, rank)
    fused = decode_ops.grouped_output(o, weight)  # decode rows: one C pass instead of a bf16 bmm
    if fused is not None:
        return fused
    t = o.shape[0]
    og = o.reshape(t, groups, -1).transpose(0, 1)  # [G, T, H/G*d]
    u = bf16_gemm.bmm(og, weight.transpose(1, 2))  # [G, T, r]
    return u.transpose(0, 1).reshape(t, groups * rank)
