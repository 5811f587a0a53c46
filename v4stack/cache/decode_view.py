"""The decode rows of one forward, addressed all at once: slot tensors [B, K] for every 1-token span.

A forward's spans of one token (a decode step, or a 1-token chunk) are attended in one batched op
(``model.decode_attention``) instead of a Python loop per sequence. ``DecodeView`` turns their block tables into
padded slot tensors once per forward (memoised in the ``CacheView``, shared by every layer of a group):

  B decode sequences (index b), at positions p_b, their new token at flat row rows[b]
  window slot j          position max(0, p_b - W + 1) + j, valid while <= p_b   (index-list order: oldest first)
  entry j of ratio r     valid while j < (p_b + 1) // r                          (the entries visible to p_b)
  ring row of p_b        state_slot * rows + p_b % rows

Invalid slots are clamped onto some allocated row (their content is garbage: the consumer masks them).
Same slot rules as ``cache.view`` (its docstring); the engine and the scheduler are unaware of this view.
"""

from __future__ import annotations

import torch

from v4stack.cache.specs import CSA_RATIO
from v4stack.cache.tensors import stored
from v4stack.cache.view import NO_BLOCK, CacheView, StateRing


class DecodeView:
    """The 1-token spans of ``view``'s forward. ``seqs``: their sequence indices (batch order b)."""

    def __init__(self, view: CacheView) -> None:
        self.view = view
        self.seqs = [i for i, sp in enumerate(view.spans) if sp.num_tokens == 1]
        self.pos_list = [view.spans[i].start_pos for i in self.seqs]
        self.device = view.tensors.device
        self.positions = torch.tensor(self.pos_list, dtype=torch.long, device=self.device)  # [B]
        self.every_row = view.pure_decode  # every row of the forward is a decode row
        self._memo: dict = {}

    def __len__(self) -> int:
        return len(self.seqs)

    @property
    def rows(self) -> torch.Tensor:
        """[B] flat row of each decode token (read by mixed steps only: made on first use)."""
        return self._memoised("rows", lambda: torch.tensor([self.view.spans[i].begin for i in self.seqs],
                                                           dtype=torch.long, device=self.device))

    def _index(self, values: list[int]) -> torch.Tensor:
        """[len(values)] int64 on the cache's device. Per-sequence indices of [B] (or fewer) rows are computed on
        Python ints and made in one call: cheaper than a tensor and 3-8 ops on it at decode batch sizes."""
        return torch.tensor(values, dtype=torch.long, device=self.device)

    def _memoised(self, key, make):
        if key not in self._memo:
            self._memo[key] = make()
        return self._memo[key]

    def _table(self, group: str) -> torch.Tensor:
        """[B, max blocks] block table of every decode sequence in ``group`` (NO_BLOCK padding)."""
        def make():
            tables = [self.view.seqs[i].block_tables[group] for i in self.seqs]
            width = max(1, max(len(t) for t in tables))
            return torch.tensor([t + [NO_BLOCK] * (width - len(t)) for t in tables], dtype=torch.long,
                                device=self.device)
        return self._memoised(("table", group), make)

    def _blocks(self, group: str, ids: torch.Tensor, per_block: int) -> torch.Tensor:
        """ids [B, K] (row positions or entry ids, >= 0) -> the block of each in its sequence's table [B, K]
        (NO_BLOCK where not allocated; ids past the table read its last column). The slot of id is then
        block.clamp_min(0) * per_block + id % per_block (clamped into the pool where masked)."""
        table = self._table(group)
        return table.gather(1, (ids // per_block).clamp_max(table.shape[1] - 1))

    # ---- raw window rows --------------------------------------------------------------------------
    def window(self, width: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(slots, valid) [B, width] of the raw rows each decode query attends (its own included, as the
        reference index list orders them: positions max(0, p-W+1) .. p, then padding)."""
        def make():
            g, per = self.view.window_group, self.view.block_size
            lo = (self.positions - (width - 1)).clamp_min(0)
            pos = lo[:, None] + torch.arange(width, device=self.device)[None, :]  # >= 0
            valid = pos <= self.positions[:, None]
            blocks = self._blocks(g, pos, per)  # one gather for the check and the slots
            self._check(g, blocks, valid)
            return blocks.clamp_min(0) * per + pos % per, valid
        return self._memoised(("window", width), make)

    def own_row_slots(self) -> torch.Tensor:
        """[B] window slot of each decode token's own raw row (``CacheView.window_write_slots`` of a pure decode
        step: the same slots, one gather instead of ~10 ops per sequence); raises like it when the row's block is
        not allocated."""
        g, per = self.view.window_group, self.view.block_size
        slots = []
        for i, p in zip(self.seqs, self.pos_list):
            table = self.view.seqs[i].block_tables[g]
            block = table[p // per] if p // per < len(table) else NO_BLOCK
            if block < 0:
                raise RuntimeError(f"cache entries {self.pos_list} reach a block that is not allocated")
            slots.append(block * per + p % per)
        return self._index(slots)

    def _check(self, group: str, blocks: torch.Tensor, valid: torch.Tensor) -> None:
        """Raises when a valid slot's block (``_blocks``) is not allocated."""
        if bool(((blocks < 0) & valid).any()):
            raise RuntimeError(f"a decode row reaches a block of pool group {group!r} that is not allocated")

    # ---- compressed entries -----------------------------------------------------------------------
    def visible_entries(self, group: str, ratio: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(slots, valid) [B, N] of entries 0..N-1 of a ratio-``ratio`` pool, N = the most any decode sequence
        sees, valid j < (p_b + 1) // ratio."""
        def make():
            n = max((p + 1) // ratio for p in self.pos_list)
            ids = torch.arange(n, device=self.device)  # entry j of every sequence: one index column per j
            valid = ids[None, :] < ((self.positions + 1) // ratio)[:, None]
            per = self.view.entries_per_block(group)
            table = self._table(group)
            blocks = table.index_select(1, (ids // per).clamp_max(table.shape[1] - 1))  # ``_blocks`` of [B, N] ids
            self._check(group, blocks, valid)
            return blocks.clamp_min(0) * per + (ids % per)[None, :], valid
        return self._memoised(("entries", group, ratio), make)

    def chosen_entry_slots(self, group: str, ratio: int, chosen: torch.Tensor) -> torch.Tensor:
        """chosen [B, k]: entry ids below ``visible_entries``' N (-1 where unused: entry 0's slot) -> their pool
        slots [B, k], read from the visible entries' slots (one gather instead of the table lookup's ~8 ops)."""
        entry_slots, _ = self.visible_entries(group, ratio)
        return entry_slots.gather(1, chosen.clamp_min(0))

    def completing(self, ratio: int) -> tuple[torch.Tensor, list[int]]:
        """Decode sequences whose token closes a compression group: (their b [n], the groups they close)."""
        def make():
            done = [b for b, p in enumerate(self.pos_list) if (p + 1) % ratio == 0]
            return torch.tensor(done, dtype=torch.long, device=self.device), [(self.pos_list[b] + 1) // ratio - 1
                                                                              for b in done]
        return self._memoised(("completing", ratio), make)

    def new_entry_slots(self, group: str, ratio: int) -> torch.Tensor:
        """[n] pool slots of the entries the completing sequences close now."""
        def make():
            done, groups = self.completing(ratio)
            per = self.view.entries_per_block(group)
            tables = [self.view.seqs[self.seqs[b]].block_tables[group] for b in done.tolist()]
            return self._index([table[j // per] * per + j % per for table, j in zip(tables, groups)])
        return self._memoised(("new_entries", group, ratio), make)

    # ---- compressor rings -------------------------------------------------------------------------
    def group_offsets(self, ratio: int) -> torch.Tensor:
        """[B] p_b % ratio: each decode position's place in its compression group (every compressor of the
        ratio reads it)."""
        return self._memoised(("offsets", ratio), lambda: self.positions % ratio)

    def ring_rows(self, state: str) -> torch.Tensor:
        """[B] ring row of each decode position in state ``state``."""
        def make():
            rows = self._state_rows(state)
            seqs = self.view.seqs
            return self._index([seqs[i].state_slot * rows + p % rows for i, p in zip(self.seqs, self.pos_list)])
        return self._memoised(("ring", state), make)

    def group_rows(self, state: str, ratio: int, groups: int) -> torch.Tensor:
        """[n, groups * ratio] ring rows of the last ``groups`` groups (oldest first) of each completing sequence,
        ending with the group it closes now (rows of positions before 0 point at the ring's start: masked)."""
        def make():
            rows = self._state_rows(state)
            done, closed = self.completing(ratio)
            slot = torch.tensor([self.view.seqs[self.seqs[b]].state_slot for b in done.tolist()], dtype=torch.long,
                                device=self.device)
            first = (torch.tensor(closed, dtype=torch.long, device=self.device) - groups + 1) * ratio
            pos = (first[:, None] + torch.arange(groups * ratio, device=self.device)[None, :]).clamp_min(0)
            return slot[:, None] * rows + pos % rows
        return self._memoised(("groups", state, ratio, groups), make)

    def block_enders(self) -> list[int]:
        """The b of decode sequences whose token is the last of a cache block."""
        return self._memoised("enders", lambda: [b for b, p in enumerate(self.pos_list)
                                                 if (p + 1) % self.view.block_size == 0])

    def _state_rows(self, state: str) -> int:
        return next(s.rows for s in self.view.tensors.specs.states if s.name == state)


class DecodeRings:
    """The compressor ring ``state`` of one layer for every decode sequence (batched ``StateRing``)."""

    def __init__(self, decode: DecodeView, state: str, layer: int, tail_prefix: str | None = None) -> None:
        self.decode, self.state, self.layer, self.tail_prefix = decode, state, layer, tail_prefix
        self.kv, self.score = decode.view.tensors.state(state, layer)

    @property
    def positions(self) -> torch.Tensor:
        return self.decode.positions

    def write(self, kv: torch.Tensor, score: torch.Tensor) -> None:
        """Store each decode position's raw row (kv, score [B, width] fp32)."""
        rows = self.decode.ring_rows(self.state)
        self.kv.index_copy_(0, rows, stored(kv))
        self.score.index_copy_(0, rows, stored(score))

    def completing(self, ratio: int) -> tuple[torch.Tensor, list[int]]:
        return self.decode.completing(ratio)

    def group_offsets(self, ratio: int) -> torch.Tensor:
        return self.decode.group_offsets(ratio)

    def read_groups(self, ratio: int, groups: int) -> tuple[torch.Tensor, torch.Tensor]:
        """kv, score [n, groups * ratio, width] of the completing sequences' last ``groups`` groups."""
        rows = self.decode.group_rows(self.state, ratio, groups)
        n, flat = rows.shape[0], rows.flatten()
        return (self.kv.index_select(0, flat).view(n, rows.shape[1], -1),
                self.score.index_select(0, flat).view(n, rows.shape[1], -1))

    def keep_tails(self, width: int) -> None:
        """Prefix caching: a decode token that ends a block keeps the ring rows of its last 4 positions in the
        c4 block's tail (``StateRing.keep_tails``; rare, so per sequence)."""
        view = self.decode.view
        if self.tail_prefix is None or not view.has_tails():
            return
        for b in self.decode.block_enders():
            p = self.decode.pos_list[b]
            ring = StateRing(view, self.state, self.layer, self.decode.seqs[b], self.tail_prefix)
            kv, score = ring.read(p + 1 - CSA_RATIO, p + 1)
            ring.keep_tails(kv, score, p + 1 - CSA_RATIO, width)
