"""Whole-layer entries of the op table: a checkpoint-format linear, the grouped output projection, the fp32
head, and the once-after-load weight preparation (a no-op for the reference, which reads checkpoint formats)."""

from __future__ import annotations

import torch

from v4stack.ops.reference.blas_order import linear_fp32

FP8, FP4, DENSE = "fp8", "fp4", "dense"  # the weight formats of ``model.linear.Linear``


def linear(layer, x: torch.Tensor) -> torch.Tensor:
    """``layer`` (``model.linear.Linear``), x [..., in] -> [..., out] in the compute dtype (fp32 for
    ``dense_compute_fp32``), through the narrow GEMM entries of the layer's op table."""
    c = layer.compute
    act_block = c.act_block if c.quant else None
    if layer.fmt == FP8:
        return c.ops.linear_fp8(x, layer.weight, layer.scale, c.weight_block, act_block, c.dtype)
    if layer.fmt == FP4:
        return c.ops.linear_fp4(x, layer.weight, layer.scale, act_block, c.dtype)
    return c.ops.linear_dense(x, layer.weight, torch.float32 if layer.dense_compute_fp32 else c.dtype)


def grouped_output(wo_a, o: torch.Tensor, groups: int, rank: int) -> torch.Tensor:
    """The block-diagonal ``wo_a`` (``Linear`` [G*rank, H/G*d]): o [T, H, d] -> [T, G*rank] in o.dtype; group g's
    slice of heads meets its own [rank, H/G*d] block."""
    o = o.reshape(o.shape[0], groups, -1)  # [T, G, H/G*d]
    weight = wo_a.dense_weight(wo_a.compute.dtype).view(groups, rank, -1)  # [G, r, H/G*d]
    return torch.einsum("tgd,grd->tgr", o, weight).flatten(1)


def lm_head(head, x: torch.Tensor) -> torch.Tensor:
    """``head`` (``model.transformer.Head``), x [n, D] -> fp32 logits [n, V], in the golden summation order
    (``blas_order``)."""
    return linear_fp32(x.float(), head.fp32_weight())


def prepare_weights(model: torch.nn.Module) -> None:
    """Called once after the weights are loaded; the reference computes from the checkpoint tensors as they are."""
    return None
