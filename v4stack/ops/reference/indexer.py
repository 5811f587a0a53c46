"""Lightning-indexer scoring and top-k selection (model_spec.md §3.5)."""

from __future__ import annotations

import torch


def topk_lower_index_on_ties(scores: torch.Tensor, k: int) -> torch.Tensor:
    """scores [S, N] -> indices [S, k] of the k largest, descending; equal scores keep the lower index first.

    This is what CUDA ``torch.topk`` returns and what the golden data uses (CPU topk has no tie order).
    """
    return torch.sort(scores.float(), dim=-1, descending=True, stable=True).indices[:, :k]


def _hidden(num_entries: int, positions: torch.Tensor, ratio: int) -> torch.Tensor:
    """[S, N] bool: entry s not yet visible to the query at positions[t] (s >= (p + 1) // ratio)."""
    visible = (positions + 1) // ratio
    return torch.arange(num_entries, device=positions.device)[None, :] >= visible[:, None]


def index_scores(q: torch.Tensor, weights: torch.Tensor, keys: torch.Tensor, positions: torch.Tensor,
                 ratio: int) -> torch.Tensor:
    """I[t, s] = sum_h weights[t, h] ReLU(<q[t, h], keys[s]>) in q.dtype: q [S, H, d], weights [S, H], keys [N, d],
    positions [S] -> fp32 [S, N], -inf where entry s is not yet visible to query t."""
    return _weighted_relu(q, weights, keys).masked_fill(_hidden(keys.shape[0], positions, ratio), float("-inf"))


def _weighted_relu(q: torch.Tensor, weights: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """sum_h weights[t, h] ReLU(<q[t, h], keys[s]>) in q.dtype -> fp32 [S, N] (nothing hidden)."""
    scores = torch.einsum("shd,nd->shn", q, keys.to(q.dtype)).relu()
    return (scores * weights.unsqueeze(-1)).sum(dim=1).float()  # [S, N]


def decode_index_scores(q: torch.Tensor, weights: torch.Tensor, keys: torch.Tensor, positions: torch.Tensor,
                        ratio: int) -> torch.Tensor:
    """``index_scores`` of one query per sequence over its own keys: q [B, H, d], weights [B, H], keys [B, N, d]
    (row b: b's entries 0..N-1, any values past the visible ones), positions [B] -> fp32 [B, N], -inf where
    entry s is not yet visible to b (s >= (p_b + 1) // ratio). Defined row by row over the visible keys."""
    out = torch.full(keys.shape[:2], float("-inf"), dtype=torch.float32, device=keys.device)
    for b, n in enumerate(((positions + 1) // ratio).clamp_max(keys.shape[1]).tolist()):
        out[b, :n] = _weighted_relu(q[b:b + 1], weights[b:b + 1], keys[b, :n])[0]
    return out


def index_topk(scores: torch.Tensor, topk: int, positions: torch.Tensor, ratio: int) -> torch.Tensor:
    """scores [S, N] from ``index_scores`` -> idx [S, min(topk, N)] int64 by descending score (ties: lower entry),
    -1 where the slot has no visible entry."""
    k = min(topk, scores.shape[1])
    if k == 0:
        return torch.empty(scores.shape[0], 0, dtype=torch.long, device=scores.device)
    top = topk_lower_index_on_ties(scores, k)
    visible = (positions + 1) // ratio
    return top.masked_fill(top >= visible[:, None], -1)
