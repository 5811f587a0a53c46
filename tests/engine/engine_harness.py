"""Drive an LLMEngine over prompts and record what the sampler saw (logits per request and step)."""

from __future__ import annotations

import torch

from v4stack.engine.config import EngineConfig
from v4stack.engine.llm_engine import LLMEngine
from v4stack.engine.sampling_params import SamplingParams

CACHE_BYTES = 1 << 30  # the engine's default budget, fixed so tests do not depend on this machine's memory


class RecordingSampler:
    """Wraps the engine's sampler; keeps each request's logits rows in step order."""

    def __init__(self, inner) -> None:
        self.inner, self.logits = inner, {}

    def __call__(self, logits, requests):
        for row, r in zip(logits, requests):
            self.logits.setdefault(r.request_id, []).append(row.clone())
        return self.inner(logits, requests)


def make_engine(model, config: EngineConfig | None = None, tokenizer=None) -> tuple[LLMEngine, RecordingSampler]:
    engine = LLMEngine(model, tokenizer, config or EngineConfig(numerics="fp32"), available_bytes=4 * CACHE_BYTES)
    rec = RecordingSampler(engine.runner.sampler)
    engine.runner.sampler = rec
    return engine, rec


def run_to_end(engine, prompts: dict[str, list[int]], params: SamplingParams) -> dict[str, list[int]]:
    for rid, ids in prompts.items():
        engine.add_request(rid, ids, params)
    outs = {}
    while engine.has_unfinished():
        for out in engine.step():
            if out.finished:
                outs[out.request_id] = out
    return outs


def max_diff(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    assert len(a) == len(b)
    return max((x - y).abs().max().item() for x, y in zip(a, b))


PREEMPTION_BLOCKS = 5  # whole-sequence blocks of the preemption tests: prompts of ~250, ~250 and ~125 tokens fit
# at admission (2 + 2 + 1 blocks), but each grows across a block boundary while decoding, so the newest running
# request is preempted and recomputed


def run_with_preemption(model, prompts: dict[str, list[int]], params: SamplingParams, want: dict, tol: float):
    """Run ``prompts`` in a cache of PREEMPTION_BLOCKS blocks (fp32, no prefix caching); check that something was
    preempted and that each request's tokens equal ``want[rid][0]`` and its last logits rows ``want[rid][1]``
    within ``tol`` (a preempted request is sampled again at the steps it had done before), nothing left held."""
    from v4stack.engine.config import CacheConfig

    config = EngineConfig(numerics="fp32", cache=CacheConfig(num_blocks=PREEMPTION_BLOCKS,
                                                             enable_prefix_caching=False))
    engine, rec = make_engine(model, config)
    outs = run_to_end(engine, prompts, params)
    assert engine.stats.num_preemptions > 0
    for rid, (tokens, logits) in want.items():
        assert outs[rid].outputs[0].token_ids == tokens, rid
        assert max_diff(rec.logits[rid][-len(logits):], logits) <= tol, rid
    assert engine.cache.held_blocks() == {g: 0 for g in engine.cache.pools}
