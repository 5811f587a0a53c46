"""What the completion parser produces: streaming deltas, and the whole message they add up to.

A stream is an ordered list of deltas: :class:`ReasoningDelta` / :class:`ContentDelta` text, tool-call
deltas in the OpenAI streaming shape (the first delta of call ``index`` carries ``id`` and ``name`` with
empty arguments, later ones carry argument fragments), and one :class:`FinishDelta` at the end.
:func:`aggregate` folds any such list into a :class:`ParsedMessage`; a non-streaming parse is exactly the
aggregate of a one-chunk stream, so streaming and non-streaming results cannot drift apart.

Knows: the shapes and how they add up. Does not know: DSML or any token.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Union

FINISH_REASONS = ("stop", "length", "tool_calls")


@dataclass(frozen=True)
class ReasoningDelta:
    text: str


@dataclass(frozen=True)
class ContentDelta:
    text: str


@dataclass(frozen=True)
class ToolCallDelta:
    """One piece of tool call ``index``: its start (``id`` and ``name`` set, ``arguments`` "") or an
    argument fragment (``id`` and ``name`` None)."""

    index: int
    arguments: str = ""
    id: str | None = None
    name: str | None = None

    @property
    def is_start(self) -> bool:
        return self.name is not None

    def to_openai(self) -> dict:
        """The entry for ``choices[i].delta.tool_calls`` of an OpenAI chat.completion.chunk."""
        if self.is_start:
            return {"index": self.index, "id": self.id, "type": "function",
                    "function": {"name": self.name, "arguments": self.arguments}}
        return {"index": self.index, "function": {"arguments": self.arguments}}


@dataclass(frozen=True)
class FinishDelta:
    """The end of the stream: "stop", "length" or "tool_calls"."""

    reason: str

    def __post_init__(self) -> None:
        if self.reason not in FINISH_REASONS:
            raise ValueError(f"FinishDelta.reason: {self.reason!r} is not one of {FINISH_REASONS}")


Delta = Union[ReasoningDelta, ContentDelta, ToolCallDelta, FinishDelta]


@dataclass(frozen=True)
class ParsedToolCall:
    id: str
    name: str
    arguments: str            # JSON text, built like the official parser (not re-serialised)

    def to_openai(self) -> dict:
        return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.arguments}}


@dataclass(frozen=True)
class ParsedMessage:
    """A parsed completion. Empty fields are "" (never None); ``finish_reason`` is None until finished."""

    reasoning_content: str
    content: str
    tool_calls: tuple[ParsedToolCall, ...] = ()
    finish_reason: str | None = None

    def to_openai(self) -> dict:
        """The ``choices[i].message`` of an OpenAI chat.completion (content null when only tools were
        called; reasoning_content null when there was none)."""
        msg: dict = {"role": "assistant",
                     "content": self.content if self.content or not self.tool_calls else None,
                     "reasoning_content": self.reasoning_content or None}
        if self.tool_calls:
            msg["tool_calls"] = [c.to_openai() for c in self.tool_calls]
        return msg


def aggregate(deltas: Iterable[Delta]) -> ParsedMessage:
    """The message a delta list adds up to (raises ValueError on an argument fragment for a call that
    was never started: that would be a parser bug, not bad model output)."""
    reasoning, content, finish = [], [], None
    calls: dict[int, list] = {}
    for d in deltas:
        if isinstance(d, ReasoningDelta):
            reasoning.append(d.text)
        elif isinstance(d, ContentDelta):
            content.append(d.text)
        elif isinstance(d, ToolCallDelta):
            if d.is_start:
                calls[d.index] = [d.id, d.name, d.arguments]
            elif d.index in calls:
                calls[d.index][2] += d.arguments
            else:
                raise ValueError(f"tool call delta for index {d.index} before its start")
        elif isinstance(d, FinishDelta):
            finish = d.reason
    tool_calls = tuple(ParsedToolCall(id=c[0], name=c[1], arguments=c[2]) for _, c in sorted(calls.items()))
    return ParsedMessage("".join(reasoning), "".join(content), tool_calls, finish)


def coalesce(deltas: Iterable[Delta]) -> list[Delta]:
    """Adjacent deltas of one kind merged (text with text, fragments of one call), order kept."""
    out: list[Delta] = []
    for d in deltas:
        prev = out[-1] if out else None
        if isinstance(d, (ReasoningDelta, ContentDelta)) and type(prev) is type(d):
            out[-1] = type(d)(prev.text + d.text)
        elif isinstance(d, ToolCallDelta) and not d.is_start and isinstance(prev, ToolCallDelta) \
                and prev.index == d.index and not prev.is_start:   # a call's start stays its own delta
            out[-1] = ToolCallDelta(prev.index, prev.arguments + d.arguments)
        elif isinstance(d, (ReasoningDelta, ContentDelta)) and not d.text:
            continue
        else:
            out.append(d)
    return out
