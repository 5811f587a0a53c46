"""The official parser's rules, strictly: a completion that breaks them raises :class:`OfficialFormatError`.

This is the acceptance test of a completion (golden README section 6): it returns what the official
``parse_message_from_completion_text`` returns, and raises exactly where it raises. The server does not
need it to answer requests (:func:`v4stack.chat.parse.parse_completion` never raises); it is the oracle the
lenient parser is tested against, and a way to tell "well-formed" from "read leniently" (logs, metrics).

Knows: the exact DSML grammar. Does not know: streaming, ids.
"""

from __future__ import annotations

import json
import re

from v4stack.chat.deltas import ParsedMessage, ParsedToolCall
from v4stack.chat.formats import ChatFormat

_NAME_LINE = re.compile(r' name="([^"]*)">\n')
_PARAM_HEAD = re.compile(r' name="([^"]*)" string="(true|false)">')


class OfficialFormatError(ValueError):
    """The completion is not in the exact format the official parser accepts."""


def _expect(text: str, pos: int, literal: str, what: str) -> int:
    if not text.startswith(literal, pos):
        raise OfficialFormatError(f"{what}: expected {literal!r} at offset {pos}, found {text[pos:pos + 24]!r}")
    return pos + len(literal)


def _parse_block(fmt: ChatFormat, s: str) -> tuple[list[tuple[str, str]], int]:
    """``s`` starts right after ``\\n\\n<｜DSML｜tool_calls``; returns the calls and the end offset."""
    invoke_open, invoke_close = f"<{fmt.dsml}{fmt.invoke_tag}", fmt.close_tag(fmt.invoke_tag)
    param_open, param_close = f"<{fmt.dsml}{fmt.parameter_tag}", fmt.close_tag(fmt.parameter_tag)
    block_close = fmt.close_tag(fmt.block_tag)
    pos = _expect(s, 0, ">\n", "tool block opener")
    calls = []
    while True:
        pos = _expect(s, pos, invoke_open, "invoke")
        m = _NAME_LINE.match(s, pos)
        if m is None:
            raise OfficialFormatError(f"invoke name line: malformed at offset {pos}: {s[pos:pos + 40]!r}")
        name, pos = m.group(1), m.end()
        items: list[str] = []
        keys: set[str] = set()
        if s.startswith("\n" + invoke_close, pos):            # no parameters: one empty line
            pos += 1
        else:
            while True:
                pos = _expect(s, pos, param_open, "parameter")
                head = _PARAM_HEAD.match(s, pos)
                if head is None:
                    raise OfficialFormatError(f"parameter format error: {s[pos:pos + 40]!r}")
                key, is_string = head.group(1), head.group(2) == "true"
                end = s.find(param_close, head.end())
                if end < 0:
                    raise OfficialFormatError(f"parameter {key!r}: missing {param_close!r}")
                if key in keys:
                    raise OfficialFormatError(f"duplicate parameter name: {key!r}")
                keys.add(key)
                raw = s[head.end():end]
                value = json.dumps(raw, ensure_ascii=False) if is_string else raw   # not validated
                items.append(json.dumps(key, ensure_ascii=False) + ": " + value)
                pos = _expect(s, end + len(param_close), "\n", "after a parameter")
                if s.startswith(invoke_close, pos):
                    break
        pos = _expect(s, pos, invoke_close, "invoke close")
        calls.append((name, "{" + ", ".join(items) + "}"))
        pos = _expect(s, pos, "\n", "after an invoke")
        if s.startswith(block_close, pos):
            return calls, pos + len(block_close)


def parse_official(text: str, *, fmt: ChatFormat, thinking: bool) -> ParsedMessage:
    """``text`` (the completion after the generation prefix) read by the official rules. Tool call ids
    are "" (the official parser has none); ``finish_reason`` is None."""
    block = fmt.block_open
    reasoning, rest = "", text
    if thinking:
        end, first_block = text.find(fmt.think_close), text.find(block)
        if end < 0 or 0 <= first_block < end:
            raise OfficialFormatError(f"invalid thinking format: missing {fmt.think_close}")
        reasoning, rest = text[:end], text[end + len(fmt.think_close):]
    eos, b = rest.find(fmt.eos), rest.find(block)
    if eos < 0 and b < 0:
        raise OfficialFormatError("invalid format: missing EOS token")
    calls: list[tuple[str, str]] = []
    if b >= 0 and (eos < 0 or b < eos):
        content = rest[:b]
        calls, used = _parse_block(fmt, rest[b + len(block):])
        tail = rest[b + len(block) + used:]
        if tail and not tail.startswith(fmt.eos):
            raise OfficialFormatError(f"unexpected content after tool calls: {tail[:24]!r}")
    else:
        content = rest[:eos]
    for field, value in (("reasoning", reasoning), ("content", content)):
        for token in fmt.forbidden_in_text:
            if token in value:
                raise OfficialFormatError(f"unexpected special token {token!r} in {field}")
    return ParsedMessage(reasoning, content, tuple(ParsedToolCall("", n, a) for n, a in calls))
