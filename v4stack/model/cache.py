"""Per-sequence decode state of the V4 hybrid attention, kept explicit so an engine can page it later.

One ``LayerCache`` per attention layer (backbone and MTP) of one sequence holds (model_spec.md §5.1):
  * ``window``      [W, head_dim] ring of raw (QAT'd, roped) KV rows; slot = position mod W;
  * ``compressed``  [T // r, head_dim] compressed KV entries (ratio r > 0 layers);
  * ``index_keys``  [T // 4, index_head_dim] indexer keys (CSA layers);
  * ``compressor`` / ``index_compressor``: the raw (kv, score) rows of the open compression group (and,
    for the overlapping ratio-4 compressor, of the last complete group), fp32.
The model owns no per-sequence state; everything it reads or writes between forwards lives here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


class GrowingRows:
    """An append-only [n, width] tensor with amortised O(1) appends (capacity doubles)."""

    def __init__(self, width: int, dtype: torch.dtype, device: torch.device | str = "cpu") -> None:
        self._data = torch.empty(0, width, dtype=dtype, device=device)
        self.num_rows = 0

    def append(self, rows: torch.Tensor) -> None:
        needed = self.num_rows + rows.shape[0]
        if needed > self._data.shape[0]:
            grown = torch.empty(max(needed, 2 * self._data.shape[0], 16), self._data.shape[1],
                                dtype=self._data.dtype, device=self._data.device)
            grown[: self.num_rows] = self._data[: self.num_rows]
            self._data = grown
        self._data[self.num_rows:needed] = rows
        self.num_rows = needed

    def view(self) -> torch.Tensor:
        return self._data[: self.num_rows]


@dataclass
class CompressorState:
    """Raw rows not yet pooled: kv/score [n, coff*d] fp32 for positions first_pos .. first_pos + n - 1.

    ``score`` already includes the learned position-in-group bias ``ape``.
    """

    kv: torch.Tensor
    score: torch.Tensor
    first_pos: int = 0

    @classmethod
    def empty(cls, width: int, device: torch.device | str) -> "CompressorState":
        return cls(torch.empty(0, width, device=device), torch.empty(0, width, device=device), 0)


@dataclass
class LayerCache:
    """Everything one attention layer remembers about one sequence."""

    window: torch.Tensor  # [W, head_dim], slot = pos % W
    compressed: GrowingRows | None = None
    index_keys: GrowingRows | None = None
    compressor: CompressorState | None = None
    index_compressor: CompressorState | None = None

    def window_rows(self, start_pos: int, count: int) -> torch.Tensor:
        """The cached raw rows of positions start_pos - count .. start_pos - 1, in position order."""
        size = self.window.shape[0]
        slots = torch.arange(start_pos - count, start_pos, device=self.window.device) % size
        return self.window[slots]

    def write_window(self, rows: torch.Tensor, start_pos: int) -> None:
        """Store rows [S, head_dim] of positions start_pos .. start_pos + S - 1 (only the last W survive)."""
        size = self.window.shape[0]
        keep = rows[-size:]
        first = start_pos + rows.shape[0] - keep.shape[0]
        slots = torch.arange(first, first + keep.shape[0], device=self.window.device) % size
        self.window[slots] = keep


@dataclass
class SequenceState:
    """All caches of one sequence; ``num_tokens`` positions have been processed by the backbone."""

    layers: list[LayerCache]
    mtp_layers: list[LayerCache] = field(default_factory=list)
    num_tokens: int = 0
    num_mtp_tokens: int = 0
