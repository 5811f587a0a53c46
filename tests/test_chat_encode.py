"""Prompt encoding: every golden record byte-identical (ids too, where given), plus the format-as-data rules
the golden files pin only indirectly (effort validation, format selection, tool-call rendering)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from v4stack.chat import (V4, V4_1, V4_FLASH_0731, ChatInputError, encode_messages, format_by_name, format_for_config,
                          format_for_model, load_v4_tokenizer)
from v4stack.chat.golden import check_encode, golden_chat_dir, load_records
from v4stack.chat.messages import ToolCall
from v4stack.chat import dsml

GOLDEN = golden_chat_dir(Path(__file__).parents[1]) or Path("missing")
FILES = {"encode_v4.jsonl": V4, "encode_v4_0731.jsonl": V4_FLASH_0731, "encode_v41.jsonl": V4_1}
CASES = [(name, r) for name in FILES for r in load_records(GOLDEN / name)] if GOLDEN.exists() else []
needs_golden = pytest.mark.skipif(not GOLDEN.exists(), reason="golden chat data not present")
BOS, EOS = V4.bos, V4.eos


@pytest.fixture(scope="module")
def tokenizer():
    return load_v4_tokenizer()


def _encode(record, fmt):
    return encode_messages(record["messages"], record["tools"], fmt=fmt, thinking=record["thinking"],
                           reasoning_effort=record["reasoning_effort"], drop_thinking=record["drop_thinking"])


@needs_golden
@pytest.mark.parametrize("name,record", CASES, ids=[r["id"] for _, r in CASES])
def test_golden_prompt_byte_identical(name, record, tokenizer):
    prompt = _encode(record, FILES[name])
    assert prompt == record["prompt"]
    if record["prompt_ids"] is not None:
        ids = tokenizer.encode(prompt, add_special_tokens=False).ids
        assert ids == record["prompt_ids"]
        assert ids[0] == 0 and ids.count(0) == 1          # BOS from the text, exactly once


@needs_golden
def test_golden_counts_and_checker_agree(tokenizer):
    counts = {n: sum(1 for m, _ in CASES if m == n) for n in FILES}
    assert counts["encode_v4.jsonl"] >= 44 and counts["encode_v4_0731.jsonl"] >= 8 and counts["encode_v41.jsonl"] >= 12
    assert all(check_encode(r, FILES[n], tokenizer).ok for n, r in CASES)
    assert all(r["prompt_ids"] is not None for n, r in CASES if n != "encode_v41.jsonl")   # V4.1: no ids


@needs_golden
def test_checker_reports_a_changed_prompt(tokenizer):
    record = dict(next(r for n, r in CASES if r["id"] == "v4_basic_chat_nosys"))
    record["prompt"] = record["prompt"].replace("Hello", "Hallo")
    result = check_encode(record, V4, tokenizer)
    assert not result.ok and "first difference at char" in result.problems[0]


# --- effort schemes -------------------------------------------------------------------------------------

USER = [{"role": "user", "content": "q"}]


def test_v4_effort_only_max_writes_a_prefix_and_only_in_thinking():
    plain = encode_messages(USER, fmt=V4, thinking=True)
    assert encode_messages(USER, fmt=V4, thinking=True, reasoning_effort="high") == plain
    maxed = encode_messages(USER, fmt=V4, thinking=True, reasoning_effort="max")
    assert maxed.startswith(BOS + "Reasoning Effort: Absolute maximum") and maxed.endswith(plain[len(BOS):])
    assert encode_messages(USER, fmt=V4, thinking=False, reasoning_effort="max") == \
        encode_messages(USER, fmt=V4, thinking=False)


def test_0731_effort_names_shift():
    high = encode_messages(USER, fmt=V4_FLASH_0731, thinking=True, reasoning_effort="high")
    assert high == encode_messages(USER, fmt=V4, thinking=True, reasoning_effort="max")
    assert "Beyond maximum" in encode_messages(USER, fmt=V4_FLASH_0731, thinking=True, reasoning_effort="max")
    assert encode_messages(USER, fmt=V4_FLASH_0731, thinking=True, reasoning_effort="low") == \
        encode_messages(USER, fmt=V4_FLASH_0731, thinking=True)


@pytest.mark.parametrize("effort,level", [(None, 75), ("low", 50), ("high", 75), ("xhigh", 75), ("max", 100),
                                          (1, 1), (100, 100), (42, 42)])
def test_v41_numeric_effort(effort, level):
    prompt = encode_messages(USER, fmt=V4_1, thinking=True, reasoning_effort=effort)
    assert prompt.startswith(f"{BOS}<｜System｜>Reasoning Effort: {level} (range 1-100,")
    assert encode_messages(USER, fmt=V4_1, thinking=False, reasoning_effort=effort) == \
        BOS + "<｜User｜>q<｜Assistant｜></think>"


@pytest.mark.parametrize("fmt,effort", [(V4, "low"), (V4, 3), (V4, "MAX"), (V4_FLASH_0731, "xhigh"),
                                        (V4_1, 0), (V4_1, 101), (V4_1, True), (V4_1, 50.5), (V4_1, "medium")])
def test_unknown_effort_is_refused_in_both_modes(fmt, effort):
    for thinking in (True, False):
        with pytest.raises(ChatInputError, match=r"^reasoning_effort: "):
            encode_messages(USER, fmt=fmt, thinking=thinking, reasoning_effort=effort)


def test_request_mode_defaults():
    assert V4.request_mode(None, None) == (False, None)
    assert V4_FLASH_0731.request_mode(None, None) == (True, "high")      # vLLM 0.32's served default
    assert V4_FLASH_0731.request_mode(True, None) == (True, None)         # explicit thinking: effort unset
    assert V4.request_mode(None, "max") == (True, "max")                 # an effort implies thinking
    with pytest.raises(ChatInputError):
        V4.request_mode(True, "extreme")


# --- format selection -----------------------------------------------------------------------------------

def test_format_for_model_and_config():
    assert format_for_model("DeepseekV4ForCausalLM") is V4
    assert format_for_model("DeepseekV4ForCausalLM", has_dspark=True) is V4_FLASH_0731
    assert format_for_model("DeepseekV41ForCausalLM") is V4_1
    assert format_for_config({"architectures": ["DeepseekV4ForCausalLM"], "dspark_block_size": 8}) is V4_FLASH_0731
    assert format_for_config({"architectures": ["DeepseekV41ForCausalLM"]}) is V4_1
    assert format_for_config({"model_type": "deepseek_v4"}) is V4
    with pytest.raises(ChatInputError, match="architectures"):
        format_for_model("LlamaForCausalLM")
    assert format_by_name("v4.1") is V4_1 and format_by_name("V4-Flash-0731") is V4_FLASH_0731
    with pytest.raises(ChatInputError, match="^format: "):
        format_by_name("v5")


def test_demo_model_config_selects_v4():
    config = json.loads(Path("models/v4-demo-shakespeare/config.json").read_text())
    assert format_for_config(config) is V4


def test_chat_format_validates_itself():
    from v4stack.chat.formats import ChatFormat, NamedEffort
    with pytest.raises(ValueError, match="block_tag"):
        ChatFormat(name="x", effort=NamedEffort({"high": ""}), block_tag="")
    with pytest.raises(ValueError, match="must differ"):
        ChatFormat(name="x", effort=NamedEffort({"high": ""}), invoke_tag=" parameter")
    with pytest.raises(ChatInputError):
        ChatFormat(name="x", effort=NamedEffort({"high": ""}), default_effort="max")


# --- layout rules beyond the visible records ------------------------------------------------------------

def test_tool_results_sort_into_their_slots_and_text_stays():
    calls = [{"id": i, "type": "function", "function": {"name": "f", "arguments": "{}"}} for i in ("a", "b")]
    msgs = [{"role": "user", "content": "go"}, {"role": "assistant", "tool_calls": calls},
            {"role": "tool", "tool_call_id": "b", "content": "B"}, {"role": "user", "content": "text"},
            {"role": "tool", "tool_call_id": "a", "content": "A"}]
    prompt = encode_messages(msgs, fmt=V4, thinking=False)
    assert prompt.endswith("<｜User｜><tool_result>A</tool_result>\n\ntext\n\n<tool_result>B</tool_result>"
                           "<｜Assistant｜></think>")


def test_list_content_and_null_user_content():
    msgs = [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
            {"role": "assistant", "content": "x"}, {"role": "user", "content": None}]
    assert encode_messages(msgs, fmt=V4, thinking=False) == \
        f"{BOS}<｜User｜>a\n\nb<｜Assistant｜></think>x{EOS}<｜User｜><｜Assistant｜></think>"


def test_wo_eos_prefill_and_task_tokens():
    msgs = [{"role": "user", "content": "u"}, {"role": "assistant", "content": "Par", "wo_eos": True}]
    assert encode_messages(msgs, fmt=V4, thinking=False) == f"{BOS}<｜User｜>u<｜Assistant｜></think>Par"
    action = [{"role": "user", "content": "u", "task": "action"}]
    assert encode_messages(action, fmt=V4, thinking=True).endswith("<｜Assistant｜><think><｜action｜>")
    for task in ("authority", "domain", "read_url"):
        prompt = encode_messages([{"role": "user", "content": "u", "task": task}], fmt=V4, thinking=False)
        assert prompt == f"{BOS}<｜User｜>u{V4.task_tokens[task]}"


def test_v41_first_system_is_plain_and_later_system_is_a_turn():
    msgs = [{"role": "system", "content": "S"}, {"role": "user", "content": "u"},
            {"role": "assistant", "content": "a"}, {"role": "system", "content": "T"}]
    assert encode_messages(msgs, fmt=V4_1, thinking=False) == \
        f"{BOS}<｜System｜>S<｜User｜>u<｜Assistant｜></think>a{EOS}<｜System｜>T<｜Assistant｜></think>"
    assert encode_messages(msgs, fmt=V4, thinking=False) == f"{BOS}S<｜User｜>u<｜Assistant｜></think>a{EOS}T"


def test_request_tools_join_message_tools_on_the_first_system():
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
    other = {"type": "function", "function": {"name": "g"}}
    msgs = [{"role": "system", "content": "S", "tools": [other]}, {"role": "user", "content": "u"}]
    prompt = encode_messages(msgs, [tool], fmt=V4, thinking=False)
    assert '### Available Tool Schemas\n\n{"name": "g"}\n{"name": "f", "parameters": {"type": "object"}}\n\n' in prompt


# --- tool-call rendering --------------------------------------------------------------------------------

def test_arguments_rendering_per_format():
    call = ToolCall(name="f", arguments={"a": 1})
    assert 'name="arguments" string="false">{"a": 1}<' in dsml.invoke(V4, call)        # official V4 wraps
    assert '<｜DSML｜ parameter name="a" string="false">1</｜DSML｜ parameter>' in dsml.invoke(V4_1, call)
    double = ToolCall(name="f", arguments=json.dumps(json.dumps({"s": "x"})))
    assert 'name="s" string="true">x<' in dsml.invoke(V4, double)
    for not_object in ("[1, 2]", "not json", '"just a string"'):
        text = dsml.invoke(V4, ToolCall(name="f", arguments=not_object))
        assert f'name="arguments" string="true">{not_object}<' in text


def test_parameter_values():
    p = dsml.parameter
    assert p(V4, "k", 'a"b\n<c>&') == '<｜DSML｜parameter name="k" string="true">a"b\n<c>&</｜DSML｜parameter>'
    assert p(V4, "k", [1, "é", None, True]) == \
        '<｜DSML｜parameter name="k" string="false">[1, "é", null, true]</｜DSML｜parameter>'
