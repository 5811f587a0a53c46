"""Every environment variable v4stack reads, in one place, with its default."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """V4STACK_CACHE: where generated artefacts (the default demo checkpoint) are kept."""
    return Path(os.environ.get("V4STACK_CACHE", Path.home() / ".cache" / "v4stack"))


def num_threads() -> int | None:
    """V4STACK_THREADS: torch intra-op threads for CPU runs (unset: torch's default)."""
    value = os.environ.get("V4STACK_THREADS")
    return int(value) if value else None
