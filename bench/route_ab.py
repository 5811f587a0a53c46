"""The fast ``route`` entry per call, its torch path against the one-call C path (``ops.fast.route_kernel``), in
alternating rounds in one process: every gate of the model on random decode rows (bf16 [T, D], random token ids),
``--calls`` calls per gate and round, CPU clock (``time.process_time``), medians over ``--rounds``. Also checks that
the two paths pick the same experts and prints the largest weight difference in fp32 ulps.

    PYTHONPATH=. .venv/bin/python bench/route_ab.py --model DIR [--rows 1 16] [--rounds 7] [--calls 200]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from v4stack.config.numerics import Numerics
from v4stack.modelio.loader import load_model
from v4stack.ops.fast import moe, ordered_gemm


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--rows", type=int, nargs="+", default=[1, 16])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--calls", type=int, default=200)
    args = ap.parse_args()
    torch.set_num_threads(1)
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
