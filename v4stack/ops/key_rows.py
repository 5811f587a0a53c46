"""One sequence's attention keys as segments read in place: rows of a dense tensor, or rows of a cache pool named by
slot indices, never joined into one [N, d] tensor unless an op asks for it.

A CSA layer at a 32K prompt attends to its window and chunk rows plus ~8,200 compressed entries, a 1M prompt to
~262,000 (512 wide): joining them copies each layer's whole compressed cache once per layer call (2 B per dim per
entry, 640 MiB at 1M for V4-Flash). The fast ``sparse_attention`` reads a context slice of ``rows(lo, hi)`` at a
time instead, so its memory is bounded by the slice; an op that needs the whole matrix calls ``as_tensor``, which
builds exactly ``torch.cat`` of the segments (same values, same dtype promotion), filled in one allocation.

    keys = KeyRows([(window_and_chunk, None), (pool, slots), (fresh_entries, None)])
    keys.shape -> (N, d); keys.rows(0, 2048) -> [2048, d]; as_tensor(keys) -> [N, d]
"""

from __future__ import annotations

import torch


class KeyRows:
    """Segments ``(tensor, slots)``: ``slots`` None takes every row of ``tensor`` [n_i, d]; else the rows
    ``tensor[slots]`` (slots [n_i] int64). The logical matrix is the segments one after another."""

    def __init__(self, parts: list[tuple[torch.Tensor, torch.Tensor | None]]) -> None:
        self.parts = [(t, s) for t, s in parts if (t.shape[0] if s is None else s.shape[0]) > 0]
        if not self.parts:
            self.parts = [parts[0]]
        self.sizes = [t.shape[0] if s is None else s.shape[0] for t, s in self.parts]
        width = {t.shape[1] for t, _ in self.parts}
        if len(width) != 1:
            raise ValueError(f"key segments of different widths {sorted(width)}")
        self.dtype = self.parts[0][0].dtype
        for t, _ in self.parts[1:]:
            self.dtype = torch.promote_types(self.dtype, t.dtype)
        self.device = self.parts[0][0].device
        self.shape = torch.Size((sum(self.sizes), width.pop()))

    def rows(self, lo: int, hi: int) -> torch.Tensor:
        """Rows lo..hi-1 of the logical matrix -> [hi - lo, d] (a view where they lie in one dense segment)."""
        pieces, base = [], 0
        for (t, slots), size in zip(self.parts, self.sizes):
            a, b = max(lo, base) - base, min(hi, base + size) - base
            if a < b:
                pieces.append(t[a:b] if slots is None else t.index_select(0, slots[a:b]))
            base += size
        if len(pieces) == 1 and pieces[0].dtype == self.dtype:
            return pieces[0]
        return torch.cat(pieces) if pieces else torch.empty(0, self.shape[1], dtype=self.dtype, device=self.device)

    def full(self) -> torch.Tensor:
        """The whole matrix [N, d] in one allocation: ``torch.cat`` of the segments."""
        out = torch.empty(self.shape, dtype=self.dtype, device=self.device)
        base = 0
        for (t, slots), size in zip(self.parts, self.sizes):
            if slots is None:
                out[base:base + size] = t
            elif t.dtype == self.dtype:
                torch.index_select(t, 0, slots, out=out[base:base + size])
            else:
                out[base:base + size] = t.index_select(0, slots)
            base += size
        return out


def as_tensor(kv: torch.Tensor | KeyRows) -> torch.Tensor:
    """``kv`` itself when it is a tensor, else the joined matrix of its segments."""
    return kv.full() if isinstance(kv, KeyRows) else kv


def read_rows(kv: torch.Tensor | KeyRows, lo: int, hi: int) -> torch.Tensor:
    """Rows lo..hi-1 of a tensor (a view) or of a :class:`KeyRows`."""
    return kv.rows(lo, hi) if isinstance(kv, KeyRows) else kv[lo:hi]
