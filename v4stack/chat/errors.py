"""The chat layer's input error: one line naming the request field, for the server's 400 responses.

Knows: how to phrase a bad field. Does not know: HTTP, or which field is bad (the callers decide).
"""

from __future__ import annotations

from typing import Any

from v4stack.config.validation import ParameterError


class ChatInputError(ParameterError):
    """A malformed chat request: unknown role, missing content, a tool result without its call, a bad tool
    schema, an effort the format does not know. ``param`` is the JSON path of the field
    (``messages[2].tool_call_id``); the message is one line, e.g.
    ``messages[2].role: 'robot' is not allowed (expected one of 'system', 'user', ...)``."""

    def __init__(self, param: str, value: Any, allowed: str) -> None:
        super().__init__(param, _short(value), allowed)


#: longest value repr quoted in an error message (a pasted 20 kB prompt must not become the error line)
_MAX_VALUE_CHARS = 80


class _Elided:
    """A repr that stands for a value too long to quote."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


def _short(value: Any) -> Any:
    text = repr(value)
    if len(text) <= _MAX_VALUE_CHARS and "\n" not in text:
        return value
    text = text.replace("\n", "\\n")
    return _Elided(text[:_MAX_VALUE_CHARS - 3] + "...") if len(text) > _MAX_VALUE_CHARS else _Elided(text)
