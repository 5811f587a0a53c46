"""OpenAI-style request messages -> validated, typed messages; then the turn structure the encoder writes.

Two steps, both pure:

* :func:`validate_messages` checks every field a request may carry (roles, content shapes, tool calls,
  tool results, tool schemas, official extension fields) and raises :class:`ChatInputError` naming the
  first bad field. Unknown extra fields are ignored (clients send ``name``, ``mask``, ...).
* :func:`merge_turns` attaches request-level tools to the first system message (inserting an empty one
  at index 0 when there is none), merges tool results and directly following user messages into one user
  turn, and orders the tool results of a turn by the calls of the preceding assistant message.

Knows: the request shapes and the merge rules (golden README section 3, 4). Does not know: any prompt text.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Any, Mapping, Sequence

from v4stack.chat.errors import ChatInputError
from v4stack.chat.formats import ASSISTANT_TASKS, TASK_TOKENS

ROLES = ("system", "user", "assistant", "tool", "developer", "latest_reminder")
TEXT_ROLES = ("system", "developer", "latest_reminder")      # content required, a string or text parts
TOOL_HOLDERS = ("system", "developer")                       # roles that may carry tools / response_format
# List-form content is flattened by joining its text parts with a blank line (vLLM's reading; the
# official V4 encoder takes only strings for users and joins list-form tool content the same way).
PART_SEPARATOR = "\n\n"


@dataclass(frozen=True)
class ToolCall:
    """One assistant tool call from the history; ``arguments`` as given (a JSON string, or a dict)."""

    name: str
    arguments: str | dict
    id: str | None = None


@dataclass(frozen=True)
class Message:
    """A validated request message. ``content`` is flattened text ("" when absent)."""

    role: str
    content: str
    index: int                                   # position in the request, for error messages
    reasoning: str | None = None                 # assistant history (reasoning_content)
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None              # tool results
    tools: tuple[dict, ...] = ()                 # function objects (the "function" field of each tool)
    response_format: Any = None
    task: str | None = None
    wo_eos: bool = False                         # assistant prefill: no EOS after it


@dataclass(frozen=True)
class Part:
    """One piece of a user turn: plain text, or a tool result (written as ``<tool_result>...``)."""

    text: str
    is_tool_result: bool = False
    call_id: str | None = None


@dataclass(frozen=True)
class Turn:
    """One rendered unit: a message, except that user turns hold the merged parts of consecutive
    user / tool messages."""

    message: Message
    parts: tuple[Part, ...] = field(default=())

    @property
    def role(self) -> str:
        return self.message.role


# --- validation -------------------------------------------------------------------------------------------

def _text(value: Any, where: str, *, allow_null: bool) -> str:
    """A content field as text: a string, or a list of {"type": "text", "text": ...} parts."""
    if value is None and allow_null:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)):
        texts = []
        for j, part in enumerate(value):
            if not isinstance(part, Mapping):
                raise ChatInputError(f"{where}[{j}]", part, 'a content part object {"type": "text", "text": ...}')
            if part.get("type", "text") != "text":
                raise ChatInputError(f"{where}[{j}].type", part.get("type"), "'text' (this model reads text only)")
            if not isinstance(part.get("text"), str):
                raise ChatInputError(f"{where}[{j}].text", part.get("text"), "a string")
            texts.append(part["text"])
        return PART_SEPARATOR.join(texts)
    raise ChatInputError(where, value, "a string or a list of text parts" + (" or null" if allow_null else ""))


def _json_dumpable(value: Any, where: str) -> None:
    try:
        json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise ChatInputError(where, value, f"JSON-serialisable data ({exc})") from None


def validate_tools(tools: Any, where: str = "tools") -> tuple[dict, ...]:
    """OpenAI tools (``[{"type": "function", "function": {"name", "description", "parameters"}}]``) ->
    their function objects, in order. None or [] -> ()."""
    if tools is None:
        return ()
    if not isinstance(tools, (list, tuple)):
        raise ChatInputError(where, tools, "a list of tools")
    functions, names = [], set()
    for i, tool in enumerate(tools):
        at = f"{where}[{i}]"
        if not isinstance(tool, Mapping):
            raise ChatInputError(at, tool, 'a tool object {"type": "function", "function": {...}}')
        if tool.get("type", "function") != "function":
            raise ChatInputError(f"{at}.type", tool.get("type"), "'function'")
        fn = tool.get("function")
        if not isinstance(fn, Mapping):
            raise ChatInputError(f"{at}.function", fn, "an object with a name")
        if not isinstance(fn.get("name"), str) or not fn["name"]:
            raise ChatInputError(f"{at}.function.name", fn.get("name"), "a non-empty string")
        if fn["name"] in names:
            raise ChatInputError(f"{at}.function.name", fn["name"], "a name not used by another tool")
        names.add(fn["name"])
        if "description" in fn and fn["description"] is not None and not isinstance(fn["description"], str):
            raise ChatInputError(f"{at}.function.description", fn["description"], "a string")
        if "parameters" in fn and fn["parameters"] is not None and not isinstance(fn["parameters"], Mapping):
            raise ChatInputError(f"{at}.function.parameters", fn["parameters"], "a JSON Schema object")
        _json_dumpable(fn, f"{at}.function")
        functions.append(dict(fn))
    return tuple(functions)


def _tool_calls(value: Any, where: str) -> tuple[ToolCall, ...]:
    if value is None:
        return ()
    if not isinstance(value, (list, tuple)):
        raise ChatInputError(where, value, "a list of tool calls")
    calls = []
    for j, call in enumerate(value):
        at = f"{where}[{j}]"
        if not isinstance(call, Mapping):
            raise ChatInputError(at, call, 'a tool call {"type": "function", "function": {"name", "arguments"}}')
        if call.get("type", "function") != "function":
            raise ChatInputError(f"{at}.type", call.get("type"), "'function'")
        fn = call.get("function")
        if not isinstance(fn, Mapping):
            raise ChatInputError(f"{at}.function", fn, "an object with name and arguments")
        if not isinstance(fn.get("name"), str) or not fn["name"]:
            raise ChatInputError(f"{at}.function.name", fn.get("name"), "a non-empty string")
        arguments = fn.get("arguments", "{}")
        if not isinstance(arguments, (str, Mapping)):
            raise ChatInputError(f"{at}.function.arguments", arguments, "a JSON string")
        if isinstance(arguments, Mapping):
            _json_dumpable(arguments, f"{at}.function.arguments")
            arguments = dict(arguments)
        call_id = call.get("id")
        if call_id is not None and not isinstance(call_id, str):
            raise ChatInputError(f"{at}.id", call_id, "a string")
        calls.append(ToolCall(name=fn["name"], arguments=arguments, id=call_id or None))
    return tuple(calls)


def _task(msg: Mapping, role: str, where: str) -> str | None:
    task = msg.get("task")
    if task is None:
        return None
    if task not in TASK_TOKENS:
        raise ChatInputError(where, task, "null or one of " + ", ".join(repr(t) for t in TASK_TOKENS))
    if (task in ASSISTANT_TASKS) != (role == "assistant") or role not in ("user", "developer", "assistant"):
        allowed = "'title' (the only assistant task)" if role == "assistant" else \
            "a user/developer task: " + ", ".join(repr(t) for t in TASK_TOKENS if t not in ASSISTANT_TASKS)
        raise ChatInputError(where, task, allowed)
    return task


def _one(msg: Any, i: int) -> Message:
    at = f"messages[{i}]"
    if not isinstance(msg, Mapping):
        raise ChatInputError(at, msg, 'a message object {"role": ..., "content": ...}')
    role = msg.get("role")
    if role not in ROLES:
        raise ChatInputError(f"{at}.role", role, "one of " + ", ".join(repr(r) for r in ROLES))
    fields: dict[str, Any] = {"role": role, "index": i}
    if role in TEXT_ROLES or role == "tool":
        if "content" not in msg:
            raise ChatInputError(f"{at}.content", None, f"a string (required for role {role!r})")
        fields["content"] = _text(msg["content"], f"{at}.content", allow_null=False)
    elif role == "user":
        if "content" not in msg:
            raise ChatInputError(f"{at}.content", None, "a string (required for role 'user')")
        fields["content"] = _text(msg["content"], f"{at}.content", allow_null=True)   # null -> "" (README 3)
    else:  # assistant: content optional when there are tool calls or reasoning
        fields["content"] = _text(msg.get("content"), f"{at}.content", allow_null=True)
        reasoning = msg.get("reasoning_content", msg.get("reasoning"))
        if reasoning is not None and not isinstance(reasoning, str):
            raise ChatInputError(f"{at}.reasoning_content", reasoning, "a string or null")
        fields["reasoning"] = reasoning
        fields["tool_calls"] = _tool_calls(msg.get("tool_calls"), f"{at}.tool_calls")
        wo_eos = msg.get("wo_eos", False)
        if not isinstance(wo_eos, bool):
            raise ChatInputError(f"{at}.wo_eos", wo_eos, "true or false")
        fields["wo_eos"] = wo_eos
    if role == "tool":
        call_id = msg.get("tool_call_id")
        if call_id is not None and not isinstance(call_id, str):
            raise ChatInputError(f"{at}.tool_call_id", call_id, "a string")
        fields["tool_call_id"] = call_id or None
    for key in ("tools", "response_format"):
        if msg.get(key) is not None and role not in TOOL_HOLDERS:
            raise ChatInputError(f"{at}.{key}", msg[key], f"absent on role {role!r} (only system and developer)")
    if role in TOOL_HOLDERS:
        fields["tools"] = validate_tools(msg.get("tools"), f"{at}.tools")
        if msg.get("response_format") is not None:
            if not isinstance(msg["response_format"], Mapping):
                raise ChatInputError(f"{at}.response_format", msg["response_format"], "a JSON object")
            _json_dumpable(msg["response_format"], f"{at}.response_format")
            fields["response_format"] = msg["response_format"]
    fields["task"] = _task(msg, role, f"{at}.task")
    return Message(**fields)


def _check_tool_results(messages: Sequence[Message]) -> None:
    """Each tool result must answer a call of the most recent assistant message; when that message's calls
    carry ids, a given ``tool_call_id`` must be one of them (a result without an id is matched by order)."""
    last_assistant: Message | None = None
    for m in messages:
        if m.role == "assistant":
            last_assistant = m
        elif m.role == "tool":
            at = f"messages[{m.index}]"
            if last_assistant is None or not last_assistant.tool_calls:
                raise ChatInputError(f"{at}.role", "tool", "a tool message only after an assistant message "
                                                           "with tool_calls")
            ids = [c.id for c in last_assistant.tool_calls if c.id]
            if m.tool_call_id is not None and ids and m.tool_call_id not in ids:
                raise ChatInputError(f"{at}.tool_call_id", m.tool_call_id,
                                     f"the id of a call in messages[{last_assistant.index}]: "
                                     + ", ".join(repr(x) for x in ids))


def validate_messages(messages: Any) -> list[Message]:
    """Request ``messages`` -> typed messages; raises :class:`ChatInputError` on the first bad field."""
    if not isinstance(messages, (list, tuple)) or not messages:
        raise ChatInputError("messages", messages, "a non-empty list of messages")
    out = [_one(m, i) for i, m in enumerate(messages)]
    _check_tool_results(out)
    return out


# --- turn structure ---------------------------------------------------------------------------------------

def attach_tools(messages: list[Message], tools: tuple[dict, ...]) -> list[Message]:
    """Request-level tools go to the first system message (after its own tools); with no system message
    an empty one is inserted at index 0 (golden README section 3)."""
    if not tools:
        return messages
    for k, m in enumerate(messages):
        if m.role == "system":
            return [*messages[:k], replace(m, tools=m.tools + tools), *messages[k + 1:]]
    return [Message(role="system", content="", index=-1, tools=tools), *messages]


def _ordered(parts: list[Part], call_order: Mapping[str, int]) -> list[Part]:
    """Tool results re-sorted (stably) into the order of their calls, in the slots tool results occupy;
    text parts stay where they are. An id not in the calls sorts as position 0."""
    results = [p for p in parts if p.is_tool_result]
    if len(results) < 2 or not call_order:
        return parts
    ordered = iter(sorted(results, key=lambda p: call_order.get(p.call_id or "", 0)))
    return [next(ordered) if p.is_tool_result else p for p in parts]


def merge_turns(messages: Sequence[Message]) -> list[Turn]:
    """Consecutive user / tool messages -> one user turn of parts; other messages -> one turn each.

    A user or tool message joins the previous user turn unless that turn carries a task (the task token
    closes it); the merged turn keeps the first message's index and takes a later message's task. The tool
    results of a turn are ordered by the calls of the most recent assistant message with tool calls."""
    turns: list[Turn] = []
    orders: list[Mapping[str, int]] = []          # per turn: call id -> position, for user turns
    call_order: dict[str, int] = {}
    for m in messages:
        if m.role == "assistant" and m.tool_calls:
            call_order = {c.id: k for k, c in enumerate(m.tool_calls) if c.id}
        if m.role not in ("user", "tool"):
            turns.append(Turn(m))
            orders.append({})
            continue
        part = Part(m.content, is_tool_result=m.role == "tool", call_id=m.tool_call_id)
        prev = turns[-1] if turns else None
        if prev is not None and prev.role == "user" and prev.message.task is None:
            head = replace(prev.message, task=m.task) if m.task else prev.message
            turns[-1] = Turn(head, (*prev.parts, part))
        else:
            head = m if m.role == "user" else Message(role="user", content="", index=m.index)
            turns.append(Turn(head, (part,)))
            orders.append(call_order)
    return [Turn(t.message, tuple(_ordered(list(t.parts), order))) if t.role == "user" else t
            for t, order in zip(turns, orders)]
