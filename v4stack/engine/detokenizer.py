"""Incremental detokenisation of one output and stop-string detection.

Each generated id becomes text through the tokenizer's incremental detokenizer (``tokenizer.incremental``,
``chat/detokenize.py``: byte-level pieces through an incremental UTF-8 decoder, so the text is released only
once a character is complete and the pieces join to ``decode(ids)``). When stop strings are set, the last
``max_stop_len - 1`` characters are held back (a stop string could still start inside them). A stop string
ends the output; the text is cut before it unless ``include_stop_str_in_output``.
"""

from __future__ import annotations

from v4stack.engine.sampling_params import SamplingParams


class Detokenizer:
    def __init__(self, tokenizer, params: SamplingParams) -> None:
        self.params = params
        self._pieces = tokenizer.incremental(params.skip_special_tokens)
        self.text = ""  # all decoded text so far (stop string cut applied once found)
        self.emitted = 0  # characters of ``text`` already handed out
        self.stop_hit: str | None = None

    def add(self, token_id: int) -> str | None:
        """Take one generated id; returns the stop string if one completed (the output must end)."""
        new = self._pieces.push(token_id)
        if not new:
            return None  # the rest of a multi-byte character is still to come (or a skipped special token)
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
        """The output ended: bytes still waiting for the rest of a character become U+FFFD (as a whole decode
        would have them), unless a stop string already cut the text."""
        if self.stop_hit is None:
            self.text += self._pieces.flush()

    def take_new_text(self, finished: bool) -> str:
        """Text not yet handed out; while unfinished, the tail that could begin a stop string is held back."""
        hold = 0 if finished or self.stop_hit else max(self.params.max_stop_len - 1, 0)
        end = max(self.emitted, len(self.text) - hold)
        piece = self.text[self.emitted:end]
        self.emitted = end
        return piece
