"""One forward's worth of work: several sequences, each advancing from its own position by any number of
tokens (a prefill from 0, a 1-token decode, a chunk of a long prompt, or several draft tokens).

Tokens of all sequences are flattened to one axis ``T`` for the per-token maths (projections, MoE, mHC);
attention walks the sequences through ``spans`` and reads/writes the paged cache through ``cache``
(a ``CacheView``: slot indices from each sequence's block tables). This object is rebuilt each step and holds
no weights.

Two builders: ``ForwardBatch.build(states, chunks)`` for hand-driven ``SequenceState``s (tests, golden runner,
training; ``commit`` advances them), and ``ForwardBatch.from_cache(...)`` for the engine, whose model runner
allocates blocks and tracks positions itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from v4stack.cache.standalone import SequenceState
from v4stack.cache.tensors import CacheTensors
from v4stack.cache.view import CacheView, SeqCache


@dataclass(frozen=True)
class SeqSpan:
    """Rows [begin, end) of the flat token axis belong to one sequence, at positions start_pos.."""

    begin: int
    end: int
    start_pos: int

    @property
    def num_tokens(self) -> int:
        return self.end - self.begin


def make_spans(starts: list[int], lengths: list[int]) -> tuple[list[SeqSpan], torch.Tensor]:
    """Spans and flat positions [T] for sequences starting at ``starts`` with ``lengths`` new tokens."""
    if any(n <= 0 for n in lengths):
        raise ValueError("each sequence of a forward needs at least one new token")
    if all(n == 1 for n in lengths):  # a decode step: the positions are the starts (one tensor, not B aranges)
        return [SeqSpan(b, b + 1, start) for b, start in enumerate(starts)], torch.tensor(starts, dtype=torch.long)
    spans, positions, begin = [], [], 0
    for start, n in zip(starts, lengths):
        spans.append(SeqSpan(begin, begin + n, start))
        positions.append(torch.arange(start, start + n))
        begin += n
    return spans, torch.cat(positions)


@dataclass
class ForwardBatch:
    """token_ids/positions [T]; spans: one per sequence; cache: where each sequence's rows live."""

    token_ids: torch.Tensor
    positions: torch.Tensor
    spans: list[SeqSpan]
    cache: CacheView
    is_mtp: bool = False
    states: list[SequenceState] = field(default_factory=list)  # hand-driven sequences to advance on commit
    trace: dict | None = None  # when a dict: attention records {(layer, seq): top-k entry ids} (golden tests)
    # token ids just before each span (at most the model's ``history_tokens``): V4.1's Engram hashing reads them
    history: list[list[int]] | None = None
    # values derived once per forward and shared by every layer (``Rotary.begin_step``'s phases); rebuilt each step
    memo: dict = field(default_factory=dict)

    @classmethod
    def build(cls, states: list[SequenceState], chunks: list[torch.Tensor], is_mtp: bool = False,
              trace: dict | None = None) -> "ForwardBatch":
        """chunks[i]: new token ids [S_i] of states[i], starting at its current position."""
        if len(states) != len(chunks) or not states:
            raise ValueError("one token chunk per sequence state is required")
        if len({id(s) for s in states}) != len(states):
            raise ValueError("a sequence may appear only once per forward")
        if len({id(s.cache) for s in states}) != 1:
            raise ValueError("all sequences of a forward must live in one cache")
        for ids in chunks:
            if ids.dim() != 1 or ids.numel() == 0:
                raise ValueError("each chunk must be a non-empty 1-D tensor of token ids")
        starts = [s.num_mtp_tokens if is_mtp else s.num_tokens for s in states]
        lengths = [ids.numel() for ids in chunks]
        cache = states[0].cache
        for state, start, n in zip(states, starts, lengths):
            cache.ensure(state.seq, start + n)
        batch = cls.from_cache(cache.tensors, [s.seq for s in states], starts, torch.cat(chunks), lengths, is_mtp,
                               trace)
        batch.states = list(states)
        return batch

    @classmethod
    def from_cache(cls, tensors: CacheTensors, seqs: list[SeqCache], starts: list[int], token_ids: torch.Tensor,
                   lengths: list[int], is_mtp: bool = False, trace: dict | None = None) -> "ForwardBatch":
        """A forward over sequences whose blocks are already allocated for positions start .. start+length-1."""
        spans, positions = make_spans(starts, lengths)
        return cls(token_ids.long(), positions, spans, CacheView(tensors, seqs, spans, is_mtp), is_mtp, trace=trace)

    def positions_on(self, device: torch.device) -> torch.Tensor:
        """``positions`` [T] on ``device``, moved once per forward (every layer gets the same tensor object, which
        is what lets them share the rotary phases in ``memo``)."""
        key = ("positions", device)
        moved = self.memo.get(key)
        if moved is None:
            moved = self.memo[key] = self.positions.to(device)
        return moved

    def last_token_rows(self) -> torch.Tensor:
        """Flat row index of each sequence's last new token [num_seqs]."""
        return torch.tensor([s.end - 1 for s in self.spans], dtype=torch.long)

    def commit(self) -> None:
        """Advance every hand-driven sequence's position once all layers have consumed this batch."""
        for state, span in zip(self.states, self.spans):
            if self.is_mtp:
                state.num_mtp_tokens += span.num_tokens
            else:
                state.num_tokens += span.num_tokens
