"""bench/engine_throughput.py's measuring functions on a tiny checkpoint: the CPU clock, the prefill share and the
table's multiples of the batch-1 rate (the figures issue #9 asks the bench to print)."""

from __future__ import annotations

import importlib.util
import sys
import time
from pathlib import Path

import pytest
import torch

from v4stack.modelio.writer import tiny_config, write_checkpoint

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(ROOT))  # the bench imports bench.decode_bench
    try:
        spec = importlib.util.spec_from_file_location("engine_throughput", ROOT / "bench" / "engine_throughput.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.path.remove(str(ROOT))


def test_cpu_clock_figures_and_table(bench, tmp_path):
    assert bench.CLOCKS["cpu"] is time.process_time
    directory = write_checkpoint(tmp_path / "ckpt", tiny_config(), seed=0)
    prompts = torch.randint(3, 512, (2, 16), generator=torch.Generator().manual_seed(0))
    one = bench.run_v4stack(directory, "fast", prompts[:1], 4, bench.CLOCKS["cpu"])
    two = bench.run_v4stack(directory, "fast", prompts, 4, bench.CLOCKS["cpu"])
    for fig in (one, two):
        assert fig.tok_s > 0 and fig.tpot_ms > 0 and 0 < fig.prefill_share < 1 and fig.load >= 0
    text = bench.table([("m", "e", 1, one), ("m", "e", 2, two)], 1)
    lines = text.splitlines()
    assert len(lines) == 4 and lines[2].split("|")[7].strip() == "1.0"
    assert lines[3].split("|")[7].strip() == f"{two.tok_s / one.tok_s:.1f}"
