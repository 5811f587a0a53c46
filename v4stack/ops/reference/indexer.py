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
    scores = torch.einsum("shd,nd->shn", q, keys.to(q.dtype)).relu()
    scores = (scores * weights.unsqueeze(-1)).sum(dim=1)  # [S, N]
    return scores.float().masked_fill(_hidden(keys.shape[0], positions, ratio), float("-inf"))


def index_topk(scores: torch.Tensor, topk: int, positions: torch.Tensor, ratio: int) -> torch.Tensor:
    """scores [S, N] from ``index_scores`` -> idx [S, min(topk, N)] int64 by descending score (ties: lower entry),
    -1 where the slot has no visible entry."""
    k = min(topk, scores.shape[1])
    if k == 0:
        return torch.empty(scores.shape[0], 0, dtype=torch.long, device=scores.device)
    top = topk_lower_index_on_ties(scores, k)
    visible = (positions + 1) // ratio
    return top.masked_fill(top >= visible[:, None], -1)
