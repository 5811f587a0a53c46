"""Every environment variable v4stack reads, in one place, with its default.

Each reader validates its value and raises a one-line :class:`ParameterError` naming the variable (the CLI
turns it into exit code 2), so ``V4STACK_THREADS=abc`` is an error message, not a traceback. An empty value
counts as unset. The README's "Environment variables" table lists these; keep the two in step.
"""

from __future__ import annotations

import os
from pathlib import Path

from v4stack.config import validation as check

TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off")


def _get(name: str) -> str | None:
    value = os.environ.get(name, "").strip()
    return value or None


def num_threads() -> int | None:
    """V4STACK_THREADS: torch intra-op threads for CPU runs, a positive integer (unset: the cores the
    1-minute load average leaves free, at least 1: ``platforms.threads``)."""
    value = _get("V4STACK_THREADS")
    return None if value is None else check.parse_int("V4STACK_THREADS", value, 1)


def default_model() -> Path | None:
    """V4STACK_DEFAULT_MODEL: checkpoint used when no --model is given (unset: the bundled demo model)."""
    value = _get("V4STACK_DEFAULT_MODEL")
    return Path(value) if value else None


def debug() -> bool:
    """V4STACK_DEBUG: 1 shows the full traceback of an unexpected error instead of one line (unset: 0)."""
    value = _get("V4STACK_DEBUG")
    if value is None:
        return False
    if value.lower() not in TRUE_WORDS + FALSE_WORDS:
        raise check.ParameterError("V4STACK_DEBUG", value, "one of " + ", ".join(TRUE_WORDS + FALSE_WORDS))
    return value.lower() in TRUE_WORDS
