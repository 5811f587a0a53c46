"""RMSNorm (model_spec.md §3.1): y = w * x / sqrt(mean(x^2) + eps), statistics in fp32, output in x.dtype."""

from __future__ import annotations

import torch


def rms_normalize(x: torch.Tensor, eps: float) -> torch.Tensor:
    """x [..., D] -> fp32 x / sqrt(mean(x^2) + eps) (no weight)."""
    xf = x.float()
    return xf * torch.rsqrt(xf.square().mean(-1, keepdim=True) + eps)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """x [..., D], weight [D] (checkpoint dtype, applied in fp32) -> [..., D] in x.dtype."""
    return (weight.float() * rms_normalize(x, eps)).to(x.dtype)
