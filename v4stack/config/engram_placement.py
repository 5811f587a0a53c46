"""Where a V4.1 model's Engram tables live for one run (``--engram device|host|disk``, ``--engram-cache-mb``).

Knows: the three tiers and what each keeps resident; the bytes a table of a given shape costs per tier (the
planner and the loaded store agree on these numbers). Does not know: files, threads or devices
(``v4stack.modelio.engram_tiers`` implements the tiers).

  device  the FP8 rows + E8M0 scales sit in device memory next to the weights
  host    they sit in host memory (pinned on CUDA/NPU); the rows of each forward are gathered there and copied
  disk    they stay in the checkpoint's safetensors file; rows are read by byte offset into a bounded LRU
          row cache in host memory (``cache_bytes``); no copy of the table is written anywhere
"""

from __future__ import annotations

from dataclasses import dataclass

from v4stack.config import validation as check
from v4stack.config.v41_config import EngramConfig

TIERS = ("device", "host", "disk")
ENGRAM_SCALE_BLOCK = 32  # one E8M0 scale byte per 32 FP8 values of a row (model_spec.md §3.9)
BYTES_PER_MIB = 1 << 20
DEFAULT_CACHE_MB = 256  # disk tier row cache (a 264 B row: ~1M rows)


def row_bytes(head_dim: int) -> int:
    """Stored bytes of one table row: head_dim FP8 values + head_dim / 32 E8M0 scales (264 B in V4.1-Flash)."""
    return head_dim + head_dim // ENGRAM_SCALE_BLOCK


@dataclass(frozen=True)
class EngramPlacement:
    """tier: device | host | disk; cache_bytes: the disk tier's row-cache budget (host memory); prefetch: fetch
    each forward's rows on a background thread as soon as its hash ids are known (False: on demand, inside the
    Engram layer)."""

    tier: str = "device"
    cache_bytes: int = DEFAULT_CACHE_MB * BYTES_PER_MIB
    prefetch: bool = True

    def __post_init__(self) -> None:
        if self.tier not in TIERS:
            raise check.ParameterError("engram", self.tier, f"one of {', '.join(TIERS)}")
        check.integer("engram_cache_bytes", self.cache_bytes, 1)

    def table_bytes(self, cfg: EngramConfig) -> dict[str, int]:
        """Bytes of every Engram table resident in each tier: rows x row_bytes, all in the placement's tier.
        The disk tier's row cache is host memory too, but bounded: see ``cache_rows``."""
        total = sum(cfg.num_embeddings) * row_bytes(cfg.head_dim)
        return {tier: (total if tier == self.tier else 0) for tier in TIERS}

    def cache_rows(self, cfg: EngramConfig) -> int:
        """Rows the disk tier's cache holds (at least one forward's worth is not guaranteed: a forward whose
        distinct rows exceed it is served in passes)."""
        return max(1, self.cache_bytes // row_bytes(cfg.head_dim))
