"""Every environment variable v4stack reads, in one place, with its default; and the CPU libraries' variables it
sets as defaults (``LIBRARY_DEFAULTS``, applied by ``import v4stack``).

Each reader validates its value and raises a one-line :class:`ParameterError` naming the variable (the CLI
turns it into exit code 2), so ``V4STACK_THREADS=abc`` is an error message, not a traceback. An empty value
counts as unset. The README's "Environment variables" table lists these and ``LIBRARY_DEFAULTS``; keep them in step.
"""

from __future__ import annotations

import os
from pathlib import Path

from v4stack.config import validation as check

TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off")

# Process-level settings of the CPU libraries under torch, the CPU platform's defaults. Both libraries read them
# lazily (oneDNN at its first primitive, MKL at its first buffer), so setting them on ``import v4stack`` (before any
# v4stack code runs a GEMM) takes effect; a value already in the environment wins. Why (docs/benchmarks.md, "Long
# context"): with the libraries' own defaults a long prompt's RSS grows 1.3-1.7 MiB per 1,024-token chunk beyond
# what the engine holds (measured on the 43-layer bench model, 32K tokens: +22.7 MiB over the plan at the end).
LIBRARY_DEFAULTS = {
    # oneDNN keeps up to 1,024 created primitives; a long prompt brings new GEMM shapes every chunk (the last key
    # slice's width, the indexer's entry count), so the cache grows through a 32K prompt: about half the growth.
    "ONEDNN_PRIMITIVE_CACHE_CAPACITY": "0",
    # MKL's memory manager keeps freed buffers for reuse: 11 MiB more after load and most of the rest of the growth.
    # MKL disables it for any value of the variable (Intel's documentation); V4STACK_LIBRARY_DEFAULTS=0 keeps it.
    "MKL_DISABLE_FAST_MM": "1",
}


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


def _flag(name: str, value: str | None, default: bool) -> bool:
    if value is None:
        return default
    if value.lower() not in TRUE_WORDS + FALSE_WORDS:
        raise check.ParameterError(name, value, "one of " + ", ".join(TRUE_WORDS + FALSE_WORDS))
    return value.lower() in TRUE_WORDS


def debug() -> bool:
    """V4STACK_DEBUG: 1 shows the full traceback of an unexpected error instead of one line (unset: 0)."""
    return _flag("V4STACK_DEBUG", _get("V4STACK_DEBUG"), False)


def library_defaults() -> bool:
    """V4STACK_LIBRARY_DEFAULTS: 0 leaves oneDNN and MKL at their own defaults (unset: 1, ``LIBRARY_DEFAULTS`` is
    set wherever the environment does not set the variable)."""
    return _flag("V4STACK_LIBRARY_DEFAULTS", _get("V4STACK_LIBRARY_DEFAULTS"), True)


def apply_library_defaults() -> dict[str, str]:
    """Put each ``LIBRARY_DEFAULTS`` variable the environment lacks into ``os.environ`` (which the C libraries'
    ``getenv`` reads), unless V4STACK_LIBRARY_DEFAULTS=0; returns the ones set. A variable present in the
    environment, even empty, is the user's and is left alone. Takes effect only before torch's first oneDNN
    primitive and MKL buffer of the process (``import v4stack`` runs it)."""
    if not library_defaults():
        return {}
    added = {name: value for name, value in LIBRARY_DEFAULTS.items() if name not in os.environ}
    os.environ.update(added)
    return added
