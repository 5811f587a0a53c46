"""bench/decode_profile.py's profile on a tiny checkpoint: every timed step is counted, the head is one call a
step, entries nested in others are not counted twice (the rows add up to the step), and the table lists them."""

from __future__ import annotations

import importlib.util
import statistics
import sys
from pathlib import Path

import pytest
import torch

from v4stack.config.numerics import Numerics
from v4stack.modelio.loader import load_model
from v4stack.modelio.writer import tiny_config, write_checkpoint

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("decode_profile", ROOT / "bench" / "decode_profile.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up there
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules[spec.name]


def test_profile_counts_each_step_and_entry_once(bench, tmp_path):
    model = load_model(write_checkpoint(tmp_path / "ckpt", tiny_config(), seed=0), Numerics.from_name("fast"),
                       progress=False)
    prompts = list(torch.randint(3, 512, (2, 12), generator=torch.Generator().manual_seed(0)))
    prof = bench.profile(model, prompts, 3)
    assert len(prof.steps) == 3 and all(s > 0 for s in prof.steps)
    assert prof.entry_calls["lm_head"] == 3  # one head call per step for both rows, none from the prefill or warm-up
    rows = prof.rows()
    assert rows[-1][0] == "outside" and "prepare_weights" not in prof.entry_seconds
    total_ms = sum(ms for _, ms, _, _ in rows)
    assert total_ms == pytest.approx(statistics.mean(prof.steps) * 1e3, rel=1e-6)  # exclusive times: no double count
    assert sum(share for *_, share in rows) == pytest.approx(1.0, rel=1e-6)
