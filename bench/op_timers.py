"""Exclusive CPU time per op-table entry, for the profile benches (bench/decode_profile.py, bench/prefill_profile.py).

``instrument(model, skipped)`` gives the model a copy of its op table (``v4stack/ops/table.py``) whose entries
accumulate ``time.process_time``; an entry called from inside another (the wide entries compose the narrow ones)
is charged its own time only, so the entries' seconds add up to at most the time measured around them.
"""

from __future__ import annotations

import collections
import dataclasses
import time


def instrument(model, skipped: tuple[str, ...] = ()) -> tuple[dict[str, float], collections.Counter]:
    """Swap the model's op table (every module holding it) for timed wrappers of every entry not in ``skipped``
    -> (exclusive seconds per entry, calls per entry), both filled as the model runs; clear them to restart."""
    ops = model.compute.ops
    seconds: dict[str, float] = collections.defaultdict(float)
    calls: collections.Counter = collections.Counter()
    nested: list[float] = []  # time of the entries called inside the running one, per nesting level

    def timed(name, fn):
        def call(*args, **kwargs):
            t0 = time.process_time()
            nested.append(0.0)
            try:
                return fn(*args, **kwargs)
            finally:
                spent, inner = time.process_time() - t0, nested.pop()
                seconds[name] += spent - inner
                calls[name] += 1
                if nested:
                    nested[-1] += spent
        return call

    table = ops.with_overrides(**{f.name: timed(f.name, getattr(ops, f.name))
                                  for f in dataclasses.fields(ops) if f.name not in skipped})
    for module in model.modules():  # Compute is frozen and shared; RMSNorm and Rotary hold the table themselves
        compute = getattr(module, "compute", None)
        if compute is not None and compute.ops is ops:
            object.__setattr__(compute, "ops", table)
        if getattr(module, "ops", None) is ops:
            module.ops = table
    return seconds, calls
