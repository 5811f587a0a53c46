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
    if not kernels.available() or mixes.device.type != "cpu":
        return reference_mixing.hc_split_sinkhorn(mixes, hc_scale, hc_base, hc, iters, eps)
    pre = torch.sigmoid(mixes[:, :hc] * hc_scale[0] + hc_base[:hc]) + eps
    post = 2 * torch.sigmoid(mixes[:, hc:2 * hc] * hc_scale[1] + hc_base[hc:2 * hc])
    comb = mixes[:, 2 * hc:].unflatten(-1, (hc, hc)) * hc_scale[2] + hc_base[2 * hc:].view(hc, hc)
    comb = torch.exp(comb - comb.amax(-1, keepdim=True))
    return pre, post, kernels.hc_sinkhorn_normalise(comb, iters, eps)


def hc_collapse(x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``ops.reference.mixing.hc_collapse``'s contract."""
    fused = kernels.hc_collapse(x, weights)
    return reference_mixing.hc_collapse(x, weights) if fused is None else fused


def hc_post(out: torch.Tensor, residual: torch.Tensor, post: torch.Tensor, comb: torch.Tensor, ops) -> torch.Tensor:
    """``ops.reference.mixing.hc_post``'s contract: new streams [T, hc, D] in out.dtype."""
    fused = kernels.hc_post(out, residual, post, comb)
    return reference_mixing.hc_post(out, residual, post, comb, ops) if fused is None else fused
