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
