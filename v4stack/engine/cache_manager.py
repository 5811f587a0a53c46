"""Which blocks each request holds in every pool group, prefix caching across requests, and the data-plane
work (block copies, compressor restores) those decisions imply. Scheduler-facing; touches no tensors.

Per request and pool group a block table (index = block number). Groups kept for the whole sequence (c4,
c128) hold blocks 0..ceil(end/B)-1; sliding groups (window, mtp_window) hold only blocks with one of the last
W (+1, for the MTP block's one-token lag) positions, older ones are released as the request advances.

Prefix caching (``docs/cache.md`` has the reasoning): block j of a request is known by
h_j = sha256(h_{j-1} || token ids of block j). Once a block is full, every group's block j gets that hash.
A new request reuses a prefix of k blocks when every whole-sequence group has h_0..h_{k-1} cached and every
sliding group still has the blocks covering the W positions before k*B (its window at the boundary). On a hit
the request holds those blocks (shared, read-only: it only ever writes positions >= k*B), gets a private copy
of the MTP window block k-1 (its row k*B-1 depends on the token after the prefix, so it is recomputed), and
its ratio-4 compressor rings are refilled from the tails kept in c4 block k-1. At most (num_tokens-1)//B
blocks are reused: the last token is always computed, for its logits.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from v4stack.cache.specs import CacheSpecs
from v4stack.cache.view import NO_BLOCK, SeqCache
from v4stack.cache.window_blocks import MTP_LAG  # after a prefix hit the MTP block restarts one position behind
from v4stack.engine.block_pool import BlockPool
from v4stack.engine.request import Request

MTP_GROUP = "mtp_window"


@dataclass(frozen=True)
class PrefixHit:
    num_blocks: int
    num_tokens: int
    blocks: dict[str, dict[int, int]]  # group -> {block number: cached block id}


@dataclass
class CacheOps:
    """Tensor work the model runner does before the next forward, in this order."""

    copies: list[tuple[str, int, int]] = field(default_factory=list)  # (group, src block, dst block)
    restores: list[tuple[int, int, int]] = field(default_factory=list)  # (state slot, c4 block, boundary pos)

    def __bool__(self) -> bool:
        return bool(self.copies or self.restores)


def _block_hash(parent: bytes, token_ids: list[int]) -> bytes:
    h = hashlib.sha256(parent)
    h.update(b"".join(t.to_bytes(8, "little", signed=True) for t in token_ids))
    return h.digest()


class KVCacheManager:
    def __init__(self, specs: CacheSpecs, num_blocks: dict[str, int], num_state_slots: int,
                 enable_prefix_caching: bool = True) -> None:
        self.specs, self.block_size = specs, specs.block_size
        self.pools = {p.name: BlockPool(p.name, num_blocks[p.name]) for p in specs.pools}
        self.window = {p.name: p.sliding_window for p in specs.pools}
        self.enable_prefix_caching = enable_prefix_caching
        self._free_slots = list(range(num_state_slots - 1, -1, -1))
        self.num_state_slots = num_state_slots
        self._hashed: dict[str, dict[str, int]] = {}  # request id -> group -> blocks hashed so far
        self.pending = CacheOps()
        self.prefix_queries = self.prefix_hits = 0  # in tokens, for the hit-rate metric

    # ---- questions ---------------------------------------------------------------------------------
    def blocks_for(self, group: str, num_tokens: int, chunk: int) -> int:
        """Blocks one request of ``num_tokens`` tokens, computed ``chunk`` tokens per step at most, holds at
        most in ``group``: all of them, or for a sliding group its window plus one chunk (+1 for alignment)."""
        full = -(-num_tokens // self.block_size)
        w = self.window[group]
        return full if w is None else min(full, -(-(w + MTP_LAG + chunk) // self.block_size) + 1)

    def can_ever_fit(self, num_tokens: int, chunk: int) -> bool:
        """Whether a request of ``num_tokens`` tokens fits in an otherwise empty cache."""
        return all(self.blocks_for(g, num_tokens, chunk) <= p.num_blocks for g, p in self.pools.items())

    @property
    def usage(self) -> float:
        """Fraction of the largest whole-sequence pool held by requests (the one that runs out first)."""
        return max(p.usage for p in self.pools.values())

    # ---- prefix caching -------------------------------------------------------------------------------
    def _update_hashes(self, req: Request) -> None:
        full = req.num_tokens // self.block_size
        b = self.block_size
        while len(req.block_hashes) < full:
            j = len(req.block_hashes)
            parent = req.block_hashes[-1] if j else b""
            req.block_hashes.append(_block_hash(parent, req.token_ids_between(j * b, (j + 1) * b)))

    def find_prefix(self, req: Request) -> PrefixHit | None:
        """The longest reusable cached prefix of a request that holds no blocks yet (no side effects)."""
        if not self.enable_prefix_caching or req.cache is not None:
            return None
        self._update_hashes(req)
        max_blocks = (req.num_tokens - 1) // self.block_size
        whole = [g for g, w in self.window.items() if w is None]
        k = 0
        while k < max_blocks and all(self.pools[g].lookup(req.block_hashes[k]) is not None for g in whole):
            k += 1
        for k in range(k, 0, -1):
            hit = self._hit_at(req, k, whole)
            if hit is not None:
                return hit
        return None

    def _hit_at(self, req: Request, k: int, whole: list[str]) -> PrefixHit | None:
        boundary = k * self.block_size
        blocks: dict[str, dict[int, int]] = {}
        for g in self.window:
            numbers = range(self._first_needed_block(g, boundary), k)
            found = {j: self.pools[g].lookup(req.block_hashes[j]) for j in numbers}
            if any(b is None for b in found.values()):
                return None
            blocks[g] = found
        return PrefixHit(k, boundary, blocks)

    def cache_full_blocks(self, req: Request) -> None:
        """After a step: give every newly full block of the request its hash (so later requests can find it)."""
        if not self.enable_prefix_caching or req.cache is None:
            return
        self._update_hashes(req)
        done = self._hashed.setdefault(req.request_id, {})
        for g, table in req.cache.block_tables.items():
            computed = req.num_mtp_computed_tokens if g == MTP_GROUP else req.num_computed_tokens
            full = min(computed // self.block_size, len(req.block_hashes))
            for j in range(done.get(g, 0), full):
                if table[j] != NO_BLOCK:
                    self.pools[g].set_hash(table[j], req.block_hashes[j])
            done[g] = max(done.get(g, 0), full)

    # ---- allocation ------------------------------------------------------------------------------------
    def allocate(self, req: Request, num_new_tokens: int, hit: PrefixHit | None = None) -> bool:
        """Back positions up to (computed + num_new_tokens - 1) in every group; False (and nothing held newly)
        when a pool lacks free blocks. For a request holding no blocks, ``hit`` is its prefix to reuse."""
        fresh = req.cache is None
        if fresh and not self._free_slots:
            return False
        start = hit.num_tokens if hit else req.num_computed_tokens
        end = start + num_new_tokens
        if fresh:
            tables: dict[str, list[int]] = {g: [] for g in self.pools}
        else:
            self._release_out_of_window(req.cache, start)
            tables = {g: list(t) for g, t in req.cache.block_tables.items()}
        plan: dict[str, list[int]] = {}  # group -> block numbers that need a new block
        held: dict[str, list[int]] = {}  # group -> cached blocks to hold (prefix hit)
        for g, table in tables.items():
            first = self._first_needed_block(g, start)
            if hit is not None:
                for j, b in hit.blocks[g].items():
                    while len(table) <= j:
                        table.append(NO_BLOCK)
                    if g != MTP_GROUP or j != hit.num_blocks - 1:  # the MTP endpoint is copied, not shared
                        table[j] = b
                        held.setdefault(g, []).append(b)
            need = [j for j in range(first, -(-end // self.block_size)) if j >= len(table) or table[j] == NO_BLOCK]
            plan[g] = need
        for g, need in plan.items():
            pool = self.pools[g]
            reviving = sum(1 for b in held.get(g, ()) if pool.ref_count[b] == 0)
            if pool.num_free - reviving < len(need):
                return False
        for g, blocks in held.items():
            for b in blocks:
                self.pools[g].hold(b)
        for g, need in plan.items():
            table = tables[g]
            for j in need:
                while len(table) <= j:
                    table.append(NO_BLOCK)
                table[j] = self.pools[g].take()
        if fresh:
            req.cache = SeqCache(tables, self._free_slots.pop())
            self.prefix_queries += req.num_tokens if self.enable_prefix_caching else 0
        else:
            req.cache.block_tables = tables
        if hit is not None:
            self._apply_hit(req, hit)
        return True

    def _apply_hit(self, req: Request, hit: PrefixHit) -> None:
        last = hit.num_blocks - 1
        if MTP_GROUP in self.pools:
            self.pending.copies.append((MTP_GROUP, hit.blocks[MTP_GROUP][last], req.cache.block_tables[MTP_GROUP][last]))
        if "c4" in self.pools:
            self.pending.restores.append((req.cache.state_slot, req.cache.block_tables["c4"][last], hit.num_tokens))
        req.num_computed_tokens = hit.num_tokens
        req.num_mtp_computed_tokens = hit.num_tokens - MTP_LAG if MTP_GROUP in self.pools else hit.num_tokens
        req.num_cached_tokens = hit.num_tokens
        self.prefix_hits += hit.num_tokens
        self._hashed[req.request_id] = {g: hit.num_blocks for g in self.pools}
        self._hashed[req.request_id][MTP_GROUP] = last

    def _first_needed_block(self, group: str, start: int) -> int:
        """First block a request resuming at position ``start`` still reads in ``group``: its window there
        (positions start-W+1.., one earlier for the MTP block, which may lag one token)."""
        w = self.window[group]
        if w is None:
            return 0
        lag = MTP_LAG if group == MTP_GROUP else 0
        return max(0, start - lag - (w - 1)) // self.block_size

    def _release_out_of_window(self, seq: SeqCache, start: int) -> None:
        for g, table in seq.block_tables.items():
            if self.window[g] is None:
                continue
            first = self._first_needed_block(g, start)
            for j in range(min(first, len(table))):
                if table[j] != NO_BLOCK:
                    self.pools[g].release(table[j])
                    table[j] = NO_BLOCK

    def free(self, req: Request) -> None:
        """Give back everything the request holds (finish, abort, preemption). Later blocks are released first,
        so they are evicted before the earlier ones that more requests share."""
        if req.cache is None:
            return
        for g, table in req.cache.block_tables.items():
            for b in reversed(table):
                if b != NO_BLOCK:
                    self.pools[g].release(b)
        self._free_slots.append(req.cache.state_slot)
        self._hashed.pop(req.request_id, None)
        req.cache = None

    def take_ops(self) -> CacheOps:
        ops, self.pending = self.pending, CacheOps()
        return ops

    def held_blocks(self) -> dict[str, int]:
        """Sum of reference counts per pool (for leak checks: equals the blocks named by live requests)."""
        return {g: sum(p.ref_count) for g, p in self.pools.items()}
