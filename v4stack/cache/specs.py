"""What the V4 and V4.1 hybrid attentions cache, as typed specs per layer kind (model_spec.md §5.1).

Knows: which layers keep which rows, their widths and dtypes, and how many tokens one cached entry covers.
Does not know: blocks in use, requests, or tensors (``cache.tensors`` allocates from these specs; the engine's
cache manager counts blocks with them).

Every paged pool shares one logical block size ``block_size`` tokens (a multiple of 128, so every block boundary
is also a compression-group boundary for ratios 4 and 128 and the 128-token window at a boundary lies inside the
block before it). Per block and layer a pool of ratio r holds ``block_size / r`` entries:

  group       layers                        per block and layer                            kept
  window      every backbone layer          B raw KV rows [B, d]                           last W positions
  mtp_window  every MTP layer               B raw KV rows [B, d] + main final streams of   last W positions
                                            the block's last token [hc*D] (prefix hits)
  c4          CSA layers (ratio 4)          B/4 compressed KV [B/4, d], B/4 indexer keys   whole sequence
                                            [B/4, d_I]; with prefix caching also the
                                            compressor tails at the block end (below)
  c128        HCA layers (ratio 128)        B/128 compressed KV [B/128, d]                 whole sequence

plus per-sequence compressor state (not paged; one slot per running sequence): a ring of the raw (kv, score)
rows of the open group, 2r rows for the overlapping ratio-4 compressors (main and indexer), r rows for HCA.

Compressor tails (prefix caching only): at a block boundary P the HCA group is closed, but the next ratio-4
entry still pools the previous group's 4 rows on its first d channels. So a c4 block also keeps, per CSA
layer, those rows' kv and score [4, d] fp32 (and [4, d_I] for the indexer's compressor): with them a request
that hits this block as the last one of its cached prefix restores its compressor ring exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from v4stack.config.model_config import ModelConfig
from v4stack.config.v41_config import V41Config

TOKEN_ALIGN = 128  # block sizes are multiples of the largest compression ratio (and of the 128-token window)
CSA_RATIO, HCA_RATIO = 4, 128
TAIL_SUFFIXES = ("tail_kv", "tail_score")
STATE_DTYPE = torch.float32  # compressor rows are pooled in fp32 (reference kv_state / score_state)


@dataclass(frozen=True)
class TensorSpec:
    """One tensor per layer of a pool group. ``entries_per_block`` rows of ``width`` per block (or per slot)."""

    name: str
    width: int
    dtype: torch.dtype
    entries_per_block: int

    @property
    def bytes_per_block(self) -> int:
        return self.entries_per_block * self.width * torch.empty((), dtype=self.dtype).element_size()


@dataclass(frozen=True)
class PoolSpec:
    """Layers that share one block table. ``sliding_window`` None: every block of a sequence stays allocated;
    W: only blocks holding one of the last W positions are needed (older ones are released or cached)."""

    name: str
    layers: tuple[int, ...]
    tensors: tuple[TensorSpec, ...]
    sliding_window: int | None = None

    @property
    def bytes_per_block(self) -> int:
        return len(self.layers) * sum(t.bytes_per_block for t in self.tensors)


@dataclass(frozen=True)
class StateSpec:
    """Per-sequence ring of ``rows`` compressor rows (kv and score, each ``width`` wide) for ``layers``."""

    name: str
    layers: tuple[int, ...]
    rows: int
    width: int

    @property
    def bytes_per_slot(self) -> int:
        return len(self.layers) * 2 * self.rows * self.width * STATE_DTYPE.itemsize


@dataclass(frozen=True)
class CacheSpecs:
    block_size: int
    dtype: torch.dtype
    pools: tuple[PoolSpec, ...]
    states: tuple[StateSpec, ...]

    def __post_init__(self) -> None:
        if self.block_size <= 0 or self.block_size % TOKEN_ALIGN:
            raise ValueError(f"block_size: {self.block_size} is not allowed (expected a positive multiple of "
                             f"{TOKEN_ALIGN})")

    def pool(self, name: str) -> PoolSpec:
        for p in self.pools:
            if p.name == name:
                return p
        raise KeyError(name)

    def has_pool(self, name: str) -> bool:
        return any(p.name == name for p in self.pools)

    @property
    def bytes_per_token(self) -> float:
        """Bytes one more token of context adds (the pools kept for the whole sequence), summed over layers:
        what ``v4stack plan`` reports as ``kv_bytes_per_token`` for the same cache dtype (without the
        compressor tails, which exist only for prefix caching: see ``tail_bytes_per_block``)."""
        return sum(t.bytes_per_block * len(p.layers) for p in self.pools if p.sliding_window is None
                   for t in p.tensors if not t.name.endswith(TAIL_SUFFIXES)) / self.block_size

    @property
    def tail_bytes_per_block(self) -> int:
        """What prefix caching adds to each c4 block (compressor tails of every CSA layer)."""
        return sum(t.bytes_per_block * len(p.layers) for p in self.pools for t in p.tensors
                   if t.name.endswith(TAIL_SUFFIXES))

    @property
    def state_bytes_per_sequence(self) -> int:
        return sum(s.bytes_per_slot for s in self.states)


def cache_specs(cfg: ModelConfig, dtype: torch.dtype, block_size: int = TOKEN_ALIGN,
                prefix_tails: bool = False, with_mtp: bool = True) -> CacheSpecs:
    """The pools of a V4 model whose cached rows are stored in ``dtype`` (bf16, or fp32 for the fp32 numerics);
    ``prefix_tails`` adds the compressor tails that prefix-cache hits need; ``with_mtp`` False leaves out the
    MTP block's window (an engine that does not run the MTP block)."""
    d, di = cfg.head_dim, cfg.index_head_dim
    n = cfg.num_hidden_layers
    ratios = [cfg.compress_ratio(i) for i in range(n)]
    csa = tuple(i for i, r in enumerate(ratios) if r == CSA_RATIO)
    hca = tuple(i for i, r in enumerate(ratios) if r == HCA_RATIO)
    mtp = tuple(range(n, n + cfg.num_mtp_layers)) if with_mtp else ()
    raw = TensorSpec("kv", d, dtype, block_size)
    pools = [PoolSpec("window", tuple(range(n)), (raw,), cfg.sliding_window)]
    if mtp:
        hidden = TensorSpec("hidden", cfg.hc_mult * cfg.hidden_size, dtype, 1)
        pools.append(PoolSpec("mtp_window", mtp, (raw, hidden), cfg.sliding_window))
    states = []
    if csa:
        per = block_size // CSA_RATIO
        tensors = [TensorSpec("kv", d, dtype, per), TensorSpec("index_keys", di, dtype, per)]
        if prefix_tails:
            tensors += [TensorSpec(name, width, STATE_DTYPE, CSA_RATIO) for name, width in
                        (("tail_kv", d), ("tail_score", d), ("index_tail_kv", di), ("index_tail_score", di))]
        pools.append(PoolSpec("c4", csa, tuple(tensors)))
        states += [StateSpec("c4", csa, 2 * CSA_RATIO, 2 * d), StateSpec("c4_index", csa, 2 * CSA_RATIO, 2 * di)]
    if hca:
        pools.append(PoolSpec("c128", hca, (TensorSpec("kv", d, dtype, block_size // HCA_RATIO),)))
        states.append(StateSpec("c128", hca, HCA_RATIO, d))
    return CacheSpecs(block_size, dtype, tuple(pools), tuple(states))


def v41_cache_specs(cfg: V41Config, dtype: torch.dtype, block_size: int = TOKEN_ALIGN) -> CacheSpecs:
    """The pools of a V4.1 model (CSA2): the window of every backbone layer, and per compress ratio r of its kv
    sources (Full layers) one whole-sequence group ``c{r}`` holding each source's B/r compressed entries [d] and
    index keys [d_I]; Reuse and Reindex layers read their source's rows and cache nothing of their own. State:
    the open group of each ratio-r > 1 source, r fp32 (kv, score) rows [d] (no overlap in V4.1; ratio 1 keeps
    none). At a block boundary every group is closed (r divides 128), so the rows a resuming request needs are
    all in blocks: no compressor tails. DSpark's stage windows are not here (the engine does not draft yet)."""
    d, di, n = cfg.head_dim, cfg.index_head_dim, cfg.num_hidden_layers
    pools = [PoolSpec("window", tuple(range(n)), (TensorSpec("kv", d, dtype, block_size),), cfg.sliding_window)]
    states = []
    for r in sorted({cfg.compress_ratio(s) for s in cfg.kv_source_layer_ids}):
        if TOKEN_ALIGN % r:
            raise ValueError(f"compress ratio {r} does not divide the block alignment {TOKEN_ALIGN}")
        sources = tuple(s for s in cfg.kv_source_layer_ids if cfg.compress_ratio(s) == r)
        per = block_size // r
        pools.append(PoolSpec(f"c{r}", sources, (TensorSpec("kv", d, dtype, per),
                                                 TensorSpec("index_keys", di, dtype, per))))
        if r > 1:
            states.append(StateSpec(f"c{r}", sources, r, d))
    return CacheSpecs(block_size, dtype, tuple(pools), tuple(states))
