"""Every environment variable v4stack reads, in one place, with its default."""

from __future__ import annotations

import os
from pathlib import Path


def num_threads() -> int | None:
    """V4STACK_THREADS: torch intra-op threads for CPU runs (unset: torch's default)."""
    value = os.environ.get("V4STACK_THREADS")
    return int(value) if value else None


def default_model() -> Path | None:
    """V4STACK_DEFAULT_MODEL: checkpoint used when no --model is given (unset: the bundled demo model)."""
    value = os.environ.get("V4STACK_DEFAULT_MODEL")
    return Path(value) if value else None
