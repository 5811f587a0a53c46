"""Why a deployment does not fit and what would: the binding constraint and the smallest device count.

What it is: ``binding_constraint`` names what overflows first (weights, workspace or KV cache), ``layouts_for``
applies the planner's parallel layout rules to another device count, ``smallest_fitting`` searches device
counts for the first that fits, and ``verdict`` writes the sentence ``plan`` prints.

Search: the memory per device does not grow with the device count under one layout rule (weights and
workspace are split further, the KV per sequence stays), so the search doubles the count until a layout fits,
then scans the last doubling interval for the smallest count that fits.

What it does not know: interconnect limits (a count is suggested whether or not one node holds it).
"""

from __future__ import annotations

from dataclasses import dataclass

from v4stack.hardware.registry import ChipSpec
from v4stack.planner import memory as mem
from v4stack.planner.model_shape import ModelShape

# Largest device count the search tries: above the biggest published single DeepSeek deployments
# (a few hundred chips); each candidate costs one memory budget (~10-30 ms), at most ~2 x log2 + interval.
MAX_SEARCH_DEVICES = 1024
BINDING = ("weights", "workspace", "KV cache")


@dataclass(frozen=True)
class Deployment:
    """What stays fixed while the device count changes: model, chip, formats, workload, user's layout flags."""

    model: ModelShape
    chip: ChipSpec
    quant: str
    kv_dtype: str
    engram: str
    context: int
    concurrency: int
    tp: int | None = None
    dp: int | None = None
    ep: int | None = None
    chunk: int = mem.PREFILL_CHUNK
    reserve: float = mem.RUNTIME_RESERVE

    def memory(self, par: mem.Parallel, engram: str | None = None) -> mem.DeviceMemory:
        return mem.device_memory(self.model, self.chip.memory.value, par, self.quant, self.kv_dtype,
                                 engram or self.engram, self.context, self.concurrency, self.chunk, self.reserve)


def binding_constraint(b: mem.DeviceMemory) -> str:
    """What overflows first, filling the device in order: weights (with Engram and reserve), workspace, KV."""
    fixed = b.weights_total + b.engram_device + b.reserve
    if fixed > b.usable:
        return "weights"
    if fixed + b.workspace > b.usable:
        return "workspace"
    return "KV cache"


def layouts_for(n: int, d: Deployment, base: mem.Parallel) -> list[mem.Parallel]:
    """The planner's layouts on ``n`` devices. Flags the user gave are kept (tp wins over dp) and the rest
    default as in ``Parallel.make`` (tp = n / dp, ep = n); with no tp/dp given, two rules: all-TP attention
    (``Parallel.make(n)``) and more DP replicas of the current attention group (tp = base.tp, dp = n / tp),
    which also spreads the sequences and so the KV cache. Layouts whose flags do not divide ``n``, or that the model
    cannot take (``memory.check_split``), are skipped."""
    if d.tp is not None or d.dp is not None:
        rules = [(d.tp, None if d.tp is not None else d.dp)]
    else:
        rules = [(None, None), (base.tp, None)]
    out = []
    for tp, dp in rules:
        try:
            par = mem.Parallel.make(n, tp, dp, d.ep)
            mem.check_split(d.model, par)
        except ValueError:  # includes ParameterError: a split the model cannot take
            continue
        if par not in out:
            out.append(par)
    return out


def _fits(n: int, d: Deployment, base: mem.Parallel) -> mem.Parallel | None:
    return next((p for p in layouts_for(n, d, base) if d.memory(p).spare >= 0), None)


def smallest_fitting(d: Deployment, base: mem.Parallel) -> mem.Parallel | None:
    """The layout with the fewest devices above ``base.devices`` (which does not fit) that fits, or None
    up to MAX_SEARCH_DEVICES."""
    lo, hi = base.devices, base.devices * 2
    while hi <= MAX_SEARCH_DEVICES and _fits(hi, d, base) is None:
        lo, hi = hi, hi * 2
    if hi > MAX_SEARCH_DEVICES:
        return None
    for n in range(lo + 1, hi + 1):     # the first count in the last doubling interval that fits
        par = _fits(n, d, base)
        if par is not None:
            return par
    return None


def _detail(binding: str, b: mem.DeviceMemory, d: Deployment) -> str:
    g = mem.format_gib
    if binding == "weights":
        extra = f" + Engram {g(b.engram_device)}" if b.engram_device else ""
        return f"weights {g(b.weights_total)}{extra} + reserve {g(b.reserve)} exceed the usable {g(b.usable)}"
    if binding == "workspace":
        return (f"weights + activation workspace {g(b.workspace)} exceed the usable {g(b.usable)}")
    room = b.usable - (b.weights_total + b.engram_device + b.reserve + b.workspace)
    return (f"KV cache {g(b.kv_total)} for {d.concurrency} x {d.context:,} tokens exceeds the {g(room)} left "
            f"after weights and workspace")


def verdict(d: Deployment, par: mem.Parallel, b: mem.DeviceMemory, max_context: int) -> tuple[str, str, int | None]:
    """(sentence, binding constraint or "", smallest device count that fits or None)."""
    if b.spare >= 0:
        return f"fits with {mem.format_gib(b.spare)} spare per device", "", par.devices
    binding = binding_constraint(b)
    head = f"does not fit: short by {mem.format_gib(-b.spare)} per device; binding: {_detail(binding, b, d)}"
    hints = []
    need = smallest_fitting(d, par)
    if need is not None:
        hints.append(f"needs {need.devices} x {d.chip.name} (tp={need.tp} dp={need.dp} ep={need.ep}), "
                     f"the smallest count that fits")
    else:
        hints.append(f"no layout up to {MAX_SEARCH_DEVICES} devices fits")
    if d.engram == "device" and b.engram_device and d.memory(par, "host").spare >= 0:
        hints.append("use host Engram")
    if binding == "KV cache" and max_context > 0:
        hints.append(f"shorten the context to {max_context:,} tokens")
    return f"{head}: " + " or ".join(hints), binding, None if need is None else need.devices
