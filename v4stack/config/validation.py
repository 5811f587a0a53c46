"""Checks of user-facing parameters, shared by the CLI, the engine and the server.

Every check raises :class:`ParameterError` (a ``ValueError``) whose message is one line naming the parameter,
the value given and what is allowed, e.g. ``temperature: nan is not allowed (expected a finite number >= 0)``.
The CLI turns it into exit code 2, the server into an OpenAI-style 400, the engine refuses the request at
``add_request``. NaN and infinities are refused wherever a float is taken.

Knows: numbers, ranges, choices and the context limit rule. Does not know: argparse, HTTP or models.
"""

from __future__ import annotations

import math
from typing import Any, Iterable


class ParameterError(ValueError):
    """A user-supplied parameter outside its allowed values; ``param``/``value``/``allowed`` for callers
    that build structured errors (the server's ``param`` field)."""

    def __init__(self, param: str, value: Any, allowed: str) -> None:
        self.param, self.value, self.allowed = param, value, allowed
        super().__init__(f"{param}: {self.detail}")

    @property
    def detail(self) -> str:
        """The message without the parameter name (argparse puts the flag name in front itself)."""
        return f"{self.value!r} is not allowed (expected {self.allowed})"


class ContextLengthError(ParameterError):
    """Prompt plus requested output tokens exceed the model's context limit."""

    def __init__(self, prompt_tokens: int, max_tokens: int, limit: int) -> None:
        self.prompt_tokens, self.max_tokens, self.limit = prompt_tokens, max_tokens, limit
        ValueError.__init__(self, f"context length: the prompt has {prompt_tokens} tokens and {max_tokens} more "
                                  f"were requested ({prompt_tokens + max_tokens} in all), but the model's context "
                                  f"limit is {limit} tokens")
        self.param, self.value, self.allowed = "max_tokens", max_tokens, f"<= {max(limit - prompt_tokens, 0)}"

    @property
    def detail(self) -> str:
        return str(self)


def _range_text(lo: float | None, hi: float | None, lo_open: bool, hi_open: bool, kind: str) -> str:
    parts = []
    def show(x: float) -> str:   # integers exactly (a seed bound is 2^64 - 1), other numbers short
        return str(x) if isinstance(x, int) else f"{x:g}"

    if lo is not None:
        parts.append(f"{'>' if lo_open else '>='} {show(lo)}")
    if hi is not None:
        parts.append(f"{'<' if hi_open else '<='} {show(hi)}")
    return f"{kind} {' and '.join(parts)}" if parts else kind


def finite_float(param: str, value: Any, lo: float | None = None, hi: float | None = None, *,
                 lo_open: bool = False, hi_open: bool = False) -> float:
    """``value`` as a float within [lo, hi] (open ends with ``lo_open``/``hi_open``); NaN/inf refused."""
    allowed = _range_text(lo, hi, lo_open, hi_open, "a finite number")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ParameterError(param, value, allowed)
    value = float(value)
    if not math.isfinite(value):
        raise ParameterError(param, value, allowed)
    if lo is not None and (value < lo or (lo_open and value == lo)):
        raise ParameterError(param, value, allowed)
    if hi is not None and (value > hi or (hi_open and value == hi)):
        raise ParameterError(param, value, allowed)
    return value


def integer(param: str, value: Any, lo: int | None = None, hi: int | None = None) -> int:
    """``value`` as an int within [lo, hi]; floats with an integral value are accepted, bools are not."""
    allowed = _range_text(lo, hi, False, False, "an integer")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ParameterError(param, value, allowed)
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise ParameterError(param, value, allowed)
    return value


def choice(param: str, value: Any, options: Iterable[Any]) -> Any:
    """``value`` if it is one of ``options``."""
    options = tuple(options)
    if value not in options:
        raise ParameterError(param, value, "one of " + ", ".join(repr(o) for o in options))
    return value


def parse_int(param: str, text: str, lo: int | None = None, hi: int | None = None) -> int:
    """Text (a command-line value or an environment variable) as an int within [lo, hi]."""
    try:
        return integer(param, int(str(text).strip()), lo, hi)
    except (ValueError, ParameterError):   # report what the user typed
        raise ParameterError(param, text, _range_text(lo, hi, False, False, "an integer")) from None


def parse_float(param: str, text: str, lo: float | None = None, hi: float | None = None, *,
                lo_open: bool = False, hi_open: bool = False) -> float:
    """Text as a finite float within [lo, hi] (open ends as in :func:`finite_float`); 'nan'/'inf' refused."""
    try:
        return finite_float(param, float(str(text).strip()), lo, hi, lo_open=lo_open, hi_open=hi_open)
    except (ValueError, ParameterError):   # report what the user typed, not Python's spelling of it
        raise ParameterError(param, text, _range_text(lo, hi, lo_open, hi_open, "a finite number")) from None


def text(param: str, value: Any) -> str:
    """A string that is valid Unicode (encodable as UTF-8). Command-line bytes that are not UTF-8 reach
    Python as lone surrogates (PEP 383); tokenizers cannot take them, so they are refused here."""
    if not isinstance(value, str):
        raise ParameterError(param, value, "a string")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ParameterError(param, value[max(exc.start - 8, 0):exc.end + 8],
                             f"UTF-8 text; character {exc.start} stands for a byte that is not valid UTF-8") from None
    return value


def context_limit(model_max_positions: int, override: int | None = None, param: str = "max_model_len") -> int:
    """The context limit in tokens: the model's ``max_position_embeddings`` unless ``override`` (the
    ``--max-model-len`` flag, named ``param`` in the error) lowers it; an override above the model's
    maximum is refused."""
    if override is None:
        return model_max_positions
    return integer(param, override, 1, model_max_positions)


def check_context(prompt_tokens: int, max_tokens: int, limit: int) -> None:
    """Refuse a request whose prompt plus ``max_tokens`` does not fit in ``limit`` tokens."""
    if prompt_tokens + max_tokens > limit:
        raise ContextLengthError(prompt_tokens, max_tokens, limit)
