"""Calibration-independent step costs and the timing rules, shared by ``plan`` and ``calibration``.

What it is: ``step_costs`` (decode step and one prompt's prefill on one device), ``timings`` (step, TPOT,
TTFT and prefill seconds under a calibration, rules in ``plan``'s module doc) and ``default_quant``.
Its own module so that ``calibration`` (which predicts published rows with these rules) and ``plan``
(which uses the fitted calibration) import it without importing each other.

What it does not know: memory fit, verdicts, published rows.
"""

from __future__ import annotations

from v4stack.hardware.registry import ChipSpec
from v4stack.planner import memory as mem
from v4stack.planner.model_shape import ModelShape
from v4stack.planner.perf import Calib, StepCost, Workload, decode_step, prefill


def default_quant(chip: ChipSpec) -> str:
    """Native FP8/FP4 where the chip has an FP8 datapath, else INT8 W8A8 (A2/A3 ModelSlim)."""
    return "native" if chip.has_fp8 or chip.family == "cpu" else "w8a8"


def step_costs(m: ModelShape, par: mem.Parallel, quant: str, kv_dtype: str, engram: str,
               wl: Workload) -> tuple[StepCost, StepCost]:
    """(decode step, prefill of one prompt) costs on one device; independent of calibration."""
    return (decode_step(m, par, quant, kv_dtype, engram, wl),
            prefill(m, par, quant, kv_dtype, engram, wl.prompt, mem.PREFILL_CHUNK))


def timings(sc: StepCost, pre: StepCost, chip: ChipSpec, cal: Calib, wl: Workload,
            output_tokens: int, arrival: str) -> dict[str, float]:
    """Seconds: step, TPOT, TTFT and single-prompt prefill under the rules in ``plan``'s module doc."""
    step = sc.step_time(chip, cal)
    t_pre = pre.step_time(chip, cal)
    tpot = step / wl.acceptance + _interference(t_pre, wl.concurrency, output_tokens, arrival)
    arrivals = wl.concurrency if arrival == "burst" else 1
    return {"step": step, "tpot": tpot, "ttft": t_pre * (arrivals + 1) / 2 + step, "prefill": t_pre}


def _interference(t_prefill: float, concurrency: int, output_tokens: int, arrival: str) -> float:
    if output_tokens <= 0:
        return 0.0
    others = concurrency if arrival == "steady" else (concurrency - 1) / 2
    return t_prefill * others / output_tokens
