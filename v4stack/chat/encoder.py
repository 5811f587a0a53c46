"""OpenAI-style messages -> the exact DeepSeek-V4 prompt string (generation prefix included).

Layout (golden README section 4; V4.1 differences in section 8)::

    BOS [<｜System｜> (V4.1)] [effort text]
    system           {content}[\\n\\n{tools block}][\\n\\n{response format}]       (V4.1 later ones: <｜System｜>...)
    user / tool      <｜User｜>{part}[\\n\\n{part}...]          parts: text or <tool_result>{content}</tool_result>
    developer        <｜User｜>{content}[\\n\\n{tools block}][\\n\\n{response format}]
    latest_reminder  <｜latest_reminder｜>{content}
    assistant        [{reasoning}</think>]{content}[{tool-call block}]<｜end▁of▁sentence｜>
    opener           <｜Assistant｜> + (<think> | </think>) after a user-like turn that is last or is
                     followed by an assistant or latest_reminder turn

drop_thinking (thinking mode, no tools anywhere): turns before the last user-like turn lose their
reasoning, their openers get ``</think>``, and developer turns before it are removed.

Knows: the layout. Does not know: tokenizers (BOS is in the text; tokenise with add_special_tokens=False).
"""

from __future__ import annotations

from typing import Any, Sequence

from v4stack.chat import dsml
from v4stack.chat.errors import ChatInputError
from v4stack.chat.formats import ASSISTANT_TASKS, OPENER_TASKS, ChatFormat
from v4stack.chat.messages import Turn, attach_tools, merge_turns, validate_messages, validate_tools

TOOL_RESULT_OPEN, TOOL_RESULT_CLOSE = "<tool_result>", "</tool_result>"   # ordinary text, not special tokens
SECTION_SEPARATOR = "\n\n"   # between a message's text, its tools block and its response format
PART_SEPARATOR = "\n\n"      # between the parts of a merged user turn


def _user_like(fmt: ChatFormat, turns: Sequence[Turn], k: int) -> bool:
    """Turns that write the generation opener and bound drop_thinking: user and developer; with a system
    token (V4.1), also a system turn after the first."""
    role = turns[k].role
    return role in ("user", "developer") or (fmt.system_token is not None and role == "system" and k > 0)


def _last_user_like(fmt: ChatFormat, turns: Sequence[Turn]) -> int:
    return max((k for k in range(len(turns)) if _user_like(fmt, turns, k)), default=-1)


def _sections(turn: Turn, fmt: ChatFormat) -> str:
    """A system/developer message's text with its tools block and response format."""
    m = turn.message
    text = m.content
    if m.tools:
        text += SECTION_SEPARATOR + dsml.tools_block(fmt, m.tools)
    if m.response_format is not None:
        text += SECTION_SEPARATOR + dsml.response_format_block(m.response_format)
    return text


def _user_text(turn: Turn) -> str:
    if turn.role != "user":
        return turn.message.content
    return PART_SEPARATOR.join(f"{TOOL_RESULT_OPEN}{p.text}{TOOL_RESULT_CLOSE}" if p.is_tool_result else p.text
                               for p in turn.parts)


class _Renderer:
    """Renders a turn list for one request (the per-request flags live here, not in globals)."""

    def __init__(self, fmt: ChatFormat, turns: list[Turn], thinking: bool, last_user: int) -> None:
        self.fmt, self.turns, self.thinking, self.last_user = fmt, turns, thinking, last_user

    def opener(self, k: int) -> str:
        """What a user-like turn writes after its text: the assistant opener and/or its task token."""
        fmt, task = self.fmt, self.turns[k].message.task
        think = fmt.think_open if self.thinking and k >= self.last_user else fmt.think_close
        if task is not None and task not in OPENER_TASKS:
            return fmt.task_tokens[task]                       # query/authority/domain/read_url: no opener
        is_last = k == len(self.turns) - 1
        if task is None and not is_last and self.turns[k + 1].role not in ("assistant", "latest_reminder"):
            return ""
        return fmt.assistant_token + think + (fmt.task_tokens[task] if task else "")

    def assistant(self, k: int) -> str:
        fmt, m = self.fmt, self.turns[k].message
        after_task = k > 0 and self.turns[k - 1].message.task is not None \
            and self.turns[k - 1].message.task not in ASSISTANT_TASKS
        text = ""
        if self.thinking and k > self.last_user and not after_task:
            text += (m.reasoning or "") + fmt.think_close
        text += m.content
        if m.tool_calls:
            text += dsml.tool_calls_block(fmt, m.tool_calls)
        if not m.wo_eos:
            text += fmt.eos
        if m.task in ASSISTANT_TASKS:
            text += fmt.task_tokens[m.task]
        return text

    def turn(self, k: int) -> str:
        fmt, t = self.fmt, self.turns[k]
        if t.role == "assistant":
            return self.assistant(k)
        if t.role == "latest_reminder":
            return fmt.latest_reminder_token + t.message.content
        if t.role == "system":
            if not _user_like(fmt, self.turns, k):
                return _sections(t, fmt)          # V4 anywhere, V4.1 first: raw text (its token is in the header)
            return fmt.system_token + _sections(t, fmt) + self.opener(k)
        body = _sections(t, fmt) if t.role == "developer" else _user_text(t)
        return fmt.user_token + body + self.opener(k)


def encode_messages(messages: Any, tools: Any = None, *, fmt: ChatFormat, thinking: bool,
                    reasoning_effort: Any = None, drop_thinking: bool = True) -> str:
    """The prompt for ``messages`` (OpenAI format plus the official extension fields) and request-level
    ``tools``. ``thinking``: True = thinking mode (``<think>`` opener), False = chat mode (``</think>``).
    ``reasoning_effort`` follows ``fmt.effort`` (V4: None/"high"/"max"; V4-Flash-0731: None/"low"/"high"/
    "max"; V4.1: None, 1..100 or "low"/"high"/"xhigh"/"max"); it is validated in both modes and written only
    in thinking mode. Raises :class:`~v4stack.chat.errors.ChatInputError` on malformed input."""
    for name, flag in (("thinking", thinking), ("drop_thinking", drop_thinking)):
        if not isinstance(flag, bool):
            raise ChatInputError(name, flag, "true or false")
    effort_text = fmt.effort.prefix(reasoning_effort, thinking)
    turns = merge_turns(attach_tools(validate_messages(messages), validate_tools(tools)))
    drop = thinking and drop_thinking and not any(t.message.tools for t in turns)
    last_user = -1                           # without dropping every turn is "after the last user"
    if drop:
        boundary = _last_user_like(fmt, turns)
        turns = [t for k, t in enumerate(turns) if not (t.role == "developer" and k < boundary)]
        last_user = _last_user_like(fmt, turns)
    header = fmt.bos
    if fmt.system_token is not None and (effort_text or turns[0].role == "system"):
        header += fmt.system_token
    renderer = _Renderer(fmt, turns, thinking, last_user)
    return header + effort_text + "".join(renderer.turn(k) for k in range(len(turns)))
