"""Rotary embedding applied to interleaved pairs of the last ``rope_dim`` dims (model_spec.md §3.2), in fp32."""

from __future__ import annotations

import torch


def rope(rotary, x: torch.Tensor, positions: torch.Tensor, inverse: bool = False) -> torch.Tensor:
    """``rotary`` (``model.rope.Rotary``: its spec and ``phases``), x [N, ..., D], positions [N] -> copy of x (same
    dtype) with the last rope_dim dims of each row rotated by its position (or back, ``inverse``)."""
    d = rotary.spec.rope_dim
    phase = rotary.phases(positions)
    if inverse:
        phase = phase.conj()
    phase = phase.view(phase.shape[0], *([1] * (x.dim() - 2)), phase.shape[1])
    rot = torch.view_as_complex(x[..., -d:].float().unflatten(-1, (-1, 2)).contiguous())
    rotated = torch.view_as_real(rot * phase).flatten(-2).to(x.dtype)
    return torch.cat([x[..., :-d], rotated], dim=-1)
