"""Reference of the sampling op the engine runs on a step's logits (the sampler's filters and penalties stay in
``engine/sampler.py``: per-request logic, not a hot tensor op)."""

from __future__ import annotations

import torch


def argmax(logits: torch.Tensor) -> torch.Tensor:
    """Greedy choice: logits [R, V] -> [R] int64, per row the first index of the largest value, a NaN counting as
    the largest (``torch.argmax``'s contract). A platform's entry must return exactly these indices."""
    return logits.argmax(-1)
