"""BlockPool: exact ids, reference counts and the eviction order of the prefix cache."""

import pytest

from v4stack.engine.block_pool import BlockPool


def test_take_release_hold_and_eviction_order():
    pool = BlockPool("c4", 4)
    a, b, c = pool.take(), pool.take(), pool.take()
    assert (a, b, c) == (0, 1, 2)  # fresh blocks are taken in id order
    assert pool.num_free == 1 and pool.ref_count == [1, 1, 1, 0]
    pool.set_hash(a, b"h0")
    pool.set_hash(b, b"h1")
    pool.release(b)  # hashed: kept findable, goes to the back of the free queue (most recently used)
    pool.release(c)  # unhashed: nothing worth keeping, goes to the front (taken first)
    assert pool.free_order() == [2, 3, 1]
    assert pool.lookup(b"h1") == 1 and pool.num_cached == 2
    pool.hold(1)  # a prefix hit revives the cached block: out of the free queue, ref 1 again
    assert pool.free_order() == [2, 3] and pool.ref_count[1] == 1
    pool.release(1)
    pool.release(a)  # both hashed now, released in this order -> evicted in this order
    assert pool.free_order() == [2, 3, 1, 0]
    assert [pool.take() for _ in range(3)] == [2, 3, 1]  # the third take evicts h1 (least recently used)
    assert pool.lookup(b"h1") is None and pool.lookup(b"h0") == 0 and pool.num_evictions == 1


def test_shared_block_needs_every_release():
    pool = BlockPool("window", 2)
    blk = pool.take()
    pool.set_hash(blk, b"x")
    pool.hold(blk)
    pool.release(blk)
    assert pool.ref_count[blk] == 1 and blk not in pool.free_order()
    pool.release(blk)
    assert pool.ref_count[blk] == 0 and pool.free_order()[-1] == blk
    with pytest.raises(RuntimeError, match="released more often than held"):
        pool.release(blk)


def test_a_second_copy_of_the_same_content_stays_unhashed():
    pool = BlockPool("c128", 3)
    first, second = pool.take(), pool.take()
    pool.set_hash(first, b"same")
    pool.set_hash(second, b"same")
    assert pool.block_hash[second] is None and pool.lookup(b"same") == first


def test_taking_from_an_empty_pool_is_a_bug_not_a_silent_overwrite():
    pool = BlockPool("c4", 1)
    pool.take()
    with pytest.raises(RuntimeError, match="no free block"):
        pool.take()
