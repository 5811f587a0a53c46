"""Fast mHC: split + Sinkhorn with the sigmoids and softmax exponentials in torch (rounded exactly like the reference)
and the 2 x iters row/column normalisations in one C call instead of ~6 torch ops per iteration; the stream
collapse and the post mixing in one C call each (the reference's products and summation order: bit-identical)."""

from __future__ import annotations

import torch

from v4stack.ops.fast import kernels
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
