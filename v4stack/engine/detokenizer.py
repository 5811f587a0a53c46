"""Incremental detokenisation of one output and stop-string detection.

Decoding the whole output every step is quadratic; instead each step decodes the ids from ``prefix_offset``
(the start of the last released piece, kept as context for the tokenizer's merging rules) to the end and takes
what that adds beyond the already-released part. Text is released only
once it is complete UTF-8 (no trailing U+FFFD) and, when stop strings are set, once no stop string can still
start inside it (the last ``max_stop_len - 1`` characters are held back). A stop string ends the output; the
text is cut before it unless ``include_stop_str_in_output``.
"""

from __future__ import annotations

from v4stack.engine.sampling_params import SamplingParams

REPLACEMENT_CHAR = "\ufffd"  # what a decoder yields for an incomplete UTF-8 sequence


class Detokenizer:
    def __init__(self, tokenizer, params: SamplingParams) -> None:
        self.tokenizer, self.params = tokenizer, params
        self.ids: list[int] = []
        self.text = ""  # all decoded text so far (stop string cut applied once found)
        self.emitted = 0  # characters of ``text`` already handed out
        self.prefix_offset = self.read_offset = 0
        self.stop_hit: str | None = None

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=self.params.skip_special_tokens)

    def add(self, token_id: int) -> str | None:
        """Take one generated id; returns the stop string if one completed (the output must end)."""
        self.ids.append(token_id)
        prefix = self._decode(self.ids[self.prefix_offset:self.read_offset])
        full = self._decode(self.ids[self.prefix_offset:])
        if full.endswith(REPLACEMENT_CHAR) or len(full) <= len(prefix):
            return None  # wait for the rest of a multi-byte character (or nothing new yet)
        new = full[len(prefix):]
        self.prefix_offset, self.read_offset = self.read_offset, len(self.ids)
        start = max(0, len(self.text) - self.params.max_stop_len + 1)
        self.text += new
        return self._find_stop(start)

    def _find_stop(self, start: int) -> str | None:
        for stop in self.params.stop:
            at = self.text.find(stop, start)
            if at >= 0:
                end = at + len(stop) if self.params.include_stop_str_in_output else at
                self.text = self.text[:end]
                self.stop_hit = stop
                return stop
        return None

    def flush(self) -> None:
        """The output ended: decode ids still waiting for the rest of a character (they become U+FFFD, as a
        whole decode would have them), unless a stop string already cut the text."""
        if self.stop_hit is None and self.read_offset < len(self.ids):
            prefix = self._decode(self.ids[self.prefix_offset:self.read_offset])
            self.text += self._decode(self.ids[self.prefix_offset:])[len(prefix):]
            self.read_offset = len(self.ids)

    def take_new_text(self, finished: bool) -> str:
        """Text not yet handed out; while unfinished, the tail that could begin a stop string is held back."""
        hold = 0 if finished or self.stop_hit else max(self.params.max_stop_len - 1, 0)
        end = max(self.emitted, len(self.text) - hold)
        piece = self.text[self.emitted:end]
        self.emitted = end
        return piece
