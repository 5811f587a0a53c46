"""Decode attention over keys read from the cache pools: each decode query's window rows and compressed entries
named by slot indices (``parts``), so a platform can read them in place instead of gathering a [B, K, d] copy.

    keys = cat([pool[slots] for pool, slots in parts], dim=1)    [B, K, d]
    ops.decode_attention(q, keys, valid, sink, scale, round_probs)   (the caller's table)
"""

from __future__ import annotations

import torch


def gather_keys(parts: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """parts: (pool [P, d], slots [B, n_i] int64 into the pool) -> keys [B, sum n_i, d] in part order."""
    keys = [pool[slots] for pool, slots in parts]
    return keys[0] if len(keys) == 1 else torch.cat(keys, 1)


def decode_attention_pooled(q: torch.Tensor, parts: list[tuple[torch.Tensor, torch.Tensor]], valid: torch.Tensor,
                            sink: torch.Tensor, scale: float, round_probs: bool, ops) -> torch.Tensor:
    """``ops.decode_attention`` of q [B, H, d] over ``gather_keys(parts)`` [B, K, d] with valid [B, K] (slots where
    valid is False may name any allocated row, NaN included) -> o [B, H, d] in q.dtype; ``ops``: the caller's op
    table (a platform that replaces only ``decode_attention`` keeps it)."""
    return ops.decode_attention(q, gather_keys(parts), valid, sink, scale, round_probs)
