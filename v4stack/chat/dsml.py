"""DSML, the tool-call markup of DeepSeek-V4: the tools block of the system prompt and the tool-call blocks of
assistant turns, written exactly as the model was trained to read and emit them (golden README section 5).

::

    \\n\\n<｜DSML｜tool_calls>\\n
    <｜DSML｜invoke name="NAME">\\n
    <｜DSML｜parameter name="KEY" string="true">RAW STRING</｜DSML｜parameter>\\n
    <｜DSML｜parameter name="KEY2" string="false">JSON</｜DSML｜parameter>\\n
    </｜DSML｜invoke>\\n
    </｜DSML｜tool_calls>

Invokes and parameters are joined by ``\\n``; an invoke without parameters has one empty line. V4.1 spells
the tag names `` calls`` / `` invoke`` / `` parameter`` (all spellings come from the :class:`ChatFormat`).

Knows: the markup and how arguments become parameters. Does not know: messages or parsing.
"""

from __future__ import annotations

import json
from typing import Any, Sequence

from v4stack.chat.formats import ChatFormat
from v4stack.chat.messages import ToolCall

# How many times a JSON string argument may be decoded: once normally, twice for a double-encoded
# string ("\"{...}\"", which V4.1's encoder accepts and some clients send).
MAX_ARGUMENT_DECODES = 2
# The parameter name used when arguments cannot be split into keys (official V4 encoder).
WRAPPED_ARGUMENTS_KEY = "arguments"


def tools_block(fmt: ChatFormat, functions: Sequence[dict]) -> str:
    """The ``## Tools`` section appended to a system or developer message (after a blank line)."""
    block, invoke, param = fmt.block_tag, fmt.invoke_tag, fmt.parameter_tag
    example = "\n".join([
        fmt.open_tag(block),
        fmt.open_tag(invoke, ' name="$TOOL_NAME"'),
        fmt.open_tag(param, ' name="$PARAMETER_NAME" string="true|false"') + "$PARAMETER_VALUE"
        + fmt.close_tag(param),
        "...",
        fmt.close_tag(invoke),
        fmt.open_tag(invoke, ' name="$TOOL_NAME2"'),
        "...",
        fmt.close_tag(invoke),
        fmt.close_tag(block)])
    schemas = "\n".join(json.dumps(fn, ensure_ascii=False) for fn in functions)
    return (
        "## Tools\n\n"
        "You have access to a set of tools to help answer the user's question. You can invoke tools by writing "
        f'a "{fmt.open_tag(block)}" block like the following:\n\n'
        f"{example}\n\n"
        'String parameters should be specified as is and set `string="true"`. For all other types (numbers, '
        'booleans, arrays, objects), pass the value in JSON format and set `string="false"`.\n\n'
        f"If thinking_mode is enabled (triggered by {fmt.think_open}), you MUST output your complete reasoning "
        f"inside {fmt.think_open}...{fmt.think_close} BEFORE any tool calls or final response.\n\n"
        f"Otherwise, output directly after {fmt.think_close} with tool calls or final response.\n\n"
        "### Available Tool Schemas\n\n"
        f"{schemas}\n\n"
        "You MUST strictly follow the above defined tool name and parameter schemas to invoke tool calls.\n")


def response_format_block(response_format: Any) -> str:
    """The ``## Response Format`` section (its JSON exactly as given, key order kept)."""
    return ("## Response Format:\n\nYou MUST strictly adhere to the following schema to reply:\n"
            + json.dumps(response_format, ensure_ascii=False))


def argument_items(fmt: ChatFormat, arguments: str | dict) -> list[tuple[str, Any]]:
    """The (key, value) parameters of one call.

    A JSON object string gives its keys (a double-encoded one is decoded twice). Text that is not a JSON
    object becomes one string parameter ``arguments`` holding the raw text (official V4 encoder). A dict
    gives its keys, or, with ``fmt.wrap_dict_arguments`` (V4), one non-string ``arguments`` parameter."""
    if isinstance(arguments, dict):
        return [(WRAPPED_ARGUMENTS_KEY, arguments)] if fmt.wrap_dict_arguments else list(arguments.items())
    value: Any = arguments
    for _ in range(MAX_ARGUMENT_DECODES):
        try:
            value = json.loads(value)
        except (TypeError, ValueError):
            break
        if not isinstance(value, str):
            break
    if isinstance(value, dict):
        return list(value.items())
    return [(WRAPPED_ARGUMENTS_KEY, arguments)]


def parameter(fmt: ChatFormat, key: str, value: Any) -> str:
    """One parameter line: strings raw (nothing escaped) with ``string="true"``, anything else as JSON."""
    if isinstance(value, str):
        body, is_string = value, "true"
    else:
        body, is_string = json.dumps(value, ensure_ascii=False), "false"
    return (fmt.open_tag(fmt.parameter_tag, f' name="{key}" string="{is_string}"') + body
            + fmt.close_tag(fmt.parameter_tag))


def invoke(fmt: ChatFormat, call: ToolCall) -> str:
    params = [parameter(fmt, k, v) for k, v in argument_items(fmt, call.arguments)]
    return (fmt.open_tag(fmt.invoke_tag, f' name="{call.name}"') + "\n" + "\n".join(params) + "\n"
            + fmt.close_tag(fmt.invoke_tag))


def tool_calls_block(fmt: ChatFormat, calls: Sequence[ToolCall]) -> str:
    """The block after an assistant turn's content, its leading ``\\n\\n`` separator included."""
    return ("\n\n" + fmt.open_tag(fmt.block_tag) + "\n" + "\n".join(invoke(fmt, c) for c in calls) + "\n"
            + fmt.close_tag(fmt.block_tag))
