"""The cache's storage: one flat tensor per (pool, tensor, layer) and per (state ring, layer).

A pool tensor of ``num_blocks`` blocks with ``e`` entries per block is ``[num_blocks * e, width]``; the row of
entry j of a sequence is ``block_table[j // e] * e + j % e`` (``cache.view`` computes these slot indices).
A state ring of ``num_slots`` sequences with ``rows`` rows is ``[num_slots * rows, width]``; position p of the
sequence in slot s lives at row ``s * rows + p % rows``.

Pool tensors are allocated with ``torch.empty``: every row is written before it is read (the model only
reads positions and entries a sequence has computed), so untouched blocks cost no resident memory on CPU and
the process grows with the cache actually used. State rings are zeroed (a restored ring zeroes its own rows).

Knows: shapes, dtypes, devices, copying whole blocks. Does not know: which blocks are in use (that is the
engine's cache manager or a standalone sequence's allocator).
"""

from __future__ import annotations

import torch

from v4stack.cache.specs import STATE_DTYPE, CacheSpecs


def stored(t: torch.Tensor) -> torch.Tensor:
    """``t`` as written into a cache tensor: without autograd history (``t.detach()``), and ``t`` itself when it
    has none (inference: no op dispatched for a view that changes nothing)."""
    return t.detach() if t.requires_grad else t


class CacheTensors:
    def __init__(self, specs: CacheSpecs, num_blocks: dict[str, int], num_state_slots: int,
                 device: torch.device | str = "cpu") -> None:
        self.specs, self.device = specs, torch.device(device)
        self.num_blocks = {p.name: 0 for p in specs.pools}
        self.num_state_slots = 0
        self._pool: dict[tuple[str, str, int], torch.Tensor] = {}
        self._state: dict[tuple[str, str, int], torch.Tensor] = {}
        for pool in specs.pools:
            self.resize_pool(pool.name, num_blocks.get(pool.name, 0))
        self.resize_states(num_state_slots)

    # ---- access --------------------------------------------------------------------------------
    def pool(self, group: str, name: str, layer: int) -> torch.Tensor:
        """Flat [num_blocks * entries_per_block, width] tensor of one layer."""
        return self._pool[group, name, layer]

    def state(self, name: str, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(kv, score) rings [num_slots * rows, width] fp32 of one layer."""
        return self._state[name, "kv", layer], self._state[name, "score", layer]

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (*self._pool.values(), *self._state.values()))

    # ---- sizing (engine: once; standalone sequences: grown on demand) ----------------------------
    def resize_pool(self, group: str, num_blocks: int) -> None:
        """Grow (or create) a pool group to ``num_blocks`` blocks, keeping the rows of existing blocks."""
        spec = self.specs.pool(group)
        old = self.num_blocks[group]
        for t in spec.tensors:
            for layer in spec.layers:
                fresh = torch.empty(num_blocks * t.entries_per_block, t.width, dtype=t.dtype, device=self.device)
                prev = self._pool.get((group, t.name, layer))
                if prev is not None and old:
                    keep = min(old, num_blocks) * t.entries_per_block
                    fresh[:keep] = prev[:keep]
                self._pool[group, t.name, layer] = fresh
        self.num_blocks[group] = num_blocks

    def resize_states(self, num_slots: int) -> None:
        old = self.num_state_slots
        for s in self.specs.states:
            for layer in s.layers:
                for part in ("kv", "score"):
                    fresh = torch.zeros(num_slots * s.rows, s.width, dtype=STATE_DTYPE, device=self.device)
                    prev = self._state.get((s.name, part, layer))
                    if prev is not None and old:
                        keep = min(old, num_slots) * s.rows
                        fresh[:keep] = prev[:keep]
                    self._state[s.name, part, layer] = fresh
        self.num_state_slots = num_slots

    # ---- data movement the engine asks for (never per token) ------------------------------------
    def copy_block(self, group: str, src: int, dst: int) -> None:
        """Copy every tensor of block ``src`` to block ``dst`` in one pool group (copy-on-write)."""
        spec = self.specs.pool(group)
        for t in spec.tensors:
            e = t.entries_per_block
            for layer in spec.layers:
                buf = self._pool[group, t.name, layer]
                buf[dst * e:(dst + 1) * e] = buf[src * e:(src + 1) * e]

    def restore_compressor_tails(self, state_slot: int, c4_block: int, boundary: int) -> None:
        """Refill the ratio-4 compressor rings of one sequence as they were at ``boundary`` (a block end) from
        the tails kept in c4 block ``c4_block``: rows of positions boundary-4 .. boundary-1, first half of the
        channels (the other half belongs to the group that is already pooled, so it is zeroed)."""
        for state, prefix in (("c4", ""), ("c4_index", "index_")):
            spec = next(s for s in self.specs.states if s.name == state)
            ratio = spec.rows // 2  # overlapping rings hold two groups
            ring_rows = state_slot * spec.rows + torch.arange(boundary - ratio, boundary) % spec.rows
            tail_rows = c4_block * ratio + torch.arange(ratio)
            for layer in spec.layers:
                kv, score = self.state(state, layer)
                for ring, part in ((kv, "tail_kv"), (score, "tail_score")):
                    kept = self.pool("c4", f"{prefix}{part}", layer)[tail_rows]
                    ring[ring_rows] = 0.0
                    ring[ring_rows, : kept.shape[1]] = kept
