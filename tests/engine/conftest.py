"""Engine test helpers: a step driver without a model (the control plane alone) and a small fp32 model."""

from __future__ import annotations

import pytest
import torch

from v4stack.cache.specs import cache_specs
from v4stack.engine.cache_manager import KVCacheManager
from v4stack.engine.config import SchedulerConfig
from v4stack.engine.request import FinishReason, Request
from v4stack.engine.sampling_params import SamplingParams
from v4stack.engine.scheduler import Scheduler
from v4stack.modelio.writer import tiny_config

EOS = 1


def tiny_specs(block_size: int = 128, mtp: bool = False, tails: bool = True):
    """Window, CSA and HCA layers (compress_ratios 0, 4, 128, 4), block size 128."""
    return cache_specs(tiny_config(), torch.float32, block_size, prefix_tails=tails, with_mtp=mtp)


def make_request(rid: str, n_prompt: int, max_tokens: int = 16, first_token: int = 3) -> Request:
    ids = [first_token + (i % 200) for i in range(n_prompt)]
    return Request(rid, ids, SamplingParams(max_tokens=max_tokens, temperature=0), EOS, 1 << 20)


class FakeSteps:
    """Runs scheduler steps with no model: every request that samples gets token 7 (never EOS); requests
    finish at max_tokens. Mirrors LLMEngine._process for the control plane."""

    def __init__(self, scheduler: Scheduler, mtp: bool = False) -> None:
        self.scheduler, self.mtp = scheduler, mtp

    def step(self):
        out = self.scheduler.schedule()
        for e in out.scheduled:
            self.scheduler.advance(e, mtp_ran=self.mtp)
            if e.samples:
                req = e.request
                req.output_token_ids.append(7)
                if req.num_output_tokens >= req.max_tokens:
                    self.scheduler.finish(req, FinishReason.LENGTH)
        return out


@pytest.fixture
def control_plane():
    """(scheduler, cache manager, driver) over 8 blocks per pool, 4 sequences, 512 tokens per step."""
    def make(num_blocks: int = 8, max_num_seqs: int = 4, budget: int = 512, prefix: bool = True, mtp: bool = False):
        specs = tiny_specs(mtp=mtp)
        cache = KVCacheManager(specs, {p.name: num_blocks for p in specs.pools}, max_num_seqs, prefix)
        sched = Scheduler(SchedulerConfig(max_num_seqs=max_num_seqs, max_num_batched_tokens=budget), cache)
        return sched, cache, FakeSteps(sched, mtp)
    return make
