"""Fast lightning-indexer entries of decode steps: scores and top-k of one query per sequence in one C call each
(``ops.fast.decode_ops``), the torch formulations (``ops.fast.attention``, the reference's ``index_topk``) for
prefill-sized calls or without a C compiler."""

from __future__ import annotations

import torch

from v4stack.ops.fast import attention, decode_ops
from v4stack.ops.reference import indexer as reference_indexer


def decode_index_scores(q: torch.Tensor, weights: torch.Tensor, keys: torch.Tensor, positions: torch.Tensor,
                        ratio: int) -> torch.Tensor:
    """``ops.reference.indexer.decode_index_scores``'s contract (bf16 rounding points of the fast torch path)."""
    fused = decode_ops.decode_index_scores(q, weights, keys, positions, ratio)
    return attention.decode_index_scores(q, weights, keys, positions, ratio) if fused is None else fused


def index_topk(scores: torch.Tensor, topk: int, positions: torch.Tensor, ratio: int) -> torch.Tensor:
    """``ops.reference.indexer.index_topk``'s contract, the same indices."""
    fused = decode_ops.index_topk(scores, topk, positions, ratio)
    return reference_indexer.index_topk(scores, topk, positions, ratio) if fused is None else fused
