"""How many blocks a sliding-window pool group (window, mtp_window) allocates: one rule for the engine's pool
sizing (``engine.llm_engine.size_cache``, ``engine.cache_manager``) and the planner (``planner.memory``).

Pure integer arithmetic (no torch), so the planner can import it. Block size B tokens, window W rows:

* between steps a sequence holds the blocks with one of its last W positions (one more for the MTP block, which
  may lag the backbone by ``MTP_LAG`` token): they span ceil((W + MTP_LAG) / B) blocks, one more when they
  straddle a block boundary -> ``per_sequence_blocks``;
* a step writes the raw rows of all its new tokens into the pool before attention reads them (the chunk's own rows
  are keys of its queries, and a later prefix hit reads the window of any block boundary inside the chunk), so the
  pool also has ceil(max_num_batched_tokens / B) blocks for one step's tokens, shared by the step's sequences
  -> ``step_blocks``;
* with prefix caching the pool is doubled, so that recently released windows stay findable by hash.

Every block is a full block of B raw rows per layer: a window of W = 128 rows at B = 128 costs 3 blocks per
sequence (384 rows), not a 128-row ring.
"""

from __future__ import annotations

# The engine's default block size (engine.config.CacheConfig: cache.specs.TOKEN_ALIGN), which the planner assumes;
# tests/engine/test_cache_specs.py asserts they are equal.
DEFAULT_BLOCK_SIZE = 128
MTP_LAG = 1  # the MTP block may run one position behind the backbone (engine.cache_manager)
PREFIX_CACHE_FACTOR = 2  # prefix caching keeps as many released window blocks findable as are in use


def per_sequence_blocks(window: int, block_size: int) -> int:
    """Blocks one sequence keeps between steps in a sliding group of ``window`` rows."""
    return -(-(window + MTP_LAG) // block_size) + 1


def step_blocks(step_tokens: int, block_size: int) -> int:
    """Blocks for the raw rows of one step's ``step_tokens`` new tokens (``max_num_batched_tokens``)."""
    return -(-step_tokens // block_size)


def sliding_pool_blocks(window: int, block_size: int, sequences: int, step_tokens: int,
                        prefix_caching: bool) -> int:
    """Blocks the engine allocates for one sliding group: ``sequences`` windows + one step's rows (x2 with
    prefix caching)."""
    blocks = sequences * per_sequence_blocks(window, block_size) + step_blocks(step_tokens, block_size)
    return blocks * (PREFIX_CACHE_FACTOR if prefix_caching else 1)
