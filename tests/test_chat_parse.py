"""Completion parsing: the golden parse records (official result where it exists, the documented lenient
reading where the official parser raises), the official-rules parser, and round trips through the encoder."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest

from v4stack.chat import (V4, V4_1, OfficialFormatError, ParsedMessage, StreamParser, ToolCallDelta, parse_completion,
                          parse_official)
from v4stack.chat import dsml
from v4stack.chat.golden import comparable, counter_ids, golden_chat_dir, leaks, load_records
from v4stack.chat.messages import ToolCall

GOLDEN_DIR = golden_chat_dir(Path(__file__).parents[1])
GOLDEN = (GOLDEN_DIR / "parse_v4.jsonl") if GOLDEN_DIR else Path("missing")
RECORDS = load_records(GOLDEN) if GOLDEN.exists() else []
needs_golden = pytest.mark.skipif(not GOLDEN.exists(), reason="golden chat data not present")
EOS = V4.eos

# Where the official parser raises, our reading (docs/chat.md) of these records equals vLLM 0.32's ...
SAME_AS_VLLM = {"p4_truncated_content_chat", "p4_truncated_content_think", "p4_bad_missing_string_attr",
                "p4_bad_text_after_block", "p4_bad_call_inside_reasoning", "p4_bad_think_tag_in_chat",
                "p4_bad_two_blocks", "p4_bad_variant_block_name", "p4_bad_ws_after_block",
                "p4_bad_bare_close_think_chat"}
# ... and differs from it on purpose in these:
LENIENT_DIFFERS_FROM_VLLM = {
    # vLLM leaks the partial tag into content; we never let DSML markup into content
    "p4_partial_dsml_prefix_in_content": {"reasoning_content": "", "content": "Result: a", "tool_calls": []},
    # vLLM keeps the last duplicate (and its stream disagrees with itself); the first one wins here, so a
    # streamed value never has to be taken back
    "p4_bad_duplicate_param": {"reasoning_content": "", "content": "",
                               "tool_calls": [{"name": "get_weather", "arguments": '{"location": "A"}'}]},
}


def _parse(record, **kw) -> ParsedMessage:
    reason = "stop" if EOS in record["completion"] else "length"
    return parse_completion(record["completion"], fmt=V4, thinking=record["thinking"], finish_reason=reason,
                            new_call_id=counter_ids(), **kw)


def _json_view(d: dict) -> dict:
    """arguments compared as parsed JSON (vLLM re-serialises them)."""
    return {**d, "tool_calls": [{"name": c["name"], "arguments": json.loads(c["arguments"])} for c in d["tool_calls"]]}


@needs_golden
@pytest.mark.parametrize("record", RECORDS, ids=[r["id"] for r in RECORDS])
def test_golden_parse(record):
    got = _parse(record)
    assert leaks(V4, got) == []
    if record["expected"] is not None:
        assert comparable(got) == record["expected"]                       # arguments byte for byte
        assert comparable(parse_official(record["completion"], fmt=V4, thinking=record["thinking"])) == \
            record["expected"]
        return
    with pytest.raises(OfficialFormatError) as info:                       # the official rules agree it is bad
        parse_official(record["completion"], fmt=V4, thinking=record["thinking"])
    official = record["official_error"].split(": ", 1)[1].lower().split(": '")[0]
    assert official in str(info.value).lower()                             # ... for the same reason
    if record["id"] in LENIENT_DIFFERS_FROM_VLLM:
        assert comparable(got) == LENIENT_DIFFERS_FROM_VLLM[record["id"]]
        assert _json_view(comparable(got)) != _json_view(record["vllm"])
    elif record["id"] in SAME_AS_VLLM:
        assert _json_view(comparable(got)) == _json_view(record["vllm"])


@needs_golden
def test_golden_parse_counts():
    assert len(RECORDS) >= 30
    bad = {r["id"] for r in RECORDS if r["expected"] is None}
    known = SAME_AS_VLLM | set(LENIENT_DIFFERS_FROM_VLLM)
    assert len(known) == 12 and bad >= known


@needs_golden
def test_finish_reasons():
    by_id = {r["id"]: r for r in RECORDS}
    assert _parse(by_id["p4_think_basic"]).finish_reason == "stop"
    assert _parse(by_id["p4_parallel_three"]).finish_reason == "tool_calls"
    assert _parse(by_id["p4_truncated_content_chat"]).finish_reason == "length"
    assert parse_completion("x", fmt=V4, thinking=False, finish_reason="stop").finish_reason == "stop"
    with pytest.raises(ValueError):
        parse_completion("x", fmt=V4, thinking=False, finish_reason="tool_calls")


# --- lenient readings beyond the golden records ---------------------------------------------------------

def _block(*invokes: str) -> str:
    return "\n\n<｜DSML｜tool_calls>\n" + "\n".join(invokes) + "\n</｜DSML｜tool_calls>"


def _invoke(name: str, *params: str) -> str:
    return f'<｜DSML｜invoke name="{name}">\n' + "\n".join(params) + "\n</｜DSML｜invoke>"


def _param(key: str, value: str, string: str | None = "true") -> str:
    attr = f' string="{string}"' if string is not None else ""
    return f'<｜DSML｜parameter name="{key}"{attr}>{value}</｜DSML｜parameter>'


def _calls(text: str, thinking=False, reason="stop"):
    got = parse_completion(text, fmt=V4, thinking=thinking, finish_reason=reason, new_call_id=counter_ids())
    return got, [(c.name, c.arguments) for c in got.tool_calls]


def test_truncated_inside_a_value_keeps_what_was_streamed():
    text = _block(_invoke("f", _param("a", "x"), _param("b", "partial value")))
    cut = text[:text.index("value")]
    got, calls = _calls(cut, reason="length")
    assert calls == [("f", '{"a": "x", "b": "partial ')] and got.finish_reason == "length"
    for ended in (cut + EOS, cut):                 # EOS, or a stop string: the model is done, so it is closed
        got, calls = _calls(ended, reason="stop")
        assert calls == [("f", '{"a": "x", "b": "partial "}')] and got.finish_reason == "tool_calls"
    raw_cut = _block(_invoke("f", _param("n", "12", "false")))
    raw_cut = raw_cut[:raw_cut.index("12") + 1]
    assert _calls(raw_cut + EOS)[1] == [("f", '{"n": 1}')]
    assert _calls(raw_cut, reason="length")[1] == [("f", "")]     # an unfinished raw value is never sent


def test_stop_between_parameters_closes_the_call_but_length_does_not():
    text = '\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name="f">\n' + _param("a", "1", "false") + "\n"
    assert _calls(text + EOS)[1] == [("f", '{"a": 1}')]
    assert _calls(text, reason="length")[1] == [("f", '{"a": 1')]


def test_nameless_invoke_and_stray_parameters_are_dropped():
    text = "\n\n<｜DSML｜tool_calls>\n" + _param("lost", "1") + "\n<｜DSML｜invoke>\n" + _param("x", "2") + \
        "\n</｜DSML｜invoke>\n" + _invoke("g", _param("k", "v")) + "\n</｜DSML｜tool_calls>" + EOS
    got, calls = _calls(text)
    assert calls == [("g", '{"k": "v"}')] and got.tool_calls[0].id == "call_0"


def test_parameter_without_or_with_odd_string_attribute_is_guessed():
    text = _block(_invoke("f", _param("n", "42", None), _param("s", "Paris", None), _param("o", "[1]", "yes"),
                          _param("x", "NaN", None))) + EOS
    assert _calls(text)[1] == [("f", '{"n": 42, "s": "Paris", "o": [1], "x": "NaN"}')]


def test_missing_parameter_close_ends_the_value_at_the_next_tag():
    text = '\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name="f">\n<｜DSML｜parameter name="a" string="true">x\n' \
           '</｜DSML｜invoke>\n</｜DSML｜tool_calls>' + EOS
    assert _calls(text)[1] == [("f", '{"a": "x\\n"}')]


def test_markers_in_text_are_absorbed():
    got, _ = _calls("a<｜begin▁of▁sentence｜>b</think>c<think>r1</think>d" + EOS + "after eos")
    assert (got.reasoning_content, got.content) == ("r1", "abcd")
    got, _ = _calls("r<think>s</think>t", thinking=True)
    assert (got.reasoning_content, got.content) == ("rs", "t")


def test_think_tags_inside_a_string_value_are_kept_like_the_official_parser():
    text = _block(_invoke("f", _param("a", "<think>x</think>"))) + EOS
    assert _calls(text)[1] == [("f", '{"a": "<think>x</think>"}')]
    assert [(c.name, c.arguments) for c in parse_official(text, fmt=V4, thinking=False).tool_calls] == \
        [("f", '{"a": "<think>x</think>"}')]


def test_v41_spelling_parses_with_either_format():
    text = '\n\n<｜DSML｜ calls>\n<｜DSML｜ invoke name="f">\n<｜DSML｜ parameter name="a" string="false">1' \
           '</｜DSML｜ parameter>\n</｜DSML｜ invoke>\n</｜DSML｜ calls>' + EOS
    for fmt in (V4_1, V4):
        got = parse_completion(text, fmt=fmt, thinking=False)
        assert [(c.name, c.arguments) for c in got.tool_calls] == [("f", '{"a": 1}')] and got.content == ""
    assert parse_official(text, fmt=V4_1, thinking=False).tool_calls[0].arguments == '{"a": 1}'
    with pytest.raises(OfficialFormatError):
        parse_official(text, fmt=V4, thinking=False)


def test_openai_shapes():
    text = "ok" + _block(_invoke("f", _param("a", "x"))) + EOS
    got = parse_completion(text, fmt=V4, thinking=False, new_call_id=lambda: "call_x")
    assert got.to_openai() == {"role": "assistant", "content": "ok", "reasoning_content": None, "tool_calls": [
        {"id": "call_x", "type": "function", "function": {"name": "f", "arguments": '{"a": "x"}'}}]}
    only_call = parse_completion(_block(_invoke("f")) + EOS, fmt=V4, thinking=False).to_openai()
    assert only_call["content"] is None and re.fullmatch(r"call_[0-9a-f]{24}", only_call["tool_calls"][0]["id"])
    assert ToolCallDelta(0, "", id="c", name="f").to_openai() == \
        {"index": 0, "id": "c", "type": "function", "function": {"name": "f", "arguments": ""}}
    assert ToolCallDelta(0, '{"a').to_openai() == {"index": 0, "function": {"arguments": '{"a'}}


def test_parser_misuse_is_a_programming_error():
    p = StreamParser(V4, thinking=False)
    p.finish()
    with pytest.raises(RuntimeError):
        p.feed("x")
    with pytest.raises(RuntimeError):
        p.finish()
    with pytest.raises(TypeError):
        StreamParser(V4, thinking=False).feed(b"bytes")


# --- round trips: encoder's DSML -> parser --------------------------------------------------------------

VALUE_PIECES = ["a", "Z", " ", "\n", '"', "\\", "<", ">", "&", "é", "日本", "💡", "{", "}", "\t", "/", "'",
                "</tool_result>", "=", "１２"]


def _random_value(rng: random.Random, depth: int = 0):
    kind = rng.randrange(7 if depth < 2 else 5)
    if kind == 0:
        return "".join(rng.choice(VALUE_PIECES) for _ in range(rng.randrange(0, 12)))
    if kind == 1:
        return rng.randrange(-10**6, 10**6)
    if kind == 2:
        return rng.choice([True, False, None])
    if kind == 3:
        return rng.choice([0.5, -3.25, 1e-7, 12345.678])
    if kind == 4:
        return rng.choice(["", "x", "<", "\n\n"])
    if kind == 5:
        return [_random_value(rng, depth + 1) for _ in range(rng.randrange(0, 4))]
    return {f"k{i}": _random_value(rng, depth + 1) for i in range(rng.randrange(0, 3))}


@pytest.mark.parametrize("fmt", [V4, V4_1], ids=["V4", "V4.1"])
def test_round_trip_through_the_encoder(fmt):
    rng = random.Random(20260731)
    for _ in range(150):
        calls = [ToolCall(name=rng.choice(["f", "get_weather", "weather.lookup-v2_é"]),
                          arguments=json.dumps({f"p{i}": _random_value(rng) for i in range(rng.randrange(0, 4))},
                                               ensure_ascii=rng.random() < 0.5))
                 for _ in range(rng.randrange(1, 4))]
        content = rng.choice(["", "Let me check.", "a\n", "x < y"])
        reasoning = rng.choice(["", "think\n\nmore"])
        thinking = rng.random() < 0.5
        text = (reasoning + fmt.think_close if thinking else "") + content + dsml.tool_calls_block(fmt, calls)
        text += EOS if rng.random() < 0.8 else ""
        got = parse_completion(text, fmt=fmt, thinking=thinking)
        official = parse_official(text, fmt=fmt, thinking=thinking)
        assert comparable(got) == comparable(official)
        assert (got.reasoning_content, got.content) == ((reasoning if thinking else ""), content)
        assert [(c.name, json.loads(c.arguments)) for c in got.tool_calls] == \
            [(c.name, json.loads(c.arguments)) for c in calls]
