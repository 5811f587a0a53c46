"""The fast ``route`` entry per call, its torch path against the one-call C path (``ops.fast.route_kernel``), in
alternating rounds in one process: every gate of the model on random decode rows (bf16 [T, D], random token ids),
``--calls`` calls per gate and round, CPU clock (``time.process_time``), medians over ``--rounds``. Also checks that
the two paths pick the same experts and prints the largest weight difference in fp32 ulps.

    PYTHONPATH=. .venv/bin/python bench/route_ab.py --model DIR [--rows 1 16] [--rounds 7] [--calls 200]

``--scores`` instead times the scoring and selection alone from given logits (``route_kernel.route_rows`` against
``moe.route_from_logits``) on random gates of 8 / 16 / 256 experts, past the kernel's bounds too: the figures
behind ``route_kernel.MAX_SCORES``.

    PYTHONPATH=. .venv/bin/python bench/route_ab.py --scores
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from v4stack.config.numerics import Numerics
from v4stack.modelio.loader import load_model
from v4stack.ops.fast import moe, ordered_gemm, route_kernel


def _torch_path(gate, x, ids):
    """The fast entry as it was before the C path: the ordered GEMM, then the torch ops."""
    return moe.route_from_logits(gate, ordered_gemm.linear_fp32(x.float(), gate.prepared), ids)


def _per_call_us(fn, gates, inputs, calls: int) -> float:
    """Mean CPU microseconds of one call of ``fn`` over every gate, ``calls`` times each."""
    t0 = time.process_time()
    for _ in range(calls):
        for gate, (x, ids) in zip(gates, inputs):
            fn(gate, x, ids)
    return (time.process_time() - t0) / (calls * len(gates)) * 1e6


def _ulps(a: torch.Tensor, b: torch.Tensor) -> int:
    """Largest distance in fp32 ulps between same-signed finite a and b (routing weights are positive)."""
    return int((a.view(torch.int32).long() - b.view(torch.int32).long()).abs().max())


SCORE_SHAPES = {(8, 2): (1, 16, 64, 256), (16, 4): (1, 16, 64, 256), (256, 6): (1, 4, 16, 64)}  # (E, k): rows
SCORE_BATCHES = 5  # median of this many timed batches


class _Gate(torch.nn.Module):
    """A score-routed ``model.moe.Gate`` stand-in: what ``route_rows`` and ``route_from_logits`` read."""

    def __init__(self, n_experts: int, k: int) -> None:
        super().__init__()
        self.topk, self.score_func, self.route_scale, self.hashed = k, "sqrtsoftplus", 1.5, False
        self.register_buffer("weight", torch.zeros(n_experts, 1))
        self.register_buffer("bias", torch.randn(n_experts) * 0.1)


def _scores_table() -> None:
    """Scoring + selection from logits, C against torch, without the kernel's row / score bounds."""
    route_kernel.MAX_ROWS = route_kernel.MAX_SCORES = 1 << 30  # this process only: time past the bounds
    print("| experts, top-k | rows (scores) | C us | torch us |\n|---|---|---|---|")
    for (n_experts, k), row_counts in SCORE_SHAPES.items():
        gate = _Gate(n_experts, k)
        c_us, torch_us = [], []
        for rows in row_counts:
            logits, ids = torch.randn(rows, n_experts), torch.zeros(rows, dtype=torch.int64)
            calls = max(20, 2000 // rows)
            for fn, out in ((route_kernel.route_rows, c_us), (moe.route_from_logits, torch_us)):
                batches = []
                for _ in range(SCORE_BATCHES):
                    t0 = time.process_time()
                    for _ in range(calls):
                        fn(gate, logits, ids)
                    batches.append((time.process_time() - t0) / calls * 1e6)
                out.append(statistics.median(batches))
        print(f"| {n_experts}, {k} | {' / '.join(f'{r} ({r * n_experts:,})' for r in row_counts)} | "
              f"{' / '.join(f'{v:.1f}' for v in c_us)} | {' / '.join(f'{v:.1f}' for v in torch_us)} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path)
    ap.add_argument("--scores", action="store_true", help="time scoring + selection from logits (no model)")
    ap.add_argument("--rows", type=int, nargs="+", default=[1, 16])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--calls", type=int, default=200)
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.scores:
        return _scores_table()
    if args.model is None:
        ap.error("--model is required (or --scores)")
    model = load_model(args.model, Numerics.from_name("fast"), progress=False)
    gates = [m for m in model.modules() if hasattr(m, "route_scale") and hasattr(m, "prepared")]
    gen = torch.Generator().manual_seed(0)
    for rows in args.rows:
        inputs = [(torch.randn(rows, model.cfg.hidden_size, generator=gen).bfloat16(),
                   torch.randint(0, model.cfg.vocab_size, (rows,), generator=gen)) for _ in gates]
        same, ulps = True, 0
        for gate, (x, ids) in zip(gates, inputs):
            (wa, ea), (wb, eb) = _torch_path(gate, x, ids), moe.route(gate, x, ids)
            same &= torch.equal(ea, eb)
            ulps = max(ulps, _ulps(wa, wb)) if torch.equal(ea, eb) else ulps
        before, after = [], []
        for _ in range(args.rounds):
            before.append(_per_call_us(_torch_path, gates, inputs, args.calls))
            after.append(_per_call_us(moe.route, gates, inputs, args.calls))
        print(f"{args.model.name}: {rows} row(s), {len(gates)} gates, 1 thread, CPU clock, median of {args.rounds} "
              f"alternating rounds: route {statistics.median(before):.1f} -> {statistics.median(after):.1f} us/call "
              f"(same experts: {same}, weights within {ulps} ulp)")


if __name__ == "__main__":
    main()
