"""One forward's worth of work: several sequences, each advancing from its own position by any number of
tokens (a prefill from 0, a 1-token decode, a chunk of a long prompt, or several draft tokens).

Tokens of all sequences are flattened to one axis ``T`` for the per-token maths (projections, MoE, mHC);
attention walks the sequences through ``spans``. This object is rebuilt each step and holds no tensors of
the model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from v4stack.model.cache import LayerCache, SequenceState


@dataclass(frozen=True)
class SeqSpan:
    """Rows [begin, end) of the flat token axis belong to one sequence, at positions start_pos.."""

    begin: int
    end: int
    start_pos: int

    @property
    def num_tokens(self) -> int:
        return self.end - self.begin


@dataclass
class ForwardBatch:
    """token_ids/positions [T]; spans: one per sequence; caches[layer][seq]: that layer's LayerCache."""

    token_ids: torch.Tensor
    positions: torch.Tensor
    spans: list[SeqSpan]
    states: list[SequenceState]
    is_mtp: bool = False
    trace: dict | None = None  # when a dict: attention records {(layer, seq): top-k entry ids} (golden tests)
    # when set, CSA attention calls indexer_probe((layer, seq), q [S, H, d], entries [N, d], scores [S, N]):
    # its queries, compressed entries and the indexer's scores, for the indexer's training loss
    indexer_probe: Callable | None = None

    @classmethod
    def build(cls, states: list[SequenceState], chunks: list[torch.Tensor], is_mtp: bool = False,
              trace: dict | None = None, indexer_probe: Callable | None = None) -> "ForwardBatch":
        """chunks[i]: new token ids [S_i] of states[i], starting at its current position."""
        if len(states) != len(chunks) or not states:
            raise ValueError("one token chunk per sequence state is required")
        if len({id(s) for s in states}) != len(states):
            raise ValueError("a sequence may appear only once per forward")
        spans, positions, begin = [], [], 0
        for state, ids in zip(states, chunks):
            if ids.dim() != 1 or ids.numel() == 0:
                raise ValueError("each chunk must be a non-empty 1-D tensor of token ids")
            start = state.num_mtp_tokens if is_mtp else state.num_tokens
            spans.append(SeqSpan(begin, begin + ids.numel(), start))
            positions.append(torch.arange(start, start + ids.numel()))
            begin += ids.numel()
        return cls(torch.cat(chunks).long(), torch.cat(positions), spans, states, is_mtp, trace, indexer_probe)

    def cache(self, seq: int, layer: int) -> LayerCache:
        state = self.states[seq]
        return state.mtp_layers[layer] if self.is_mtp else state.layers[layer]

    def last_token_rows(self) -> torch.Tensor:
        """Flat row index of each sequence's last new token [num_seqs]."""
        return torch.tensor([s.end - 1 for s in self.spans], dtype=torch.long)

    def commit(self) -> None:
        """Advance every sequence's position once all layers have consumed this batch."""
        for state, span in zip(self.states, self.spans):
            if self.is_mtp:
                state.num_mtp_tokens += span.num_tokens
            else:
                state.num_tokens += span.num_tokens
