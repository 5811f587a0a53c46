"""DeepSeek-V4.1 through the batched engine (paged cache, ``PagedV41State``): a request's greedy output equals the
model's own hand-driven drive (prefill, then each argmax fed back, on ``V41State``: the golden runner's drive) in
tokens and fp32 logits within 1e-5, alone, in a batch of mixed lengths, with chunked prefill of several chunk
sizes and after a preemption; the reference numerics through the engine are bit-identical to that drive; a
prefix-cache hit is bit-identical to a cold run cut at the same boundary; Engram tiers give identical tokens.
Checkpoint: ``write_v41_checkpoint`` (SWA, Full ratio 2 and 1, Reuse, Reindex with candidate blocks, Engram
before layers 1 and 3, DSpark), window 128, so prompts cross blocks, windows and open groups."""

from __future__ import annotations

import pytest
import torch

from tests.engine.engine_harness import make_engine, max_diff, run_to_end, run_with_preemption
from v4stack.config.engram_placement import EngramPlacement
from v4stack.config.numerics import Numerics
from v4stack.config.validation import ParameterError
from v4stack.engine.config import CacheConfig, EngineConfig, SchedulerConfig
from v4stack.engine.llm import LLM
from v4stack.engine.sampling_params import SamplingParams
from v4stack.modelio.loader import load_model
from v4stack.modelio.writer import write_v41_checkpoint

FP32_TOL = 1e-5
NEW = 5
GREEDY = SamplingParams(temperature=0, max_tokens=NEW, ignore_eos=True)
# lengths that cut the 2-token groups, the 128-token window and 128-token blocks in different places
LENGTHS = (300, 5, 129, 257, 77, 1, 128, 131)
VOCAB_LO, VOCAB_HI = 3, 500  # tiny vocabulary is 512; keep clear of BOS/EOS/pad and the DSpark noise id


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return write_v41_checkpoint(tmp_path_factory.mktemp("v41_engine"), seed=11)


@pytest.fixture(scope="module")
def model(ckpt):
    return load_model(ckpt, Numerics.exact_fp32(), progress=False)


def random_prompts(lengths, seed):
    g = torch.Generator().manual_seed(seed)
    return {f"r{i}": torch.randint(VOCAB_LO, VOCAB_HI, (n,), generator=g).tolist() for i, n in enumerate(lengths)}


def hand_drive(model, ids: list[int], new: int = NEW):
    """Greedy ids and the logits each was taken from: one prefill, then one token a step on V41State."""
    state = model.new_state()
    logits = model(state, torch.tensor(ids)).logits
    out, rows = [], []
    for _ in range(new):
        rows.append(logits[0])
        out.append(int(logits[0].argmax()))
        logits = model(state, torch.tensor(out[-1:])).logits
    return out, rows


@pytest.fixture(scope="module")
def prompts():
    return random_prompts(LENGTHS, 1)


@pytest.fixture(scope="module")
def expected(model, prompts):
    return {rid: hand_drive(model, ids) for rid, ids in prompts.items()}


def check_same(expected, outs, rec, tol=FP32_TOL):
    for rid, (tokens, logits) in expected.items():
        assert outs[rid].outputs[0].token_ids == tokens, rid
        assert max_diff(rec.logits[rid], logits) <= tol, rid


def test_alone_equals_the_hand_driven_sequence(model, prompts, expected):
    for rid in ("r0", "r1"):
        engine, rec = make_engine(model)
        check_same({rid: expected[rid]}, run_to_end(engine, {rid: prompts[rid]}, GREEDY), rec, tol=0.0)


def test_a_batch_of_mixed_lengths_equals_the_hand_driven_sequences(model, prompts, expected):
    engine, rec = make_engine(model)
    outs = run_to_end(engine, prompts, GREEDY)
    check_same(expected, outs, rec)
    assert engine.stats.num_steps < len(prompts) * NEW / 2  # they really ran together
    assert engine.cache.held_blocks() == {g: 0 for g in engine.cache.pools}


@pytest.mark.parametrize("chunk", [37, 128, 131])
def test_chunked_prefill_of_several_sizes_matches(model, prompts, expected, chunk):
    engine, rec = make_engine(model, EngineConfig(numerics="fp32",
                                                  scheduler=SchedulerConfig(max_num_batched_tokens=chunk)))
    picked = {rid: prompts[rid] for rid in ("r0", "r2", "r3", "r7")}
    check_same({rid: expected[rid] for rid in picked}, run_to_end(engine, picked, GREEDY), rec)


def test_preemption_and_recompute_match(model):
    prompts = random_prompts((254, 253, 125), 3)
    run_with_preemption(model, prompts, GREEDY, {rid: hand_drive(model, ids) for rid, ids in prompts.items()},
                        FP32_TOL)


def test_reference_numerics_through_the_engine_are_bit_identical(ckpt, prompts):
    ref = load_model(ckpt, Numerics.reference(), progress=False)
    picked = {rid: prompts[rid] for rid in ("r0", "r2")}
    want = {rid: hand_drive(ref, ids) for rid, ids in picked.items()}
    engine, rec = make_engine(ref, EngineConfig(numerics="reference"))
    check_same(want, run_to_end(engine, picked, GREEDY), rec, tol=0.0)


def test_prefix_hit_is_bit_identical_to_a_cold_run_cut_at_the_same_boundary(model):
    """B shares 270 tokens with A: a hit of 2 blocks (256 tokens); B's next tokens start mid window with
    Engram n-grams reaching back into the cached prefix."""
    g = torch.Generator().manual_seed(2)
    a = torch.randint(VOCAB_LO, VOCAB_HI, (300,), generator=g).tolist()
    b = a[:270] + torch.randint(VOCAB_LO, VOCAB_HI, (45,), generator=g).tolist()
    cold, cold_rec = make_engine(model, EngineConfig(numerics="fp32",
                                                     scheduler=SchedulerConfig(max_num_batched_tokens=256)))
    cold_out = run_to_end(cold, {"b": b}, GREEDY)["b"]
    hot, hot_rec = make_engine(model)
    run_to_end(hot, {"a": a}, SamplingParams(temperature=0, max_tokens=2))
    hot_out = run_to_end(hot, {"b": b}, GREEDY)["b"]
    assert hot_out.num_cached_tokens == 256
    assert hot_out.outputs[0].token_ids == cold_out.outputs[0].token_ids
    assert all(torch.equal(x, y) for x, y in zip(hot_rec.logits["b"], cold_rec.logits["b"]))
    assert len(hot_rec.logits["b"]) == NEW
    assert hot.cache.held_blocks() == {g: 0 for g in hot.cache.pools}


@pytest.mark.parametrize("tier", ["host", "disk"])
def test_engram_tiers_through_the_engine_give_identical_tokens(ckpt, prompts, tier):
    picked = {rid: prompts[rid] for rid in ("r0", "r4")}
    results = {}
    for name in ("device", tier):
        placement = EngramPlacement(name, cache_bytes=1 << 14)  # far below the tables: the disk tier misses
        m = load_model(ckpt, Numerics.exact_fp32(), progress=False, engram=placement)
        engine, rec = make_engine(m, EngineConfig(numerics="fp32", engram=placement))
        outs = run_to_end(engine, picked, GREEDY)
        results[name] = ({r: o.outputs[0].token_ids for r, o in outs.items()}, rec.logits)
    assert results[tier][0] == results["device"][0]
    for rid in picked:
        assert all(torch.equal(x, y) for x, y in zip(results[tier][1][rid], results["device"][1][rid]))


def test_llm_generate_runs_a_v41_checkpoint(ckpt, model, prompts):
    llm = LLM(str(ckpt), EngineConfig(numerics="fp32", cache=CacheConfig(memory_bytes=1 << 28)))
    outs = llm.generate([prompts["r1"], prompts["r4"]], GREEDY)
    assert [o.outputs[0].token_ids for o in outs] == [hand_drive(model, prompts[r])[0] for r in ("r1", "r4")]


def test_mtp_is_refused_with_one_line_and_the_draft_api_stays_callable(model, prompts):
    with pytest.raises(ParameterError, match="enable_mtp.*DSpark"):
        make_engine(model, EngineConfig(numerics="fp32", enable_mtp=True))
    state = model.new_state()
    out = model(state, torch.tensor(prompts["r1"]))
    draft = model.draft(state, int(out.logits[0].argmax()), out.main_hidden)
    assert draft.ids.shape == (model.cfg.dspark.block_size,) and torch.isfinite(draft.logits).all()
