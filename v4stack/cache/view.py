"""One forward's window onto the paged cache: which rows each sequence reads and writes, as slot indices.

The engine (or a standalone sequence) hands the model a ``SeqCache`` per sequence: its block table per pool
group and its compressor-state slot. ``CacheView`` turns those and the batch's spans (rows [begin, end) of the
flat token axis at positions start..) into slot tensors, memoised for the forward, so every layer of a group
reuses them. The model never sees block ids; the engine never sees tensors.

Slot rules (block size B, ``e`` entries per block, ``rows`` rows per state slot):
  raw row of position p                 table["window"][p // B] * B + p % B
  entry j of a ratio-r pool (e = B/r)   table[group][j // e] * e + j % e
  compressor ring row of position p     state_slot * rows + p % rows
  compressor tail of boundary P = kB    table["c4"][k - 1] * 4 + (0..3)   (rows P-4 .. P-1)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from v4stack.cache.specs import CSA_RATIO
from v4stack.cache.tensors import CacheTensors

NO_BLOCK = -1  # a block-table entry released (sliding window) or not yet allocated


@dataclass
class SeqCache:
    """What one sequence holds in the cache: block ids per pool group (index = block number) and the slot of
    its compressor state. Filled by whoever allocates (engine cache manager or standalone allocator)."""

    block_tables: dict[str, list[int]] = field(default_factory=dict)
    state_slot: int = 0


def _slots(table: list[int], per_block: int, lo: int, hi: int) -> torch.Tensor:
    """Slots of entries lo..hi-1 of one sequence in a pool with ``per_block`` entries per block."""
    j = torch.arange(lo, hi)
    blocks = torch.tensor(table, dtype=torch.long)[j // per_block] if hi > lo else j
    if hi > lo and bool((blocks < 0).any()):
        raise RuntimeError(f"cache entries {lo}..{hi - 1} reach a block that is not allocated")
    return blocks * per_block + j % per_block


class CacheView:
    """Slot indices for one forward over ``seqs`` (one per span); ``is_mtp``: the MTP block's forward."""

    def __init__(self, tensors: CacheTensors, seqs: list[SeqCache], spans, is_mtp: bool = False) -> None:
        self.tensors, self.seqs, self.spans, self.is_mtp = tensors, seqs, spans, is_mtp
        self.block_size = tensors.specs.block_size
        self.pure_decode = all(sp.num_tokens == 1 for sp in spans)  # every span is one token: a decode step
        self._memo: dict = {}

    @property
    def window_group(self) -> str:
        return "mtp_window" if self.is_mtp else "window"

    def _memoised(self, key, make):
        if key not in self._memo:
            self._memo[key] = make()
        return self._memo[key]

    def entries_per_block(self, group: str, name: str = "kv") -> int:
        spec = self.tensors.specs.pool(group)
        return next(t.entries_per_block for t in spec.tensors if t.name == name)

    @property
    def decode(self) -> "DecodeView":
        """The forward's 1-token spans as padded slot tensors (``cache.decode_view``), built once."""
        from v4stack.cache.decode_view import DecodeView  # it builds on this module

        return self._memoised("decode", lambda: DecodeView(self))

    # ---- raw window rows --------------------------------------------------------------------------
    def window_write_slots(self) -> torch.Tensor:
        """[T] slot of each new token's raw row, in flat token order."""
        g = self.window_group
        if self.pure_decode:  # one gather over the decode view's tables
            return self._memoised(("ww", g), lambda: self.decode.own_row_slots())
        return self._memoised(("ww", g), lambda: torch.cat([
            _slots(s.block_tables[g], self.block_size, sp.start_pos, sp.start_pos + sp.num_tokens)
            for s, sp in zip(self.seqs, self.spans)]))

    def window_prior_slots(self, i: int, count: int) -> torch.Tensor:
        """Slots of the ``count`` cached raw rows before sequence i's first new position."""
        sp, g = self.spans[i], self.window_group
        return self._memoised(("wp", g, i, count), lambda: _slots(
            self.seqs[i].block_tables[g], self.block_size, sp.start_pos - count, sp.start_pos))

    # ---- compressed entries (c4: compressed KV and indexer keys share one table; c128) ------------
    def entry_slots(self, group: str, i: int, lo: int, hi: int) -> torch.Tensor:
        per = self.entries_per_block(group)
        return self._memoised(("e", group, i, lo, hi), lambda: _slots(self.seqs[i].block_tables[group], per, lo, hi))

    # ---- compressor state rings -------------------------------------------------------------------
    def state_slots(self, state: str, i: int, lo: int, hi: int) -> torch.Tensor:
        """Ring rows of positions lo..hi-1 of sequence i in state ``state``."""
        rows = next(s.rows for s in self.tensors.specs.states if s.name == state)
        return self._memoised(("s", state, i, lo, hi), lambda: (
            self.seqs[i].state_slot * rows + torch.arange(lo, hi) % rows))

    def ring(self, state: str, layer: int, seq: int, tail_prefix: str | None = None) -> "StateRing":
        """Access to the compressor ring ``state`` of ``layer`` for sequence ``seq`` (and its c4 tails)."""
        return StateRing(self, state, layer, seq, tail_prefix)

    # ---- prefix-cache extras ----------------------------------------------------------------------
    def has_tails(self) -> bool:
        """Whether the cache keeps c4 block tails (prefix caching); read by every compressor call."""
        def make():
            specs = self.tensors.specs
            return specs.has_pool("c4") and any(t.name == "tail_kv" for t in specs.pool("c4").tensors)
        return self._memoised("has_tails", make)

    def tail_targets(self, i: int) -> list[tuple[int, torch.Tensor]]:
        """Block boundaries P crossed by sequence i's new tokens, each with the tail slots [4] of the c4 block
        that ends there (rows of positions P-4..P-1)."""
        sp, b = self.spans[i], self.block_size
        first = sp.start_pos // b + 1
        last = (sp.start_pos + sp.num_tokens) // b
        table = self.seqs[i].block_tables["c4"]
        return [(k * b, table[k - 1] * CSA_RATIO + torch.arange(CSA_RATIO)) for k in range(first, last + 1)]

    def hidden_targets(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(flat token rows, mtp_window 'hidden' slots) of the new tokens that end a block: their final streams
        are kept so that a prefix hit can rerun the MTP row of the block's last position."""
        if not self.tensors.specs.has_pool("mtp_window") or self.is_mtp:
            return None
        rows, slots, b = [], [], self.block_size
        for s, sp in zip(self.seqs, self.spans):
            for k in range(sp.start_pos // b + 1, (sp.start_pos + sp.num_tokens) // b + 1):
                rows.append(sp.begin + k * b - 1 - sp.start_pos)
                slots.append(s.block_tables["mtp_window"][k - 1])
        if not rows:
            return None
        return torch.tensor(rows), torch.tensor(slots)


class StateRing:
    """The compressor-state ring of one layer and sequence, plus (for ratio-4 compressors with prefix caching)
    the c4 block tails to fill at block boundaries. ``tail_prefix`` names the tail tensors ("" main, "index_")."""

    def __init__(self, view: CacheView, state: str, layer: int, seq: int, tail_prefix: str | None) -> None:
        self.view, self.state, self.layer, self.seq = view, state, layer, seq
        self.kv, self.score = view.tensors.state(state, layer)
        self.tail_prefix = tail_prefix if tail_prefix is not None and view.has_tails() else None

    def read(self, lo: int, hi: int) -> tuple[torch.Tensor, torch.Tensor]:
        """kv, score rows of positions lo..hi-1 (fp32 [hi-lo, width])."""
        slots = self.view.state_slots(self.state, self.seq, lo, hi)
        return self.kv.index_select(0, slots), self.score.index_select(0, slots)

    def write(self, lo: int, kv: torch.Tensor, score: torch.Tensor) -> None:
        """Store rows of positions lo..lo+n-1 (never gradients: the cache holds constants)."""
        slots = self.view.state_slots(self.state, self.seq, lo, lo + kv.shape[0])
        self.kv.index_copy_(0, slots, kv.detach())
        self.score.index_copy_(0, slots, score.detach())

    def keep_tails(self, all_kv: torch.Tensor, all_score: torch.Tensor, base: int, width: int) -> None:
        """For every block boundary P this forward crosses, store rows P-4..P-1 (first ``width`` channels: what
        the next overlapping group reads) of all_kv/all_score (rows from position ``base``) in the block's tail."""
        if self.tail_prefix is None:
            return
        tensors, p = self.view.tensors, self.tail_prefix
        tail_kv = tensors.pool("c4", f"{p}tail_kv", self.layer)
        tail_score = tensors.pool("c4", f"{p}tail_score", self.layer)
        for boundary, slots in self.view.tail_targets(self.seq):
            rows = slice(boundary - CSA_RATIO - base, boundary - base)
            tail_kv.index_copy_(0, slots, all_kv[rows, :width].detach())
            tail_score.index_copy_(0, slots, all_score[rows, :width].detach())
