"""RMSNorm: y = w * x / sqrt(mean(x^2) + eps), statistics in fp32, output in the input dtype."""

from __future__ import annotations

import torch
from torch import nn

from v4stack.ops.reference.norm import rms_normalize
from v4stack.ops.table import OpTable, reference_ops

__all__ = ["RMSNorm", "rms_normalize"]


class RMSNorm(nn.Module):
    """Weight stored as in the checkpoint (bf16), applied in fp32 like the reference, through ``ops.rms_norm``
    (default: the reference table)."""

    def __init__(self, dim: int, eps: float, dtype: torch.dtype = torch.bfloat16, ops: OpTable | None = None) -> None:
        super().__init__()
        self.eps = eps
        self.ops = ops or reference_ops()
        self.register_buffer("weight", torch.empty(dim, dtype=dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ops.rms_norm(x, self.weight, self.eps)
