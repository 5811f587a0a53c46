"""Non-streaming parse of a completion: the aggregate of a one-chunk stream (so the two cannot differ).

Knows: nothing the stream parser does not. Does not know: tokens (pass detokenised text).
"""

from __future__ import annotations

from typing import Callable

from v4stack.chat.deltas import ParsedMessage, aggregate
from v4stack.chat.formats import ChatFormat
from v4stack.chat.stream import StreamParser, default_call_id


def parse_completion(text: str, *, fmt: ChatFormat, thinking: bool, finish_reason: str = "stop",
                     new_call_id: Callable[[], str] = default_call_id) -> ParsedMessage:
    """``text`` (everything generated after the prompt; EOS included or not) -> reasoning, content and
    tool calls. ``finish_reason`` is the engine's ("stop" or "length"); the message's finish_reason is
    "tool_calls" when a call was made and the engine stopped. Never raises on model output."""
    parser = StreamParser(fmt, thinking, new_call_id=new_call_id)
    return aggregate(parser.feed(text) + parser.finish(finish_reason))
