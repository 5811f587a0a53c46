"""Torch ops dispatched per decode step, and where: every aten op a greedy decode step runs (counted with a
``TorchDispatchMode``, deterministic, unlike a timer), attributed to the innermost v4stack frame that issued it.
Each op costs ~1-5 us of Python and dispatcher on this CPU at decode sizes, so the count tracks the glue's cost.

    PYTHONPATH=. .venv/bin/python bench/decode_op_count.py --model models/v4-demo-shakespeare [--rows 16] [--top 40]

``--dump FILE`` also saves every step's logits and greedy tokens (``--steps`` steps, the prefill's first) and
``--compare A B`` checks two dumps for ``torch.equal`` logits and tokens: a change to the glue must not change a bit
(dump with each tree on PYTHONPATH, then compare).
"""

from __future__ import annotations

import argparse
import collections
import sys
import traceback
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode

WARMUP_STEPS = 3  # decode steps before counting (first-call compilation, cache growth, lazily made tables)
COUNTED_STEPS = 5  # the default: the count is the same every step but for the steps that close a compression group
PACKAGE = "/v4stack/"  # frames of this package's files count as issuers


class Counter(TorchDispatchMode):
    """Counts each dispatched op by (issuing file, line, function, op name)."""

    def __init__(self) -> None:
        super().__init__()
        self.sites: collections.Counter = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        frames = [f for f in traceback.extract_stack() if PACKAGE in f.filename]
        where = frames[-1] if frames else None
        site = (where.filename.split(PACKAGE)[-1], where.lineno, where.name) if where else ("?", 0, "?")
        self.sites[(*site, func.overloadpacket.__name__)] += 1
        return func(*args, **(kwargs or {}))


def _decode(args):
    from v4stack.config.numerics import Numerics
    from v4stack.model.decode_loop import prefill_then_decode, v4_forward
    from v4stack.modelio.loader import load_model

    torch.set_num_threads(1)
    model = load_model(args.model, Numerics.from_name(args.numerics), progress=False)
    gen = torch.Generator().manual_seed(0)
    prompts = list(torch.randint(3, model.cfg.vocab_size, (args.rows, args.prompt), generator=gen))
    states = [model.new_state() for _ in prompts]
    return prefill_then_decode(v4_forward(model, states), prompts, args.steps, choose=model.compute.ops.argmax)


def compare(a: Path, b: Path) -> bool:
    """Whether two ``--dump`` files hold the same steps, bit for bit."""
    x, y = torch.load(a), torch.load(b)
    return (len(x["logits"]) == len(y["logits"]) and all(map(torch.equal, x["logits"], y["logits"]))
            and all(map(torch.equal, x["tokens"], y["tokens"])))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path)
    ap.add_argument("--numerics", default="fast")
    ap.add_argument("--rows", type=int, default=1, help="sequences decoding side by side")
    ap.add_argument("--prompt", type=int, default=64)
    ap.add_argument("--steps", type=int, default=1 + WARMUP_STEPS + COUNTED_STEPS,
                    help="forwards in all (the prefill's included)")
    ap.add_argument("--top", type=int, default=30, help="sites to list")
    ap.add_argument("--dump", type=Path, help="save every step's logits and tokens here (no counting)")
    ap.add_argument("--compare", type=Path, nargs=2, metavar=("A", "B"), help="compare two dumps and exit")
    args = ap.parse_args()
    if args.compare:
        same = compare(*args.compare)
        print("identical logits and tokens" if same else "DIFFERENT")
        sys.exit(0 if same else 1)
    steps = _decode(args)
    if args.dump:
        done = [(s.output.logits.clone(), s.tokens.clone()) for s in steps]
        torch.save({"logits": [lg for lg, _ in done], "tokens": [t for _, t in done]}, args.dump)
        print(f"{len(done)} steps saved to {args.dump}")
        return
    for _ in range(1 + WARMUP_STEPS):
        next(steps)
    counter, counted = Counter(), 0
    with counter:
        for _ in steps:
            counted += 1
    if not counted:
        raise SystemExit(f"--steps must exceed {1 + WARMUP_STEPS} (the prefill and the warm-up steps)")
    print(f"{args.model}: {args.numerics}, {args.rows} row(s): {sum(counter.sites.values()) / counted:.1f} torch ops "
          f"per decode step ({counted} steps)")
    for (path, line, name, op), n in counter.sites.most_common(args.top):
        print(f"{n / counted:7.1f}  {op:16s} {path}:{line} ({name})")


if __name__ == "__main__":
    main()
