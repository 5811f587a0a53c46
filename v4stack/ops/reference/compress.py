"""The compressor's softmax pooling (model_spec.md §3.4)."""

from __future__ import annotations

import torch


def compress_pool(values: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    """values, scores fp32 [n, m, d] (m raw rows per entry; -inf scores for absent rows) -> fp32 [n, d]:
    per channel, sum_i softmax_i(scores)[c] * values[i, c]."""
    return (values * scores.softmax(dim=1)).sum(dim=1)
