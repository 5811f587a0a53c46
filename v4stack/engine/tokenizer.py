"""The checkpoint's tokenizer (``tokenizer.json`` loaded with the ``tokenizers`` library)."""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import Tokenizer as HFTokenizer

from v4stack.chat.detokenize import IncrementalDetokenizer


class Tokenizer:
    """encode/decode plus the BOS/EOS ids named in ``tokenizer_config.json`` (V4: ids 0 and 1)."""

    def __init__(self, directory: str | Path) -> None:
        directory = Path(directory)
        path = directory / "tokenizer.json"
        if not path.exists():
            raise FileNotFoundError(f"{directory}: no tokenizer.json")
        self._tok = HFTokenizer.from_file(str(path))
        cfg_path = directory / "tokenizer_config.json"
        cfg = json.loads(cfg_path.read_text()) if cfg_path.exists() else {}
        self.bos_id = self._special_id(cfg.get("bos_token"), 0)
        self.eos_id = self._special_id(cfg.get("eos_token"), 1)

    def _special_id(self, token, default: int) -> int:
        if isinstance(token, dict):
            token = token.get("content")
        found = self._tok.token_to_id(token) if token else None
        return default if found is None else found

    def encode(self, text: str, add_bos: bool = True) -> list[int]:
        ids = self._tok.encode(text, add_special_tokens=False).ids
        return [self.bos_id, *ids] if add_bos else ids

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return self._tok.decode(ids, skip_special_tokens=skip_special_tokens)

    def incremental(self, skip_special_tokens: bool = True) -> IncrementalDetokenizer:
        """A detokenizer for one output, token by token (the pieces join to ``decode(ids, skip)``; ids the
        tokenizer lacks give no text, as in decode)."""
        return IncrementalDetokenizer(self._tok, skip_special_tokens, skip_unknown=True)

    def to_json(self) -> str:
        """The tokenizer as tokenizer.json text (what llguidance builds its token trie from)."""
        return self._tok.to_str()

    def token_id(self, token: str) -> int | None:
        """The id of a token spelled exactly (special tokens included), None if the vocabulary lacks it."""
        return self._tok.token_to_id(token)

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=True)
