"""Per-sequence state of a hand-driven V4.1 sequence, and what CSA2 layers hand each other within one forward.

``V41State`` holds what later forwards need (model_spec.md §5.1, V4.1 column):
  window[layer]        raw KV rows of the last W-1 positions                      [<= W-1, d]   every layer
  entries[src]         compressed KV of kv-source layer ``src`` (RoPE + FP4 QAT)  [T // r, d]
  index_keys[src]      its indexer keys (RoPE + FP4 QAT)                          [T // r, d_I]
  open_rows[src]       fp32 (kv, score) rows of its open compression group        [T % r, d] x 2
  engram_history       compressed token ids of the last N-1 positions (Engram hashing)
  draft_window[stage]  DSpark stage window KV filled from the main model          [<= W, d]
It grows with any chunk length from any position, so prefill, decode and chunked prefill share one path.
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


@dataclass
class CSA2Shared:
    """Within one forward: index source layer -> top-k [S, k] (entry ids, -1 = none, ascending);
    candidate source layer -> bool mask [S, N] of the entries inside its candidate blocks."""

    topk: dict[int, torch.Tensor] = field(default_factory=dict)
    candidates: dict[int, torch.Tensor] = field(default_factory=dict)
    trace: dict[int, torch.Tensor] | None = None  # when a dict: index source -> its top-k (golden checks)
    scores: dict[int, torch.Tensor] | None = None  # when a dict: index source -> its masked scores [S, N]
