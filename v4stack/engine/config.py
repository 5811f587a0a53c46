"""Engine configuration: frozen dataclasses, validated on construction with the shared one-line checks.

EngineConfig -> SchedulerConfig (step budget, queue bound) and CacheConfig (block size, memory, prefix caching).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from v4stack.cache.specs import TOKEN_ALIGN
from v4stack.config import validation as check
from v4stack.config.engram_placement import EngramPlacement
from v4stack.config.numerics import NAMES as NUMERIC_NAMES

NUMERICS = NUMERIC_NAMES  # fast (default), reference, fp32
DEFAULT_CPU_CACHE_BYTES = 4 << 30  # like vLLM's CPU KV-cache space default (VLLM_CPU_KVCACHE_SPACE = 4 GiB)
DEFAULT_CPU_CACHE_FRACTION = 0.25  # ... but never more than this share of the memory available at start


@dataclass(frozen=True)
class SchedulerConfig:
    """max_num_seqs: sequences per step; max_num_batched_tokens: tokens per step (prefill chunks are cut to it);
    max_waiting_requests: requests queued beyond it are refused (the server answers 503)."""

    max_num_seqs: int = 64
    max_num_batched_tokens: int = 2048
    max_waiting_requests: int = 1024

    def __post_init__(self) -> None:
        check.integer("max_num_seqs", self.max_num_seqs, 1)
        check.integer("max_num_batched_tokens", self.max_num_batched_tokens, 1)
        check.integer("max_waiting_requests", self.max_waiting_requests, 1)


@dataclass(frozen=True)
class CacheConfig:
    """block_size: tokens per logical block (a multiple of 128); memory_bytes: the cache budget (None: the
    platform default); num_blocks: fix the whole-sequence pools' size instead (tests); prefix caching on/off."""

    block_size: int = TOKEN_ALIGN
    memory_bytes: int | None = None
    num_blocks: int | None = None
    enable_prefix_caching: bool = True

    def __post_init__(self) -> None:
        check.integer("block_size", self.block_size, TOKEN_ALIGN)
        if self.block_size % TOKEN_ALIGN:
            raise check.ParameterError("block_size", self.block_size, f"a multiple of {TOKEN_ALIGN}")
        if self.memory_bytes is not None:
            check.integer("kv_cache_memory", self.memory_bytes, 1)
        if self.num_blocks is not None:
            check.integer("num_blocks", self.num_blocks, 1)


@dataclass(frozen=True)
class EngineConfig:
    """numerics: 'fast' (the official QAT points on the platform's fast kernels), 'reference' (the same points in
    the official kernels' order, bit-exact) or 'fp32'; max_model_len: context limit (None:
    the model's max_position_embeddings); enable_mtp: run the MTP block every step and keep its cache (its
    drafts are reported; speculative decoding will use them); seed: draws the sampling seeds of requests that
    give none."""

    numerics: str = "fast"
    platform: str = "cpu"
    max_model_len: int | None = None
    enable_mtp: bool = False
    seed: int = 0
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    engram: EngramPlacement = field(default_factory=EngramPlacement)  # V4.1 Engram tables' tier

    def __post_init__(self) -> None:
        check.choice("numerics", self.numerics, NUMERICS)
        if self.max_model_len is not None:
            check.integer("max_model_len", self.max_model_len, 1)
        check.integer("seed", self.seed, 0)
