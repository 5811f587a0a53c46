"""Scheduler + cache manager with no model (tokens are faked): chunking, FCFS, preemption, abort, leaks."""

import random

import pytest

from tests.engine.conftest import make_request
from v4stack.cache.view import NO_BLOCK
from v4stack.engine.request import FinishReason, RequestStatus


def test_long_prompt_is_chunked_by_the_token_budget(control_plane):
    sched, cache, run = control_plane(budget=100)
    req = make_request("a", 250, max_tokens=2)
    sched.add(req)
    steps = [[(e.request.request_id, e.start, e.num_new, e.samples) for e in run.step().scheduled] for _ in range(4)]
    # 100 + 100 + 50 prompt tokens, the last chunk samples token 1; then one decode samples token 2
    assert steps == [[("a", 0, 100, False)], [("a", 100, 100, False)], [("a", 200, 50, True)], [("a", 250, 1, True)]]
    assert req.is_finished and cache.held_blocks() == {"window": 0, "c4": 0, "c128": 0}


def test_decodes_go_first_then_waiting_requests_fill_the_budget_in_order(control_plane):
    sched, cache, run = control_plane(budget=64)
    a, b, c = make_request("a", 60), make_request("b", 40), make_request("c", 10)
    for r in (a, b, c):
        sched.add(r)
    first = [(e.request.request_id, e.num_new) for e in run.step().scheduled]
    assert first == [("a", 60), ("b", 4)]  # b gets the 4 tokens left; c waits (no overtaking)
    second = [(e.request.request_id, e.num_new) for e in run.step().scheduled]
    assert second == [("a", 1), ("b", 36), ("c", 10)]  # running first (a decodes, b continues), then c


def test_max_num_seqs_bounds_the_running_set(control_plane):
    sched, cache, run = control_plane(max_num_seqs=2)
    reqs = [make_request(str(i), 10) for i in range(3)]
    for r in reqs:
        sched.add(r)
    out = run.step()
    assert [e.request.request_id for e in out.scheduled] == ["0", "1"]
    assert reqs[2].status == RequestStatus.WAITING


def test_newest_running_request_is_preempted_and_recomputed(control_plane):
    # 3 blocks per pool: a (200 tokens) and b (120) fit at first (2 + 1 blocks); when b reaches position 128
    # it needs a 4th c4 block, so the newest running request (b itself) is preempted
    sched, cache, run = control_plane(num_blocks=3, prefix=False)
    a, b = make_request("a", 200, max_tokens=40), make_request("b", 120, max_tokens=40, first_token=50)
    sched.add(a)
    sched.add(b)
    preempted_at = None
    for step in range(200):
        out = run.step()
        if out.preempted and preempted_at is None:
            preempted_at = step
            assert [r.request_id for r in out.preempted] == ["b"]
            assert sched.waiting[0] is b and b.status == RequestStatus.PREEMPTED
            assert b.num_computed_tokens == 0 and b.cache is None
            assert [e.request.request_id for e in out.scheduled] == ["a"]  # nothing admitted in that step
            kept_output = list(b.output_token_ids)
        if not sched.has_work:
            break
    assert preempted_at is not None
    assert a.is_finished and b.is_finished and b.num_output_tokens == 40
    assert b.output_token_ids[:len(kept_output)] == kept_output  # recompute keeps what was already generated
    assert cache.held_blocks() == {"window": 0, "c4": 0, "c128": 0}


def test_finish_frees_everything_at_once_wherever_the_request_is(control_plane):
    sched, cache, run = control_plane()
    a, b = make_request("a", 300), make_request("b", 20)
    sched.add(a)
    sched.add(b)
    run.step()
    sched.finish(a, FinishReason.ABORT)
    assert a.cache is None and a.finish_reason == FinishReason.ABORT and a not in sched.running
    waiting = make_request("w", 5)
    sched.add(waiting)
    sched.finish(waiting, FinishReason.ABORT)  # still waiting: just removed
    assert waiting not in sched.waiting
    sched.finish(b, FinishReason.ABORT)
    assert cache.held_blocks() == {"window": 0, "c4": 0, "c128": 0}


def _named_blocks(reqs) -> dict[str, int]:
    counts: dict[str, int] = {}
    for r in reqs:
        if r.cache is None:
            continue
        for g, table in r.cache.block_tables.items():
            counts[g] = counts.get(g, 0) + sum(b != NO_BLOCK for b in table)
    return counts


@pytest.mark.parametrize("mtp", [False, True], ids=["no_mtp", "mtp"])
def test_no_block_leaks_after_1000_random_operations(control_plane, mtp):
    """Submit / abort / step (which finishes, preempts and serves prefix hits) at random; after every
    operation the pools' reference counts equal the blocks named by live requests, and at the end every block
    is free. Prompts starting with the same token share their prefix, so prefix hits (and, with MTP, the copy
    of the MTP window block) happen along the way."""
    sched, cache, run = control_plane(num_blocks=6, max_num_seqs=4, budget=160, mtp=mtp)
    rng = random.Random(0)
    live, preemptions, copies = [], 0, 0
    for op in range(1000):
        kind = rng.random()
        if kind < 0.3:
            req = make_request(f"r{op}", rng.randint(1, 400), max_tokens=rng.randint(1, 60),
                               first_token=rng.randint(3, 100))
            sched.add(req)
            live.append(req)
        elif kind < 0.4 and live:
            sched.finish(rng.choice(live), FinishReason.ABORT)
        else:
            out = run.step()
            preemptions += len(out.preempted)
            copies += len(out.cache_ops.copies)
        live = [r for r in live if not r.is_finished]
        held = cache.held_blocks()
        named = _named_blocks(live)
        assert all(held[g] == named.get(g, 0) for g in held), (op, held, named)
    for req in live:
        sched.finish(req, FinishReason.ABORT)
    assert preemptions > 0  # the run did exercise preemption
    assert cache.prefix_hits > 0 and (copies > 0) == mtp  # ... and prefix hits, with their MTP block copies
    assert cache.held_blocks() == {g: 0 for g in cache.pools}
    assert all(p.num_free == p.num_blocks for p in cache.pools.values())
    assert sorted(cache._free_slots) == list(range(cache.num_state_slots))
