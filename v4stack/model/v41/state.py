"""Per-sequence state of a hand-driven V4.1 sequence, and what CSA2 layers hand each other within one forward.

``V41State`` holds what later forwards need (model_spec.md §5.1, V4.1 column):
  window[layer]        raw KV rows of the last W-1 positions                      [<= W-1, d]   every layer
  entries[src]         compressed KV of kv-source layer ``src`` (RoPE + FP4 QAT)  [T // r, d]
  index_keys[src]      its indexer keys (RoPE + FP4 QAT)                          [T // r, d_I]
  open_rows[src]       fp32 (kv, score) rows of its open compression group        [T % r, d] x 2
  engram_history       compressed token ids of the last N-1 positions (Engram hashing)
  draft_window[stage]  DSpark stage window KV filled from the main model          [<= W, d]
It grows with any chunk length from any position, so prefill, decode and chunked prefill share one path.
The layers reach these rows only through the storage methods below (``prior_window`` .. ``keep_open_group``);
``model/v41/paged.py: PagedV41State`` implements the same methods over the engine's paged cache, so one
attention and compressor code path serves hand-driven sequences and the engine.
``CSA2Shared`` is rebuilt every forward: top-k selections of index sources and the candidate mask of the
candidate source, read by later layers of the same forward.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class V41State:
    num_tokens: int = 0
    window: dict[int, torch.Tensor] = field(default_factory=dict)
    entries: dict[int, torch.Tensor] = field(default_factory=dict)
    index_keys: dict[int, torch.Tensor] = field(default_factory=dict)
    open_rows: dict[int, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)
    engram_history: torch.Tensor = field(default_factory=lambda: torch.empty(0, dtype=torch.int64))
    draft_window: dict[int, torch.Tensor] = field(default_factory=dict)
    num_draft_tokens: int = 0  # main positions whose hidden state has been written to the draft windows

    # ---- storage interface of the layers (PagedV41State has the same methods) ----------------------
    def prior_window(self, layer: int, like: torch.Tensor) -> torch.Tensor:
        """Raw rows of the (at most W-1) positions before num_tokens [n, d]; ``like`` [S, d] gives dtype/device."""
        return self.window.get(layer, like[:0])

    def keep_window(self, layer: int, prior: torch.Tensor, rows: torch.Tensor, keep: int) -> None:
        """After a forward: prior + the new raw rows [S, d] of positions num_tokens.., the last ``keep`` kept."""
        self.window[layer] = torch.cat([prior, rows])[-keep:].detach()

    def num_entries(self, src: int) -> int:
        """Compressed entries kv source ``src`` has stored so far."""
        have = self.entries.get(src)
        return 0 if have is None else have.shape[0]

    def extend_source(self, src: int, entries: torch.Tensor, keys: torch.Tensor) -> None:
        """Append entries [n, d] and index keys [n, d_I] (entry ids num_entries(src)..) of kv source ``src``."""
        have, old_keys = self.entries.get(src), self.index_keys.get(src)
        self.entries[src] = entries if have is None else torch.cat([have, entries])
        self.index_keys[src] = keys if old_keys is None else torch.cat([old_keys, keys])

    def source(self, src: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(every compressed entry [N, d], every index key [N, d_I]) of kv source ``src``."""
        return self.entries[src], self.index_keys[src]

    def open_group(self, layer: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        """fp32 (kv, score) rows [num_tokens % r, d] of the compressor's open group (None: nothing kept)."""
        return self.open_rows.get(layer)

    def keep_open_group(self, layer: int, kv: torch.Tensor, score: torch.Tensor) -> None:
        """The open group after a forward: rows [n, d] of positions num_tokens + S - n .. (n < r)."""
        self.open_rows[layer] = (kv.detach(), score.detach())


@dataclass
class CSA2Shared:
    """Within one forward: index source layer -> top-k [S, k] (entry ids, -1 = none, ascending);
    candidate source layer -> bool mask [S, N] of the entries inside its candidate blocks."""

    topk: dict[int, torch.Tensor] = field(default_factory=dict)
    candidates: dict[int, torch.Tensor] = field(default_factory=dict)
    trace: dict[int, torch.Tensor] | None = None  # when a dict: index source -> its top-k (golden checks)
    scores: dict[int, torch.Tensor] | None = None  # when a dict: index source -> its masked scores [S, N]
