"""Where a decode step's CPU time goes, per op-table entry: each entry of the model's op table is wrapped
with a ``time.process_time`` accumulator (exclusive time: an entry called from inside another counts once), the
model decodes ``--steps`` greedy steps after a ``--prompt``-token random prompt (plus ``WARMUP_STEPS`` untimed),
(``--rows`` sequences decoding side by side, 1 by default), and the table lists ms per step, calls per step and the share of the step; "outside" is the step minus every
entry (Python, embedding, cache and state bookkeeping, the greedy choice). The timers add a few microseconds per
call, so the step is a little slower than in bench/compare_cpu.py.

    PYTHONPATH=. .venv/bin/python bench/decode_profile.py --model /path/to/ckpt [--numerics fast] [--steps 24]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import time
from pathlib import Path

import torch

from bench.op_timers import instrument
from v4stack.config.numerics import Numerics
from v4stack.model.decode_loop import prefill_then_decode, v4_forward
from v4stack.modelio.loader import load_model

WARMUP_STEPS = 2  # decode steps after the prefill that are not timed (first-call compilation, cache growth)
NOT_PER_STEP = ("prepare_weights",)  # entries run once at load, not in a step


@dataclasses.dataclass
class Profile:
    steps: list[float]  # CPU seconds of each timed step
    entry_seconds: dict[str, float]  # exclusive CPU seconds of each entry over the timed steps
    entry_calls: dict[str, int]

    def rows(self) -> list[tuple[str, float, float, float]]:
        """(entry, ms per step, calls per step, share of the mean step), largest first, then "outside"."""
        n, mean = len(self.steps), statistics.mean(self.steps)
        rows = [(k, v / n * 1e3, self.entry_calls[k] / n, v / n / mean)
                for k, v in sorted(self.entry_seconds.items(), key=lambda kv: -kv[1])]
        outside = mean - sum(self.entry_seconds.values()) / n
        return rows + [("outside", outside * 1e3, 0.0, outside / mean)]


def profile(model, prompts: list[torch.Tensor], steps: int) -> Profile:
    """Decode ``steps`` timed greedy steps of ``model`` after ``prompts`` (one [L] per sequence of the batch)
    with every entry timed."""
    seconds, calls = instrument(model, NOT_PER_STEP)
    states = [model.new_state() for _ in prompts]
    it = prefill_then_decode(v4_forward(model, states), prompts, 1 + WARMUP_STEPS + steps,
                             choose=model.compute.ops.argmax)
    for _ in range(1 + WARMUP_STEPS):
        next(it)
    seconds.clear()
    calls.clear()
    times = []
    t0 = time.process_time()
    for _ in it:
        t1 = time.process_time()
        times.append(t1 - t0)
        t0 = t1
    return Profile(times, dict(seconds), dict(calls))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--numerics", default="fast")
    ap.add_argument("--steps", type=int, default=24)
    ap.add_argument("--prompt", type=int, default=200)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rows", type=int, default=1, help="sequences decoding side by side (the batch of a step)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model(args.model, Numerics.from_name(args.numerics), progress=False)
    gen = torch.Generator().manual_seed(0)
    prompts = list(torch.randint(3, model.cfg.vocab_size, (args.rows, args.prompt), generator=gen))
    prof = profile(model, prompts, args.steps)
    print(f"{args.model}: {args.numerics} numerics, {args.threads} thread(s), CPU time, {args.rows} row(s), {args.steps} steps after a "
          f"{args.prompt}-token prompt; step median {statistics.median(prof.steps) * 1e3:.2f} ms, mean "
          f"{statistics.mean(prof.steps) * 1e3:.2f}; load average {os.getloadavg()[0]:.1f}")
    print("| entry | ms per step | calls per step | share |\n|---|---|---|---|")
    for name, ms, per_step, share in prof.rows():
        print(f"| {name} | {ms:.3f} | {per_step:g} | {share:.1%} |")


if __name__ == "__main__":
    main()
