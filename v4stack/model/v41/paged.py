"""One sequence of an engine forward, seen by the V4.1 layers through the paged cache.

``PagedV41State`` has the storage methods of ``V41State`` (``prior_window`` .. ``keep_open_group``), backed by
the engine's ``CacheTensors`` (``cache/specs.py: v41_cache_specs``) through the forward's ``CacheView``:

  raw window row of position p       pool "window", layer l       slot  window[p // B] * B + p % B
  entry j of kv source s (ratio r)   pool f"c{r}", "kv" / "index_keys", layer s
  open-group row of position p       state ring f"c{r}", layer s  slot  state_slot * r + p % r

The same tensors the dict state holds are written and read back unchanged (same dtype), so a paged forward
computes exactly what a hand-driven one does. Engram hashing needs the compressed ids of the last N-1
positions: the engine passes the token ids before the span (``ForwardBatch.history``); nothing is cached for it.
Built per forward and sequence by ``DeepseekV41.forward_batch``; it is not kept.
"""

from __future__ import annotations

import torch

from v4stack.cache.view import CacheView


class PagedV41State:
    def __init__(self, view: CacheView, seq: int, ratios: dict[int, int], engram_history: torch.Tensor) -> None:
        """``ratios``: kv source layer -> its compress ratio; ``engram_history``: compressed ids of the positions
        just before this span (at most N-1)."""
        self.view, self.seq, self.ratios = view, seq, ratios
        span = view.spans[seq]
        self.start, self.num_new = span.start_pos, span.num_tokens
        self.num_tokens = self.start  # the model advances it after the forward, as for V41State
        self.engram_history = engram_history
        self._sources: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # this forward's reads, shared by
        # the Reuse / Reindex layers of a source

    # ---- window ---------------------------------------------------------------------------------------
    def prior_window(self, layer: int, like: torch.Tensor) -> torch.Tensor:
        count = min(self.start, self.view.tensors.specs.pool("window").sliding_window - 1)
        pool = self.view.tensors.pool("window", "kv", layer)
        return pool.index_select(0, self.view.window_prior_slots(self.seq, count))

    def keep_window(self, layer: int, prior: torch.Tensor, rows: torch.Tensor, keep: int) -> None:
        """Writes the new rows at their positions; the pool keeps the rest (older blocks are released by the
        cache manager once they leave the window)."""
        span = self.view.spans[self.seq]
        slots = self.view.window_write_slots()[span.begin:span.end]
        self.view.tensors.pool("window", "kv", layer).index_copy_(0, slots, rows.detach())

    # ---- compressed entries -----------------------------------------------------------------------------
    def _group(self, src: int) -> str:
        return f"c{self.ratios[src]}"

    def num_entries(self, src: int) -> int:
        return self.start // self.ratios[src]

    def extend_source(self, src: int, entries: torch.Tensor, keys: torch.Tensor) -> None:
        group, first = self._group(src), self.num_entries(src)
        cached = []
        for name, fresh in (("kv", entries), ("index_keys", keys)):
            pool = self.view.tensors.pool(group, name, src)
            if fresh.shape[0]:
                pool.index_copy_(0, self.view.entry_slots(group, self.seq, first, first + fresh.shape[0]),
                                 fresh.detach())
            before = pool.index_select(0, self.view.entry_slots(group, self.seq, 0, first))
            cached.append(torch.cat([before, fresh]))
        self._sources[src] = (cached[0], cached[1])

    def source(self, src: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self._sources[src]

    # ---- compressor open group ------------------------------------------------------------------------------
    def open_group(self, layer: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        r = self.ratios[layer]
        first = self.start - self.start % r
        if r == 1 or first == self.start:
            return None
        return self.view.ring(f"c{r}", layer, self.seq).read(first, self.start)

    def keep_open_group(self, layer: int, kv: torch.Tensor, score: torch.Tensor) -> None:
        if kv.shape[0]:
            end = self.start + self.num_new
            self.view.ring(f"c{self.ratios[layer]}", layer, self.seq).write(end - kv.shape[0], kv, score)
