"""Fast ``decode_attention_pooled``: the C decode attention (``csrc/fast_kernels.c``) reading each key row in place
from the cache pools through its slot index, instead of gathering and concatenating a [B, K, d] copy per layer
(~190 us per layer at 16 streams on the demo model, ~17 us at 1). The same kernel and order as the fast
``decode_attention`` on the gathered keys: bit-identical to it. Anything the kernel cannot take (more than two
parts, another dtype, a tensor off the CPU, exact softmax) gathers and calls the table's ``decode_attention``."""

from __future__ import annotations

import torch

from v4stack.ops.fast import kernels
from v4stack.ops.reference import pooled_attention


def decode_attention_pooled(q: torch.Tensor, parts: list[tuple[torch.Tensor, torch.Tensor]], valid: torch.Tensor,
                            sink: torch.Tensor, scale: float, round_probs: bool, ops) -> torch.Tensor:
    """``ops.reference.pooled_attention.decode_attention_pooled``'s contract."""
    if round_probs:
        fused = kernels.decode_attention_pooled(q, parts, valid, sink, scale)
        if fused is not None:
            return fused
    return pooled_attention.decode_attention_pooled(q, parts, valid, sink, scale, round_probs, ops)
