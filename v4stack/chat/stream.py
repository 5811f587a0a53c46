"""Incremental parser of a DeepSeek-V4 completion: text in, reasoning / content / tool-call deltas out.

One parser per choice: ``StreamParser(fmt, thinking)``, then ``feed(text)`` with each detokenised piece
and ``finish(reason)`` once. It starts in REASONING (thinking mode: the prompt ended with ``<think>``) or
CONTENT (chat mode). States and what moves between them::

    REASONING --</think>--> CONTENT                          (<think> in CONTENT goes back to REASONING)
    REASONING / CONTENT --[\\n\\n]<｜DSML｜ or </｜DSML｜--> TAG     (the separator belongs to the block)
    TAG --">"--> MARKUP, or VALUE (string="true": streamed) / RAW (other parameters: buffered)
    VALUE / RAW --</｜DSML｜ or <｜DSML｜--> TAG                  (the value ends at any DSML tag)
    MARKUP --<｜DSML｜ or </｜DSML｜--> TAG                        (text between tags is dropped)
    any --EOS--> DONE                                          (everything after EOS is ignored)

Text that could be the start of a marker (a trailing ``\\n``, ``<``, ``</thi``, ``｜``...) is held back
until the next piece decides it, so no marker ever reaches reasoning or content, however the text is
split. Where the official parser accepts a completion the result is identical to it (byte for byte,
``arguments`` built as ``{"k": v, ...}`` text); where it would raise, the reading is lenient and never
raises (docs/chat.md, "Lenient readings"). Knows: DSML and the format's markers. Does not know: tokens.
"""

from __future__ import annotations

import enum
import json
import re
import secrets
from dataclasses import dataclass, field
from typing import Callable, Sequence

from v4stack.chat.deltas import ContentDelta, Delta, FinishDelta, ReasoningDelta, ToolCallDelta, coalesce
from v4stack.chat.formats import ChatFormat

ENGINE_FINISH_REASONS = ("stop", "length")   # what the engine reports: stop token/string, or max_tokens
CALL_ID_HEX_BYTES = 12                        # "call_" + 24 hex digits, like OpenAI's call ids
_TAG_NAME = re.compile(r'\s*([^\s"=>]+)')
_TAG_ATTR = re.compile(r'([^\s"=]+)\s*=\s*"([^"]*)"')


class State(enum.Enum):
    REASONING = "reasoning"
    CONTENT = "content"
    TAG = "tag"            # inside <｜DSML｜...>, up to its ">"
    MARKUP = "markup"      # inside a tool block, between tags (or after a block)
    VALUE = "value"        # a string="true" parameter value, streamed as a JSON string
    RAW = "raw"            # any other parameter value, buffered until it ends
    DONE = "done"


def _refuse_non_json(name: str):
    raise ValueError(f"{name} is not JSON")      # Python's json accepts NaN/Infinity; clients' parsers do not


def default_call_id() -> str:
    return "call_" + secrets.token_hex(CALL_ID_HEX_BYTES)


def find_marker(buf: str, markers: Sequence[str], final: bool) -> tuple[int, str | None]:
    """The earliest complete marker in ``buf`` as (position, marker), the longest one at equal positions;
    or (safe_end, None) when none can be committed yet: ``buf[:safe_end]`` cannot be part of any marker,
    ``buf[safe_end:]`` might still become one (nothing is held back when ``final``)."""
    best: tuple[int, str] | None = None
    for m in markers:
        p = buf.find(m)
        if p >= 0 and (best is None or p < best[0] or (p == best[0] and len(m) > len(best[1]))):
            best = (p, m)
    limit = best[0] if best is not None else len(buf)
    if not final:
        longest = max(len(m) for m in markers)
        for q in range(max(0, len(buf) - longest + 1), limit):
            tail = buf[q:]
            if any(len(m) > len(tail) and m.startswith(tail) for m in markers):
                return q, None
    return best if best is not None else (len(buf), None)


@dataclass
class _Call:
    """The invoke being parsed; ``index`` None for an invoke without a name (its parameters are dropped)."""

    index: int | None
    keys: set = field(default_factory=set)
    params: int = 0                       # parameters written into the arguments so far


class StreamParser:
    """Parser of one completion (one choice). Not thread-safe; cheap to create."""

    def __init__(self, fmt: ChatFormat, thinking: bool, *, new_call_id: Callable[[], str] = default_call_id):
        self.fmt = fmt
        self._new_call_id = new_call_id
        d = fmt.dsml
        self._open, self._close = "<" + d, "</" + d
        self._invoke, self._parameter = fmt.invoke_tag.strip(), fmt.parameter_tag.strip()
        # in reasoning/content: the ends of text, the think tags, BOS, and every way a DSML tag can begin
        self._text_markers = (fmt.eos, fmt.bos, fmt.think_open, fmt.think_close,
                              "\n\n" + self._open, "\n" + self._open, self._open, self._close, d)
        self._markup_markers = (fmt.eos, self._open, self._close, d)
        self._markup_longest = max(len(m) for m in self._markup_markers)
        self.state = State.REASONING if thinking else State.CONTENT
        self._buf = ""
        self._out: list[Delta] = []
        self._tag, self._tag_is_close, self._in_quote = "", False, False
        self._call: _Call | None = None
        self._calls = 0
        self._value_key: str | None = None    # None: the value is dropped (duplicate key, no invoke...)
        self._value_kind = "true"             # "true" | "false" | "guess" (no string= attribute)
        self._raw = ""
        self.finish_reason: str | None = None
        self._steps = {State.REASONING: self._step_text, State.CONTENT: self._step_text, State.TAG: self._step_tag,
                       State.MARKUP: self._step_markup, State.VALUE: self._step_value, State.RAW: self._step_value}

    # public -----------------------------------------------------------------------------------------------
    @property
    def tool_calls_started(self) -> int:
        return self._calls

    def feed(self, text: str) -> list[Delta]:
        """Deltas decided by ``text`` (may be empty while a possible marker is held back)."""
        if self.finish_reason is not None:
            raise RuntimeError("StreamParser.feed after finish")
        if not isinstance(text, str):
            raise TypeError(f"StreamParser.feed: expected str, got {type(text).__name__}")
        self._buf += text
        self._run(final=False)
        return self._take()

    def finish(self, reason: str = "stop") -> list[Delta]:
        """The remaining deltas and a :class:`FinishDelta`. ``reason`` is the engine's: "stop" (EOS or a
        stop string) or "length" (max_tokens). Reported: "length" if so, else "tool_calls" when a call was
        started, else "stop"."""
        if self.finish_reason is not None:
            raise RuntimeError("StreamParser.finish called twice")
        if reason not in ENGINE_FINISH_REASONS:
            raise ValueError(f"StreamParser.finish: reason {reason!r} is not one of {ENGINE_FINISH_REASONS}")
        self._run(final=True)
        if reason == "stop":               # the model (or a stop string) ended it: nothing more is coming
            self._end_call()
        self.finish_reason = "length" if reason == "length" else "tool_calls" if self._calls else "stop"
        self._out.append(FinishDelta(self.finish_reason))
        self.state = State.DONE
        return self._take()

    # machinery --------------------------------------------------------------------------------------------
    def _take(self) -> list[Delta]:
        out, self._out = coalesce(self._out), []
        return out

    def _args(self, text: str) -> None:
        if text and self._call is not None and self._call.index is not None:
            self._out.append(ToolCallDelta(self._call.index, text))

    def _run(self, final: bool) -> None:
        while self._buf and self.state is not State.DONE:
            if not self._steps[self.state](final):
                break
        if self.state is State.DONE:
            self._buf = ""

    def _enter_tag(self, marker: str) -> None:
        self.state, self._tag, self._in_quote = State.TAG, "", False
        self._tag_is_close = marker == self._close

    def _step_text(self, final: bool) -> bool:
        fmt = self.fmt
        pos, marker = find_marker(self._buf, self._text_markers, final)
        if pos:
            text = self._buf[:pos]
            self._out.append(ReasoningDelta(text) if self.state is State.REASONING else ContentDelta(text))
        if marker is None:
            self._buf = self._buf[pos:]
            return False
        self._buf = self._buf[pos + len(marker):]
        if marker == fmt.eos:
            self.state = State.DONE
        elif marker == fmt.think_close:          # ends reasoning; a stray one in content is dropped
            self.state = State.CONTENT
        elif marker == fmt.think_open:           # a think block in content is reasoning (lenient)
            self.state = State.REASONING
        elif marker != fmt.bos:                  # BOS is dropped; everything else opens a DSML tag
            self._enter_tag(marker)
        return True

    def _step_markup(self, final: bool) -> bool:
        pos, marker = find_marker(self._buf, self._markup_markers, final)
        if marker is None:
            self._buf = self._buf[pos:]          # text between tags is not content: dropped
            return False
        self._buf = self._buf[pos + len(marker):]
        if marker == self.fmt.eos:
            self._end_call()
        else:
            self._enter_tag(marker)
        return True

    def _step_tag(self, final: bool) -> bool:
        buf, i = self._buf, 0
        while i < len(buf):
            if len(buf) - i <= self._markup_longest:
                tail = buf[i:]
                hit = next((m for m in self._markup_markers if tail.startswith(m)), None)
                if hit is not None:              # a new tag or EOS before ">": this one is abandoned
                    self._buf, self.state = buf[i:], State.MARKUP
                    return True
                if not final and any(len(m) > len(tail) and m.startswith(tail) for m in self._markup_markers):
                    break
            elif any(buf.startswith(m, i) for m in self._markup_markers):
                self._buf, self.state = buf[i:], State.MARKUP
                return True
            c = buf[i]
            if c == '"':
                self._in_quote = not self._in_quote
            elif c == ">" and not self._in_quote:
                text, self._buf = self._tag + buf[:i], buf[i + 1:]
                self._handle_tag(text)
                return True
            i += 1
        self._tag += buf[:i]
        self._buf = buf[i:]
        if final:
            self._buf, self.state = "", State.MARKUP   # an unfinished tag is dropped
        return False

    def _step_value(self, final: bool) -> bool:
        pos, marker = find_marker(self._buf, self._markup_markers, final)
        text = self._buf[:pos]
        if self.state is State.VALUE:
            self._args(json.dumps(text, ensure_ascii=False)[1:-1] if self._value_key is not None else "")
        else:
            self._raw += text
        if marker is None:
            self._buf = self._buf[pos:]
            return False
        self._buf = self._buf[pos + len(marker):]
        if marker == self.fmt.eos:
            self._end_call()                     # the model ended inside the value: close what is open
            return True
        self._end_value()
        self._enter_tag(marker)
        return True

    # DSML structure ---------------------------------------------------------------------------------------
    def _handle_tag(self, text: str) -> None:
        m = _TAG_NAME.match(text)
        name = m.group(1) if m else ""
        attrs = dict(_TAG_ATTR.findall(text[m.end():] if m else text))
        self.state = State.MARKUP
        if self._tag_is_close:
            if name != self._parameter:          # </invoke> or the block's close: the call is complete
                self._close_call()
        elif name == self._invoke:
            self._close_call()
            call_name = attrs.get("name")
            if call_name:
                self._call = _Call(index=self._calls)
                self._out.append(ToolCallDelta(self._calls, "", id=self._new_call_id(), name=call_name))
                self._calls += 1
            else:
                self._call = _Call(index=None)
        elif name == self._parameter:
            self._start_value(attrs)
        # any other open tag (tool_calls, calls, a misspelling) only marks a block: nothing to do

    def _start_value(self, attrs: dict) -> None:
        key, call = attrs.get("name"), self._call
        kind = attrs.get("string")
        self._value_kind = kind if kind in ("true", "false") else "guess"
        self._raw = ""
        self._value_key = key if (key is not None and call is not None and call.index is not None
                                  and key not in call.keys) else None   # duplicates: the first one wins
        if self._value_key is not None:
            call.keys.add(key)
        if self._value_kind == "true":
            self.state = State.VALUE
            if self._value_key is not None:
                self._args(self._key_text() + '"')
        else:
            self.state = State.RAW

    def _key_text(self) -> str:
        """``{"key": `` or ``, "key": `` (the official assembly), counting the parameter."""
        call = self._call
        text = ("{" if call.params == 0 else ", ") + json.dumps(self._value_key, ensure_ascii=False) + ": "
        call.params += 1
        return text

    def _end_value(self) -> None:
        if self._value_key is None:
            return
        if self._value_kind == "true":
            self._args('"')
        elif self._value_kind == "false":
            self._args(self._key_text() + self._raw)          # JSON text kept byte for byte
        else:                                                 # no string=: JSON if it parses, else a string
            try:
                json.loads(self._raw, parse_constant=_refuse_non_json)
                value = self._raw
            except ValueError:
                value = json.dumps(self._raw, ensure_ascii=False)
            self._args(self._key_text() + value)
        self._value_key = None

    def _end_call(self) -> None:
        """The output ended (EOS or a stop): an open value and call are closed, and nothing else is read.
        (A max_tokens cut does not come here: its arguments stay as sent.)"""
        if self.state in (State.VALUE, State.RAW):
            self._end_value()
        self._close_call()
        self.state = State.DONE

    def _close_call(self) -> None:
        call = self._call
        if call is not None and call.index is not None:
            self._args("}" if call.params else "{}")
        self._call = None
