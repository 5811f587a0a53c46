"""Fast mHC: split + Sinkhorn with the sigmoids and softmax exponentials in torch (rounded exactly like the reference)
and the 2 x iters row/column normalisations in one C call instead of ~6 torch ops per iteration; the stream
collapse and the post mixing in one C call each (the reference's products and summation order: bit-identical).
Decode-sized batches take the whole of hc_pre / hc_head in one C call (``ops.fast.mhc_fused``: within bf16 noise of
the reference, not bit-exact); prefills keep the bit-identical pieces."""

from __future__ import annotations

import torch

from v4stack.ops.fast import kernels, mhc_fused
from v4stack.ops.reference import mixing as reference_mixing


def hc_split_sinkhorn(mixes: torch.Tensor, hc_scale: torch.Tensor, hc_base: torch.Tensor, hc: int, iters: int,
                      eps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``ops.reference.mixing.hc_split_sinkhorn``'s contract."""
    fused = kernels.hc_split(mixes, hc_scale, hc_base, hc, iters, eps)
    return reference_mixing.hc_split_sinkhorn(mixes, hc_scale, hc_base, hc, iters, eps) if fused is None else fused


def hc_collapse(x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``ops.reference.mixing.hc_collapse``'s contract."""
    fused = kernels.hc_collapse(x, weights)
    return reference_mixing.hc_collapse(x, weights) if fused is None else fused


def hc_post(out: torch.Tensor, residual: torch.Tensor, post: torch.Tensor, comb: torch.Tensor, ops) -> torch.Tensor:
    """``ops.reference.mixing.hc_post``'s contract: new streams [T, hc, D] in out.dtype."""
    fused = kernels.hc_post(out, residual, post, comb)
    return reference_mixing.hc_post(out, residual, post, comb, ops) if fused is None else fused


def hc_pre(x: torch.Tensor, fn: torch.Tensor, scale: torch.Tensor, base: torch.Tensor, shape,
           ops) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``ops.reference.mixing.hc_pre``'s contract: one C call for decode-sized batches, else the reference's
    composition of the table's (fast) mixes, split and collapse."""
    fused = mhc_fused.hc_pre(x, fn, scale, base, shape)
    return reference_mixing.hc_pre(x, fn, scale, base, shape, ops) if fused is None else fused


def hc_head(x: torch.Tensor, fn: torch.Tensor, scale: torch.Tensor, base: torch.Tensor, shape, ops) -> torch.Tensor:
    """``ops.reference.mixing.hc_head``'s contract: one C call for decode-sized batches, else the reference's
    composition."""
    fused = mhc_fused.hc_head(x, fn, scale, base, shape)
    return reference_mixing.hc_head(x, fn, scale, base, shape, ops) if fused is None else fused
