"""Blocks of one pool group: exact free accounting, reference counts and the prefix-cache index.

Contract:
* ``num_blocks`` ids ``0..num_blocks-1``. A block is *held* (ref_count > 0) by the requests whose tables name it,
  or *free* (ref_count 0). Free blocks wait in one queue in eviction order: the front is taken first.
* A block may carry a hash (it is a full block whose content is known by that hash). Freeing a hashed block
  keeps it findable (``lookup``) until it is taken for new content: that is LRU eviction of the prefix cache.
  Freed blocks without a hash go to the front (nothing to keep), hashed ones to the back (most recently used).
* ``take`` returns a free block (evicting its hash if it had one); ``hold`` revives a cached block for another
  request (ref + 1, out of the free queue); ``release`` drops one reference.
* ``num_free`` counts every free block, cached or not: what can be allocated now.
Knows nothing of requests, tokens or tensors.
"""

from __future__ import annotations

from collections import OrderedDict


class BlockPool:
    def __init__(self, name: str, num_blocks: int) -> None:
        if num_blocks < 1:
            raise ValueError(f"pool {name!r} needs at least one block, got {num_blocks}")
        self.name, self.num_blocks = name, num_blocks
        self.ref_count = [0] * num_blocks
        self.block_hash: list[bytes | None] = [None] * num_blocks
        self._cached: dict[bytes, int] = {}
        self._free: OrderedDict[int, None] = OrderedDict((b, None) for b in range(num_blocks))
        self.num_evictions = 0

    @property
    def num_free(self) -> int:
        return len(self._free)

    @property
    def num_cached(self) -> int:
        """Blocks findable by hash (held or free)."""
        return len(self._cached)

    @property
    def usage(self) -> float:
        """Fraction of blocks held by requests (cached free blocks count as free)."""
        return 1.0 - self.num_free / self.num_blocks

    def free_order(self) -> list[int]:
        """Free block ids, next to be taken first (for tests and debugging)."""
        return list(self._free)

    def lookup(self, block_hash: bytes) -> int | None:
        return self._cached.get(block_hash)

    def take(self) -> int:
        """A free block for new content, ref_count 1; its old hash (if any) is evicted."""
        if not self._free:
            raise RuntimeError(f"pool {self.name!r}: no free block (the caller must check num_free)")
        block, _ = self._free.popitem(last=False)
        old = self.block_hash[block]
        if old is not None:
            del self._cached[old]
            self.block_hash[block] = None
            self.num_evictions += 1
        self.ref_count[block] = 1
        return block

    def hold(self, block: int) -> None:
        """One more reference to a (cached) block."""
        if self.ref_count[block] == 0:
            del self._free[block]
        self.ref_count[block] += 1

    def release(self, block: int) -> None:
        if self.ref_count[block] <= 0:
            raise RuntimeError(f"pool {self.name!r}: block {block} released more often than held")
        self.ref_count[block] -= 1
        if self.ref_count[block] == 0:
            self._free[block] = None
            if self.block_hash[block] is None:
                self._free.move_to_end(block, last=False)

    def set_hash(self, block: int, block_hash: bytes) -> None:
        """Make a held, full block findable by ``block_hash`` (a second block with the same content is left
        unhashed: one copy is enough)."""
        if self.block_hash[block] is not None or block_hash in self._cached:
            return
        self.block_hash[block] = block_hash
        self._cached[block_hash] = block

    def reset_cache(self) -> None:
        """Forget every hash (e.g. after the weights change); held blocks stay held."""
        self._cached.clear()
        self.block_hash = [None] * self.num_blocks
