"""Sequences driven by hand (tests, the golden runner, training, single-prompt tools), on the same paged
storage the engine uses, so there is one cache code path in the model.

A ``StandaloneCache`` grows its tensors on demand: blocks are taken from a free list as a sequence reaches new
positions and given back when its ``SequenceState`` is garbage-collected. It does no prefix caching and no
sliding-window release (hand-driven sequences are short); the engine's cache manager does both.
"""

from __future__ import annotations

import weakref

import torch

from v4stack.cache.specs import CacheSpecs
from v4stack.cache.tensors import CacheTensors
from v4stack.cache.view import SeqCache

INITIAL_BLOCKS = 8  # per pool group; doubled whenever the free list runs dry
INITIAL_SLOTS = 4


class StandaloneCache:
    def __init__(self, specs: CacheSpecs, device: torch.device | str = "cpu") -> None:
        self.specs = specs
        self.tensors = CacheTensors(specs, {p.name: INITIAL_BLOCKS for p in specs.pools}, INITIAL_SLOTS, device)
        self._free = {p.name: list(range(INITIAL_BLOCKS)) for p in specs.pools}
        self._free_slots = list(range(INITIAL_SLOTS))

    def new_sequence(self) -> SeqCache:
        if not self._free_slots:
            n = self.tensors.num_state_slots
            self.tensors.resize_states(2 * n)
            self._free_slots = list(range(n, 2 * n))
        return SeqCache({p.name: [] for p in self.specs.pools}, self._free_slots.pop())

    def ensure(self, seq: SeqCache, num_positions: int) -> None:
        """Allocate blocks so that positions 0..num_positions-1 of ``seq`` are backed in every pool group."""
        needed = -(-num_positions // self.specs.block_size)
        for group, table in seq.block_tables.items():
            while len(table) < needed:
                free = self._free[group]
                if not free:
                    n = self.tensors.num_blocks[group]
                    self.tensors.resize_pool(group, 2 * n)
                    free.extend(range(n, 2 * n))
                table.append(free.pop())

    def release(self, seq: SeqCache) -> None:
        for group, table in seq.block_tables.items():
            self._free[group].extend(b for b in table if b >= 0)
            table.clear()
        self._free_slots.append(seq.state_slot)


class SequenceState:
    """One hand-driven sequence: its cache handle and how far the backbone (``num_tokens``) and the MTP block
    (``num_mtp_tokens``) have got. Its blocks return to the cache when the state is garbage-collected."""

    def __init__(self, cache: StandaloneCache) -> None:
        self.cache = cache
        self.seq = cache.new_sequence()
        self.num_tokens = 0
        self.num_mtp_tokens = 0
        # a finalizer rather than __del__: it runs once, also at interpreter exit, and holds no reference to self
        weakref.finalize(self, StandaloneCache.release, cache, self.seq)
