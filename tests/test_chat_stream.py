"""Streaming: the deltas of any split of a completion add up to the non-streaming parse, text is never taken
back, no marker reaches reasoning or content, and tool calls arrive in the OpenAI streaming shape."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from v4stack.chat import (V4, ContentDelta, FinishDelta, IncrementalDetokenizer, ReasoningDelta, StreamParser,
                          ToolCallDelta, aggregate, load_v4_tokenizer, parse_completion)
from v4stack.chat.golden import counter_ids, engine_reason, golden_chat_dir, load_records, stream_parse

GOLDEN_DIR = golden_chat_dir(Path(__file__).parents[1])
GOLDEN = (GOLDEN_DIR / "parse_v4.jsonl") if GOLDEN_DIR else Path("missing")
RECORDS = load_records(GOLDEN) if GOLDEN.exists() else []
needs_golden = pytest.mark.skipif(not GOLDEN.exists(), reason="golden chat data not present")
EOS = V4.eos
BLOCK = ('\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name="f">\n<｜DSML｜parameter name="a" string="true">x<y'
         '</｜DSML｜parameter>\n<｜DSML｜parameter name="n" string="false">1</｜DSML｜parameter>\n'
         '</｜DSML｜invoke>\n'
         '</｜DSML｜tool_calls>')


@pytest.fixture(scope="module")
def tokenizer():
    return load_v4_tokenizer()


def _whole(text, thinking, reason):
    return parse_completion(text, fmt=V4, thinking=thinking, finish_reason=reason, new_call_id=counter_ids())


def _check_stream(pieces, thinking, reason, whole):
    """Feeds ``pieces``; asserts the no-take-back, no-leak and shape invariants on the way; returns the
    aggregate."""
    parser = StreamParser(V4, thinking, new_call_id=counter_ids())
    deltas = []
    for piece in pieces:
        deltas += parser.feed(piece)
        so_far = aggregate(deltas)
        assert whole.content.startswith(so_far.content) and whole.reasoning_content.startswith(so_far.reasoning_content)
    deltas += parser.finish(reason)
    for d in deltas:
        if isinstance(d, (ContentDelta, ReasoningDelta)):
            assert d.text and not any(tok in d.text for tok in V4.forbidden_in_text)
    started = set()
    for d in (d for d in deltas if isinstance(d, ToolCallDelta)):
        assert d.is_start == (d.index not in started) and (d.id is None) == (d.name is None)
        assert not d.is_start or d.arguments == ""
        started.add(d.index)
    assert isinstance(deltas[-1], FinishDelta) and not any(isinstance(d, FinishDelta) for d in deltas[:-1])
    return aggregate(deltas)


@needs_golden
@pytest.mark.parametrize("record", RECORDS, ids=[r["id"] for r in RECORDS])
def test_token_by_token_and_every_split_equal_the_whole(record, tokenizer):
    text, thinking = record["completion"], record["thinking"]
    reason = engine_reason(V4, text)
    whole = _whole(text, thinking, reason)
    detok = IncrementalDetokenizer(tokenizer)
    pieces = [detok.push(i) for i in record["completion_ids"]] + [detok.flush()]
    assert "".join(pieces) == text
    assert _check_stream(pieces, thinking, reason, whole) == whole
    assert _check_stream(list(text), thinking, reason, whole) == whole
    for k in range(len(text) + 1):
        assert aggregate(stream_parse([text[:k], text[k:]], V4, thinking, reason)) == whole, k


@needs_golden
def test_every_prefix_parses_without_leaks():
    for record in RECORDS:
        for k in range(len(record["completion"]) + 1):
            got = _whole(record["completion"][:k], record["thinking"], "length")
            assert not any(tok in t for t in (got.content, got.reasoning_content) for tok in V4.forbidden_in_text)


@pytest.mark.parametrize("before", ["", "x\n\n\n"])
def test_every_pair_of_split_points_around_a_dsml_block(before):
    """3-way splits: the first cut anywhere in the text before/at the block's start, the second anywhere."""
    text = "r</think>" + before + BLOCK + EOS
    whole = _whole(text, True, "stop")
    assert whole.content == before                    # the block's own "\n\n" is not content
    assert [(c.name, c.arguments) for c in whole.tool_calls] == [("f", '{"a": "x<y", "n": 1}')]
    start = text.index(BLOCK)
    for i in range(start - 2, start + 24):
        for j in range(i, len(text) + 1):
            assert _check_stream([text[:i], text[i:j], text[j:]], True, "stop", whole) == whole, (i, j)


def test_held_back_text_waits_for_the_next_piece():
    p = StreamParser(V4, thinking=True, new_call_id=counter_ids())
    assert p.feed("thought") == [ReasoningDelta("thought")]
    assert p.feed("</th") == []                                   # could be </think>
    assert p.feed("ink>Hello") == [ContentDelta("Hello")]
    assert p.feed("\n\n") == []                                   # could start a tool block
    assert p.feed("<") == []
    assert p.feed("｜DSML｜tool_calls>\n") == []                  # the separator went with the block
    assert p.feed('<｜DSML｜invoke name="f">') == [ToolCallDelta(0, "", id="call_0", name="f")]
    assert p.feed('\n<｜DSML｜parameter name="a" string="true">val') == [ToolCallDelta(0, '{"a": "val')]
    assert p.feed("ue\nmore<") == [ToolCallDelta(0, 'ue\\nmore')]    # value streamed, "<" held back
    assert p.feed("</｜DSML｜parameter>") == [ToolCallDelta(0, '<"')]
    assert p.feed("\n</｜DSML｜invoke>") == [ToolCallDelta(0, "}")]
    assert p.feed("\n</｜DSML｜tool_calls>" + EOS + "ignored") == []
    assert p.finish("stop") == [FinishDelta("tool_calls")]


def test_plain_text_that_only_looks_like_a_marker_start_is_released():
    p = StreamParser(V4, thinking=False)
    assert p.feed("a <") == [ContentDelta("a ")]
    assert p.feed("b") == [ContentDelta("<b")]
    assert p.feed("\n") == []
    assert p.finish("length") == [ContentDelta("\n"), FinishDelta("length")]


def test_one_parser_per_choice_is_independent():
    a, b = StreamParser(V4, thinking=True), StreamParser(V4, thinking=False)
    out_a, out_b = [], []
    for x, y in zip(["r1", "</think>", "A"], ["B", "<think>", "rb"]):
        out_a += a.feed(x)
        out_b += b.feed(y)
    out_a += a.finish()
    out_b += b.finish()
    assert (aggregate(out_a).reasoning_content, aggregate(out_a).content) == ("r1", "A")
    assert (aggregate(out_b).reasoning_content, aggregate(out_b).content) == ("rb", "B")


FUZZ_PIECES = ["a", " ", "\n", "\n\n", "<", ">", "/", '"', "=", "｜", "DSML", "<｜DSML｜", "</｜DSML｜",
               "｜DSML｜",
               "tool_calls", "invoke", "parameter", ' name="x"', ' name="y"', ' string="true"', ' string="false"',
               ">\n", "</think>", "<think>", EOS, V4.bos, "{", "1", "é", "💡", "<tool_result>", '"}']


def test_fuzz_never_raises_never_leaks_and_is_split_invariant():
    rng = random.Random(4)
    for _ in range(400):
        text = "".join(rng.choice(FUZZ_PIECES) for _ in range(rng.randrange(0, 40)))
        thinking, reason = rng.random() < 0.5, rng.choice(["stop", "length"])
        whole = _whole(text, thinking, reason)
        cuts = sorted(rng.randrange(len(text) + 1) for _ in range(rng.randrange(1, 6)))
        pieces = [text[i:j] for i, j in zip([0, *cuts], [*cuts, len(text)])]
        assert _check_stream(pieces, thinking, reason, whole) == whole, text
        assert _check_stream(list(text), thinking, reason, whole) == whole, text


# --- incremental detokenisation --------------------------------------------------------------------------

def test_detokenizer_waits_for_complete_utf8(tokenizer):
    text = "a 💡é😀 日本" + EOS
    ids = tokenizer.encode(text, add_special_tokens=False).ids
    detok = IncrementalDetokenizer(tokenizer)
    pieces = [detok.push(i) for i in ids]
    assert "".join(pieces) + detok.flush() == text == tokenizer.decode(ids, skip_special_tokens=False)
    assert "" in pieces and "\ufffd" not in "".join(pieces)           # some token ended mid-character
    broken = IncrementalDetokenizer(tokenizer)
    first_emoji_piece = next(i for i in ids if broken.push(i) == "" )
    assert first_emoji_piece is not None and broken.flush() == "\ufffd"


def test_detokenizer_unknown_id(tokenizer):
    with pytest.raises(ValueError, match="not in the vocabulary"):
        IncrementalDetokenizer(tokenizer).push(10**7)
