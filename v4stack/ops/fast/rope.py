"""Fast RoPE: the reference's complex multiply (same products, no fused multiply-add) in one C pass over x instead
of ~11 torch ops (slice, casts, complex views, multiply, concatenation)."""

from __future__ import annotations

import torch

from v4stack.ops.fast import kernels
from v4stack.ops.reference import rope as reference_rope


def rope(rotary, x: torch.Tensor, positions: torch.Tensor, inverse: bool = False) -> torch.Tensor:
    """``ops.reference.rope.rope``'s contract, bit-identical."""
    fused = kernels.rope_apply(x, rotary.phase_pairs(positions), inverse)
    return reference_rope.rope(rotary, x, positions, inverse) if fused is None else fused
