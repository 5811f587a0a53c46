"""Rotary position embedding with optional YaRN frequency interpolation (model_spec.md §3.2).

Pairs are interleaved (x[2i], x[2i+1]) on the last ``rope_dim`` dims; rotation in fp32; no YaRN
magnitude factor. Compressed layers (ratio > 0) use ``compress_rope_theta`` with YaRN, window-only layers
``rope_theta`` without, for every vector in that layer (queries, window keys, compressed keys, indexer).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from v4stack.ops.table import OpTable, reference_ops

YARN_RAMP_MIN_WIDTH = 1e-3  # reference: if the correction range collapses (low == high) widen it by 0.001
# Rotary reuses one step's phases for at most this many positions (decode batches: 16 KiB of complex64 per layer at
# rope_dim 64); a prefill chunk's phases are recomputed per use rather than held between steps
PHASE_CACHE_ROWS = 256


@dataclass(frozen=True)
class RopeSpec:
    """rope_dim: rotated dims; base: theta; yarn_*: YaRN parameters, or original_len 0 for plain RoPE."""

    rope_dim: int
    base: float
    factor: float = 1.0
    original_len: int = 0
    beta_fast: float = 32.0
    beta_slow: float = 1.0


def inverse_frequencies(spec: RopeSpec) -> torch.Tensor:
    """fp32 [rope_dim / 2] rotation speeds f_i = base^(-2i/d), YaRN-interpolated when original_len > 0."""
    d = spec.rope_dim
    freqs = 1.0 / (spec.base ** (torch.arange(0, d, 2, dtype=torch.float32, device="cpu") / d))
    if spec.original_len > 0:
        def correction_dim(rotations: float) -> float:
            return d * math.log(spec.original_len / (rotations * 2 * math.pi)) / (2 * math.log(spec.base))

        low = max(math.floor(correction_dim(spec.beta_fast)), 0)
        high = min(math.ceil(correction_dim(spec.beta_slow)), d - 1)
        if low == high:
            high += YARN_RAMP_MIN_WIDTH
        ramp = ((torch.arange(d // 2, dtype=torch.float32, device="cpu") - low) / (high - low)).clamp(0, 1)
        freqs = freqs / spec.factor * ramp + freqs * (1 - ramp)
    return freqs


def _pairs(phases: torch.Tensor) -> torch.Tensor:
    """complex64 [N, k] -> its contiguous fp32 (real, imaginary) view [N, k, 2]."""
    return torch.view_as_real(phases.resolve_conj()).contiguous()


class Rotary:
    """Applies the rotation for one RopeSpec at arbitrary absolute positions, through ``ops.rope`` (default: the
    reference table)."""

    def __init__(self, spec: RopeSpec, ops: OpTable | None = None) -> None:
        self.spec = spec
        self.ops = ops or reference_ops()
        self.inv_freq = inverse_frequencies(spec)  # fp32 [rope_dim/2], on CPU even under a meta-device build
        # (positions, phases, phase_pairs) of the current step
        self._step: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    def begin_step(self, positions: torch.Tensor, shared: dict | None = None) -> None:
        """Called by the owning layer at the start of each forward: ``phases(positions)`` (the same tensor object)
        is computed once here and reused by the step's q, kv and output rotations, for at most PHASE_CACHE_ROWS
        positions (decode batches; prefill phases are not held between steps). The next call replaces it, so a
        positions buffer the caller refills in place is never served stale phases across steps.

        ``shared``: a dict that lives for one forward (``ForwardBatch.memo``): the phases are computed by the first
        layer of the forward with this spec and reused by every later one (the same values: one computation of
        ``phases`` over the same positions object). The caller must not refill ``positions`` during the forward."""
        self._step = None
        if positions.numel() > PHASE_CACHE_ROWS:
            return
        key = ("rope_phases", self.spec, positions.device)
        held = shared.get(key) if shared is not None else None
        if held is None or held[0] is not positions:
            phases = self.phases(positions)
            held = (positions, phases, _pairs(phases))
            if shared is not None:
                shared[key] = held
        self._step = held

    def phases(self, positions: torch.Tensor) -> torch.Tensor:
        """positions [N] int -> complex64 [N, rope_dim/2] = exp(i * p * f)."""
        if self._step is not None and self._step[0] is positions:
            return self._step[1]
        inv_freq = self.inv_freq if self.inv_freq.device == positions.device else self.inv_freq.to(positions.device)
        angles = torch.outer(positions.to(torch.float32), inv_freq)
        return torch.polar(torch.ones_like(angles), angles)

    def phase_pairs(self, positions: torch.Tensor) -> torch.Tensor:
        """positions [N] -> fp32 [N, rope_dim/2, 2], contiguous: (cos, sin) of ``phases(positions)``, the form the
        platform kernels read (held with the step's phases, so it is made once per forward)."""
        if self._step is not None and self._step[0] is positions:
            return self._step[2]
        return _pairs(self.phases(positions))

    def apply(self, x: torch.Tensor, positions: torch.Tensor, inverse: bool = False) -> torch.Tensor:
        """x [N, ..., D] -> copy with the last rope_dim dims of each row rotated by its position (or back)."""
        return self.ops.rope(self, x, positions, inverse)
