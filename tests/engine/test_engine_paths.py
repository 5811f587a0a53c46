"""A request's greedy output is the same (tokens; fp32 logits within 1e-5) alone, in a batch of 16 mixed
requests, with chunked prefill, after preemption and recompute, and on a prefix-cache hit (bit-identical to a
cold run that stops at the same boundary). Checkpoint: the golden flash_like case (window, CSA, HCA layers,
hash and noaux MoE, mHC with 3 streams, MTP), in fp32. Rows computed in batches of other sizes differ by fp32
GEMM blocking only: measured at most 7e-6 here."""

import pytest
import torch

from tests.conftest import golden_case
from tests.engine.engine_harness import make_engine, max_diff, run_to_end, run_with_preemption
from v4stack.config.numerics import Numerics
from v4stack.engine.config import EngineConfig, SchedulerConfig
from v4stack.engine.sampling_params import SamplingParams
from v4stack.modelio.loader import load_model

FP32_TOL = 1e-5
# prompt lengths that cut 4-token groups, the 128-token window and 128-token blocks in different places
LENGTHS = (300, 5, 129, 257, 77, 400, 1, 128, 256, 130, 64, 3, 200, 311, 150, 90)
GREEDY = SamplingParams(temperature=0, max_tokens=6)
VOCAB = 2048


@pytest.fixture(scope="module")
def model():
    return load_model(golden_case("flash_like"), Numerics.exact_fp32(), progress=False)


def random_prompts(lengths, seed):
    g = torch.Generator().manual_seed(seed)
    return {f"r{i}": torch.randint(3, VOCAB, (n,), generator=g).tolist() for i, n in enumerate(lengths)}


@pytest.fixture(scope="module")
def prompts():
    return random_prompts(LENGTHS, 1)


@pytest.fixture(scope="module")
def alone(model, prompts):
    """Each of the first four requests run on its own."""
    out = {}
    for rid in list(prompts)[:4]:
        engine, rec = make_engine(model)
        res = run_to_end(engine, {rid: prompts[rid]}, GREEDY)
        out[rid] = (res[rid].outputs[0].token_ids, rec.logits[rid])
    return out


def check_same(alone, outs, rec):
    for rid, (tokens, logits) in alone.items():
        assert outs[rid].outputs[0].token_ids == tokens, rid
        assert max_diff(rec.logits[rid], logits) <= FP32_TOL, rid


def test_batch_of_16_mixed_requests_matches_running_alone(model, prompts, alone):
    engine, rec = make_engine(model)
    outs = run_to_end(engine, prompts, GREEDY)
    check_same(alone, outs, rec)
    assert engine.stats.num_steps < 16 * GREEDY.max_tokens / 2  # they really ran together


@pytest.mark.parametrize("chunk", [37, 131])
def test_chunked_prefill_of_any_size_matches(model, prompts, alone, chunk):
    engine, rec = make_engine(model, EngineConfig(numerics="fp32", scheduler=SchedulerConfig(max_num_batched_tokens=chunk)))
    outs = run_to_end(engine, {rid: prompts[rid] for rid in alone}, GREEDY)
    check_same(alone, outs, rec)


def test_preemption_and_recompute_match(model):
    prompts = random_prompts((250, 252, 124), 3)
    alone = {}
    for rid, ids in prompts.items():
        engine, rec = make_engine(model)
        alone[rid] = (run_to_end(engine, {rid: ids}, GREEDY)[rid].outputs[0].token_ids, rec.logits[rid])
    run_with_preemption(model, prompts, GREEDY, alone, FP32_TOL)


@pytest.mark.parametrize("mtp", [False, True], ids=["no_mtp", "mtp"])
def test_prefix_hit_is_bit_identical_to_a_cold_run_cut_at_the_same_boundary(model, mtp):
    """B shares 270 tokens with A: a hit of 2 blocks (256 tokens); B's next 59 tokens then start mid window
    and right after a group whose overlap the next ratio-4 entry still pools."""
    g = torch.Generator().manual_seed(2)
    a = torch.randint(3, VOCAB, (300,), generator=g).tolist()
    b = a[:270] + torch.randint(3, VOCAB, (45,), generator=g).tolist()
    params = SamplingParams(temperature=0, max_tokens=8)
    # cold: B alone, its prefill cut at 256 by the token budget, so the same work happens after the boundary
    cold, cold_rec = make_engine(model, EngineConfig(numerics="fp32", enable_mtp=mtp,
                                                     scheduler=SchedulerConfig(max_num_batched_tokens=256)))
    cold_drafts = _record_drafts(cold)
    cold_out = run_to_end(cold, {"b": b}, params)["b"]
    hot, hot_rec = make_engine(model, EngineConfig(numerics="fp32", enable_mtp=mtp))
    hot_drafts = _record_drafts(hot)
    run_to_end(hot, {"a": a}, SamplingParams(temperature=0, max_tokens=3))
    hot_out = run_to_end(hot, {"b": b}, params)["b"]
    assert hot_out.num_cached_tokens == 256
    assert hot_out.outputs[0].token_ids == cold_out.outputs[0].token_ids
    assert all(torch.equal(x, y) for x, y in zip(hot_rec.logits["b"], cold_rec.logits["b"]))
    if mtp:
        assert hot_drafts["b"] == cold_drafts["b"] and len(hot_drafts["b"]) == params.max_tokens
    assert hot.cache.held_blocks() == {g: 0 for g in hot.cache.pools}


def _record_drafts(engine):
    drafts: dict[str, list[int]] = {}
    execute = engine.runner.execute

    def wrapped(sched):
        result = execute(sched)
        for rid, token in result.drafts.items():
            drafts.setdefault(rid, []).append(token)
        return result
    engine.runner.execute = wrapped
    return drafts


def test_seeded_sampling_gives_the_same_tokens_alone_and_in_a_batch(model, prompts):
    params = SamplingParams(temperature=1.0, top_p=0.9, seed=11, max_tokens=8)
    solo, _ = make_engine(model)
    one = run_to_end(solo, {"r1": prompts["r1"]}, params)["r1"].outputs[0].token_ids
    many, _ = make_engine(model)
    for rid in ("r0", "r2", "r3"):
        many.add_request(rid, prompts[rid], SamplingParams(temperature=1.0, max_tokens=8))
    both = run_to_end(many, {"r1": prompts["r1"]}, params)["r1"].outputs[0].token_ids
    assert one == both
