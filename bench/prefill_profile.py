"""Where a prefill goes: exclusive CPU time per op-table entry of one prompt's prefill (issue #10's 2K prefill).

Every entry of the model's op table (``v4stack/ops/table.py``) is wrapped with a timer of this process's CPU time
(``bench/op_timers.py``; exclusive time: an entry that calls another is charged its own time only). The
prefill runs ``--repeats`` times and the last run is reported (the first one builds the oneDNN primitives and
compiles the C kernels), as a markdown table sorted by time, with the time outside every entry (Python, the
embedding, the cache writes) as the last row.

    PYTHONPATH=. .venv/bin/python bench/prefill_profile.py --ckpt CKPT [--tokens 2048] [--numerics fast]
"""

from __future__ import annotations

import argparse
import time

import torch

from bench.op_timers import instrument

SKIPPED = ("prepare_weights",)  # runs once at load, never during a prefill


def profile(model, tokens: int, repeats: int = 2, seed: int = 0) -> tuple[float, list[tuple[str, float, int]]]:
    """CPU seconds of the last of ``repeats`` prefills of a random ``tokens``-token prompt, and its rows
    (entry, seconds, calls) sorted by time, the last row ('(outside the table)', seconds, 0)."""
    from v4stack.model.decode_loop import prefill_then_decode, v4_forward

    seconds, calls = instrument(model, SKIPPED)
    ids = torch.randint(3, model.cfg.vocab_size, (tokens,), generator=torch.Generator().manual_seed(seed))
    for _ in range(repeats):
        seconds.clear()
        calls.clear()
        t0 = time.process_time()
        next(prefill_then_decode(v4_forward(model, [model.new_state()]), [ids], 1))
        total = time.process_time() - t0
    rows = sorted(((name, s, calls[name]) for name, s in seconds.items()), key=lambda r: -r[1])
    return total, rows + [("(outside the table)", total - sum(seconds.values()), 0)]


def main() -> None:
    from v4stack.config.numerics import Numerics
    from v4stack.modelio.loader import load_model

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--tokens", type=int, default=2048)
    ap.add_argument("--numerics", default="fast")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    model = load_model(a.ckpt, Numerics.from_name(a.numerics), progress=False)
    total, rows = profile(model, a.tokens, a.repeats)
    print(f"prefill of {a.tokens} tokens: {total:.3f} s CPU, {a.tokens / total:.0f} tok/s ({a.threads} thread(s))")
    print("| entry | ms | calls | share |\n|---|---|---|---|")
    for name, s, n in rows:
        print(f"| {name} | {1000 * s:.1f} | {n or ''} | {100 * s / total:.1f}% |")


if __name__ == "__main__":
    main()
