"""KVCacheManager on the tiny V4 schedule (window, CSA, HCA layers; block 128): exact block tables, sliding
release, prefix hits and the tensor work they imply."""

from tests.engine.conftest import make_request, tiny_specs
from v4stack.cache.view import NO_BLOCK
from v4stack.engine.cache_manager import KVCacheManager


def manager(num_blocks=8, mtp=False, prefix=True):
    specs = tiny_specs(mtp=mtp)
    return KVCacheManager(specs, {p.name: num_blocks for p in specs.pools}, 4, prefix)


def test_pools_of_the_tiny_schedule():
    specs = tiny_specs(mtp=True)
    assert [p.name for p in specs.pools] == ["window", "mtp_window", "c4", "c128"]
    assert specs.pool("c4").layers == (1, 3) and specs.pool("c128").layers == (2,)
    assert specs.pool("window").sliding_window == 128 and specs.pool("c4").sliding_window is None


def test_prompt_blocks_and_sliding_release():
    cache = manager()
    req = make_request("a", 300)
    assert cache.allocate(req, 300)
    # 300 tokens -> blocks 0..2 in every group (positions 0-127, 128-255, 256-299)
    assert req.cache.block_tables == {"window": [0, 1, 2], "c4": [0, 1, 2], "c128": [0, 1, 2]}
    assert req.cache.state_slot == 0
    req.num_computed_tokens = 300
    cache.cache_full_blocks(req)  # blocks 0 and 1 are full -> hashed in every group
    assert cache.pools["c4"].num_cached == 2 and cache.pools["window"].num_cached == 2
    req.output_token_ids.append(5)
    assert cache.allocate(req, 1)  # decode at position 300: its window starts at 173 -> window block 0 is released
    assert req.cache.block_tables["window"] == [NO_BLOCK, 1, 2]
    assert cache.pools["window"].ref_count[:3] == [0, 1, 1]
    assert cache.pools["window"].free_order()[-1] == 0  # hashed: kept at the back for a later prefix hit
    assert req.cache.block_tables["c4"] == [0, 1, 2]  # whole-sequence pools keep everything


def test_prefix_hit_holds_shared_blocks_and_restores_compressor_state():
    cache = manager()
    a = make_request("a", 300)
    cache.allocate(a, 300)
    a.num_computed_tokens = 300
    cache.cache_full_blocks(a)
    cache.take_ops()
    b = make_request("b", 290)  # same first 290 tokens -> 2 full blocks (256 tokens) are reusable
    hit = cache.find_prefix(b)
    assert hit.num_blocks == 2 and hit.num_tokens == 256
    # whole-sequence groups need blocks 0 and 1; the window only needs block 1 (positions 129..255)
    assert hit.blocks == {"window": {1: 1}, "c4": {0: 0, 1: 1}, "c128": {0: 0, 1: 1}}
    assert cache.allocate(b, 290 - 256, hit)
    assert b.num_computed_tokens == 256 and b.num_cached_tokens == 256
    assert b.cache.block_tables == {"window": [NO_BLOCK, 1, 3], "c4": [0, 1, 3], "c128": [0, 1, 3]}
    assert cache.pools["c4"].ref_count[:4] == [2, 2, 1, 1]  # shared by a and b
    ops = cache.take_ops()
    assert ops.copies == []  # no MTP block: nothing to copy
    assert ops.restores == [(b.cache.state_slot, 1, 256)]  # ratio-4 rings refilled from c4 block 1's tails
    cache.free(a)
    cache.free(b)
    assert cache.held_blocks() == {"window": 0, "c4": 0, "c128": 0}


def test_prefix_hit_with_mtp_copies_the_last_mtp_block():
    cache = manager(mtp=True)
    a = make_request("a", 300)
    cache.allocate(a, 300)
    a.num_computed_tokens = a.num_mtp_computed_tokens = 300
    cache.cache_full_blocks(a)
    cache.take_ops()
    b = make_request("b", 280)
    hit = cache.find_prefix(b)
    assert hit.num_blocks == 2
    cache.allocate(b, 280 - 256, hit)
    # MTP row 255 depends on the token after the prefix, so b gets a private copy of MTP block 1 and restarts
    # the MTP block one position behind
    assert b.num_mtp_computed_tokens == 255
    mtp_table = b.cache.block_tables["mtp_window"]
    assert mtp_table[1] not in (NO_BLOCK, a.cache.block_tables["mtp_window"][1])
    assert cache.take_ops().copies == [("mtp_window", a.cache.block_tables["mtp_window"][1], mtp_table[1])]


def test_a_hit_shrinks_to_the_last_boundary_whose_window_block_survived():
    specs = tiny_specs()
    cache = KVCacheManager(specs, {"window": 3, "c4": 8, "c128": 8}, 4, True)
    a = make_request("a", 300)
    cache.allocate(a, 300)
    a.num_computed_tokens = 300
    cache.cache_full_blocks(a)
    cache.free(a)  # released last-first: window free order [2 (unhashed, front), 1, 0]
    assert cache.pools["window"].free_order() == [2, 1, 0]
    other = make_request("o", 200, first_token=90)
    assert cache.allocate(other, 200)  # takes window blocks 2 and 1: the window at boundary 256 is evicted
    assert cache.pools["window"].lookup(a.block_hashes[1]) is None
    assert cache.pools["c4"].lookup(a.block_hashes[1]) is not None  # the compressed rows are still cached
    hit = cache.find_prefix(make_request("b", 290))
    assert hit.num_blocks == 1 and hit.blocks["window"] == {0: 0}  # boundary 128: window block 0 survived


def test_the_last_token_is_always_computed():
    cache = manager()
    a = make_request("a", 256)
    cache.allocate(a, 256)
    a.num_computed_tokens = 256
    cache.cache_full_blocks(a)
    hit = cache.find_prefix(make_request("b", 256))  # identical prompt of exactly 2 blocks
    assert hit.num_blocks == 1  # at most (256 - 1) // 128 blocks: the last token needs its logits


def test_allocation_failure_holds_nothing_new():
    cache = manager(num_blocks=2)
    a = make_request("a", 200)
    assert cache.allocate(a, 200)
    before = cache.held_blocks()
    b = make_request("b", 100, first_token=50)
    assert not cache.allocate(b, 100)  # c4 has no free block left
    assert cache.held_blocks() == before and b.cache is None
