"""RMSNorm: y = w * x / sqrt(mean(x^2) + eps), statistics in fp32, output in the input dtype."""

from __future__ import annotations

import torch
from torch import nn


def rms_normalize(x: torch.Tensor, eps: float) -> torch.Tensor:
    """x [..., D] -> fp32 x / sqrt(mean(x^2) + eps) (no weight)."""
    xf = x.float()
    return xf * torch.rsqrt(xf.square().mean(-1, keepdim=True) + eps)


class RMSNorm(nn.Module):
    """Weight stored as in the checkpoint (bf16), applied in fp32 like the reference."""

    def __init__(self, dim: int, eps: float, dtype: torch.dtype = torch.bfloat16) -> None:
        super().__init__()
        self.eps = eps
        self.register_buffer("weight", torch.empty(dim, dtype=dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.weight.float() * rms_normalize(x, self.eps)).to(x.dtype)
