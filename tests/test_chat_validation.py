"""Malformed chat requests: each raises ChatInputError (a ValueError / ParameterError) whose one-line message
starts with the JSON path of the bad field, which is also its ``param``."""

from __future__ import annotations

import pytest

from v4stack.chat import V4, V4_1, ChatInputError, encode_messages
from v4stack.config.validation import ParameterError

CALL = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
U = {"role": "user", "content": "hi"}


def _err(messages, tools=None, fmt=V4, **kw) -> ChatInputError:
    kw.setdefault("thinking", False)
    with pytest.raises(ChatInputError) as info:
        encode_messages(messages, tools, fmt=fmt, **kw)
    exc = info.value
    assert isinstance(exc, ValueError) and isinstance(exc, ParameterError)
    assert "\n" not in str(exc) and str(exc).startswith(exc.param + ": ")
    return exc


@pytest.mark.parametrize("messages,param", [
    ([], "messages"),
    ("hello", "messages"),
    ([U, "not a message"], "messages[1]"),
    ([{"role": "robot", "content": "x"}], "messages[0].role"),
    ([{"content": "x"}], "messages[0].role"),
    ([{"role": "user"}], "messages[0].content"),
    ([{"role": "system", "content": None}, U], "messages[0].content"),
    ([{"role": "developer"}], "messages[0].content"),
    ([{"role": "latest_reminder", "content": 3}, U], "messages[0].content"),
    ([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}], "messages[0].content[0].type"),
    ([{"role": "user", "content": [{"type": "text"}]}], "messages[0].content[0].text"),
    ([{"role": "user", "content": ["raw"]}], "messages[0].content[0]"),
    ([U, {"role": "assistant", "reasoning_content": 5}], "messages[1].reasoning_content"),
    ([U, {"role": "assistant", "content": "x", "wo_eos": "yes"}], "messages[1].wo_eos"),
])
def test_bad_message_fields(messages, param):
    assert _err(messages).param == param


@pytest.mark.parametrize("messages,param", [
    ([{"role": "tool", "content": "r"}], "messages[0].role"),                              # answers nothing
    ([U, {"role": "assistant", "content": "no calls"}, {"role": "tool", "content": "r"}], "messages[2].role"),
    ([U, {"role": "assistant", "tool_calls": [CALL]}, {"role": "tool", "tool_call_id": "zz", "content": "r"}],
     "messages[2].tool_call_id"),
    ([U, {"role": "assistant", "tool_calls": [CALL]}, {"role": "tool", "tool_call_id": "c1"}], "messages[2].content"),
    ([U, {"role": "assistant", "tool_calls": [CALL]}, {"role": "tool", "tool_call_id": 7, "content": "r"}],
     "messages[2].tool_call_id"),
])
def test_tool_result_without_a_matching_call(messages, param):
    exc = _err(messages)
    assert exc.param == param
    if param.endswith("tool_call_id") and exc.value == "zz":
        assert "'c1'" in str(exc)                       # names the ids it could have been


def test_tool_results_matched_by_order_are_accepted():
    no_id = {"type": "function", "function": {"name": "f", "arguments": "{}"}}
    for call, result in ((no_id, {"role": "tool", "content": "r"}),
                         (CALL, {"role": "tool", "content": "r"}),                      # result without id
                         (no_id, {"role": "tool", "tool_call_id": "any", "content": "r"})):
        encode_messages([U, {"role": "assistant", "tool_calls": [call]}, result], fmt=V4, thinking=False)


@pytest.mark.parametrize("calls,param", [
    ("f()", "messages[1].tool_calls"),
    (["f"], "messages[1].tool_calls[0]"),
    ([{"type": "code", "function": {"name": "f"}}], "messages[1].tool_calls[0].type"),
    ([{"type": "function"}], "messages[1].tool_calls[0].function"),
    ([{"type": "function", "function": {"name": ""}}], "messages[1].tool_calls[0].function.name"),
    ([{"type": "function", "function": {"name": "f", "arguments": 3}}], "messages[1].tool_calls[0].function.arguments"),
    ([{"id": 5, "type": "function", "function": {"name": "f"}}], "messages[1].tool_calls[0].id"),
])
def test_bad_tool_calls(calls, param):
    assert _err([U, {"role": "assistant", "tool_calls": calls}]).param == param


@pytest.mark.parametrize("tools,param", [
    ({"name": "f"}, "tools"),
    (["f"], "tools[0]"),
    ([{"type": "retrieval"}], "tools[0].type"),
    ([{"type": "function"}], "tools[0].function"),
    ([{"type": "function", "function": {"description": "no name"}}], "tools[0].function.name"),
    ([{"type": "function", "function": {"name": "f", "parameters": "object"}}], "tools[0].function.parameters"),
    ([{"type": "function", "function": {"name": "f", "description": 1}}], "tools[0].function.description"),
    ([TOOL, TOOL], "tools[1].function.name"),
    ([{"type": "function", "function": {"name": "f", "parameters": {"enum": {1, 2}}}}], "tools[0].function"),
])
def test_bad_tool_schemas(tools, param):
    assert _err([U], tools).param == param


def test_bad_message_level_tools_and_response_format():
    assert _err([{"role": "developer", "content": "d", "tools": [{"type": "function"}]}]).param == \
        "messages[0].tools[0].function"
    assert _err([{"role": "user", "content": "u", "tools": [TOOL]}]).param == "messages[0].tools"
    assert _err([{"role": "system", "content": "s", "response_format": "json"}, U]).param == \
        "messages[0].response_format"


@pytest.mark.parametrize("message,param", [
    ({"role": "user", "content": "u", "task": "summarise"}, "messages[0].task"),
    ({"role": "user", "content": "u", "task": "title"}, "messages[0].task"),
    ({"role": "system", "content": "s", "task": "query"}, "messages[0].task"),
])
def test_bad_tasks(message, param):
    assert _err([message]).param == param
    assert _err([U, {"role": "assistant", "content": "a", "task": "query"}]).param == "messages[1].task"


def test_bad_request_flags():
    assert _err([U], thinking="yes").param == "thinking"
    assert _err([U], drop_thinking=None).param == "drop_thinking"
    assert _err([U], fmt=V4_1, thinking=True, reasoning_effort=0).param == "reasoning_effort"


def test_long_values_are_elided_in_the_message():
    exc = _err([{"role": "robot" * 100, "content": "x"}])
    assert len(str(exc)) < 300 and "..." in str(exc)


def test_unknown_extra_fields_are_ignored():
    prompt = encode_messages([{"role": "user", "content": "u", "name": "bob", "mask": 1}], fmt=V4, thinking=False)
    assert prompt == "<｜begin▁of▁sentence｜><｜User｜>u<｜Assistant｜></think>"
