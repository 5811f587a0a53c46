"""Top-level planner: ``make_plan(...) -> Plan`` answers "does it fit, and how fast".

What it is: glue over ``memory`` (weights, Engram, KV pools, workspace, verdict), ``perf``
(per-op FLOPs/bytes, roofline, calibrated step time) and ``calibration`` (fitted factors per chip
family).  ``Plan.to_json()`` carries at least ``kv_bytes_per_token``, ``weights_bytes_per_device``,
``fits``, ``max_context_tokens``, ``ttft_ms``, ``tpot_ms``, ``tokens_per_s_per_device`` and
``roofline_tpot_ms``.

Timing rules (all per device, see perf.py):
* step      = host floor (per-pass overhead x forward passes) + device time at calibrated
  efficiencies; the two add (no overlap assumed);
* TPOT      = step / acceptance + prefill interference, where interference (only when
  ``output_tokens`` is given) is the prefill time of other requests amortised over this request's
  output tokens: steady closed loop: concurrency x t_prefill / output; one burst:
  (concurrency - 1) / 2 x t_prefill / output;
* TTFT      = t_prefill x (arrivals + 1) / 2 + one step, arrivals = concurrency for a burst, else 1;
* roofline TPOT = roofline step / acceptance (peak figures, no floor, no interference).

What it does not know: scheduler policies beyond these two arrival patterns, or tail latency.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field

from v4stack.config import validation as check
from v4stack.hardware.registry import ChipSpec, get_chip
from v4stack.planner import memory as mem
from v4stack.planner.calibration import fitted
from v4stack.planner.costs import default_quant, step_costs, timings
from v4stack.planner.model_shape import ModelShape, load_model
from v4stack.planner.perf import Calib, StepCost, Workload
from v4stack.planner.verdict import Deployment, verdict
from v4stack.planner.workspace import workspace_terms

DEFAULT_CONTEXT = 8192
ARRIVALS = ("steady", "burst")
# Latency figures that only mean something for a deployment that fits: to_json() writes them as null
# otherwise, and the text report leaves them out, so no one reads a TPOT for a layout that cannot run.
LATENCY_FIELDS = ("ttft_ms", "prefill_ms", "tpot_ms", "step_ms", "roofline_step_ms", "roofline_tpot_ms",
                  "tokens_per_s_per_device")


@dataclass(frozen=True)
class Plan:
    """Result of one planning query; all byte figures per device unless named otherwise."""

    model: str
    hardware: str
    devices: int
    tp: int
    dp: int
    ep: int
    quant: str
    kv_dtype: str
    engram: str
    context: int
    concurrency: int
    spec_tokens: int
    acceptance: float
    kv_bytes_per_token: float
    kv_pools_bytes_per_token: dict
    kv_fixed_bytes_per_sequence: dict
    kv_step_bytes: float      # window blocks of one step's new rows, once per device (memory.window_step_bytes)
    checkpoint_bytes: float
    weights_bytes_per_device: float
    weights_by_class_per_device: dict
    engram_device_bytes: float
    engram_host_bytes: float
    kv_bytes_per_device: float
    workspace_bytes: float
    reserve_bytes: float
    workspace_terms: dict     # planner.workspace's named terms (bytes) of one prefill chunk
    prefill_chunk: int        # tokens per prefill chunk the workspace is sized for
    usable_bytes: float
    spare_bytes: float
    fits: bool
    max_context_tokens: int
    max_concurrency: int
    verdict: str
    binding: str              # what overflows first when it does not fit: weights | workspace | KV cache
    devices_needed: int | None  # smallest device count that fits (this one if it fits; None: none found)
    ttft_ms: float
    prefill_ms: float
    tpot_ms: float
    step_ms: float
    host_floor_ms: float
    roofline_step_ms: float
    roofline_tpot_ms: float
    tokens_per_s_per_device: float
    ops: dict
    calibration: dict = field(default_factory=dict)

    def to_json(self, indent: int | None = 2) -> str:
        """The plan as JSON; the LATENCY_FIELDS are null when it does not fit."""
        d = asdict(self)
        if not self.fits:
            d.update(dict.fromkeys(LATENCY_FIELDS))
        return json.dumps(d, indent=indent, sort_keys=False)


def calibration_for(chip: ChipSpec) -> tuple[Calib, str]:
    """Fitted factors for the chip's family, or the pure roofline where no data exists."""
    fits = fitted()
    if chip.family in fits:
        return fits[chip.family], f"fitted ({chip.family})"
    return Calib(), "uncalibrated (roofline only)"


def make_plan(model: str | ModelShape, hardware: str | ChipSpec, devices: int, *, tp: int | None = None,
              dp: int | None = None, ep: int | None = None, context: int = DEFAULT_CONTEXT,
              concurrency: int = 1, kv_dtype: str | None = None, engram: str = "device",
              quant: str | None = None, spec_tokens: int = 0, acceptance: float | None = None,
              draft: str = "auto", prompt: int | None = None, output_tokens: int = 0,
              arrival: str = "steady", calib: Calib | None = None, chunk: int = mem.PREFILL_CHUNK) -> Plan:
    """Plan one deployment.  ``context`` is the decode position (and the default prompt length); ``chunk`` the
    prefill chunk (the engine's ``max_num_batched_tokens``) the activation workspace is sized for. On the CPU the
    runtime reserve is the measured Python + torch runtime (``memory.CPU_RUNTIME_RESERVE``).

    Refuses (ParameterError, one line) a count below 1, a context beyond the model's
    ``max_position_embeddings``, an acceptance outside [1, spec_tokens + 1] and NaN/inf anywhere."""
    m = model if isinstance(model, ModelShape) else load_model(model)
    chip = hardware if isinstance(hardware, ChipSpec) else get_chip(hardware)
    check.integer("concurrency", concurrency, 1)
    check.integer("context", context, 1, m.max_position or None)
    if prompt is not None:
        check.integer("prompt", prompt, 1, m.max_position or None)
    check.integer("output_tokens", output_tokens, 0)
    check.integer("chunk", chunk, 1)
    check.integer("spec_tokens", spec_tokens, 0)
    check.choice("arrival", arrival, ARRIVALS)
    par = mem.Parallel.make(devices, tp, dp, ep)
    mem.check_split(m, par)
    quant = quant or default_quant(chip)
    kv_dtype = kv_dtype or mem.default_kv_dtype(m)
    if spec_tokens and acceptance is None:
        raise ValueError("--spec-tokens needs --acceptance (mean tokens emitted per step)")
    if spec_tokens:   # a step emits at least the verified token and at most every draft plus it
        check.finite_float("acceptance", acceptance, 1.0, spec_tokens + 1.0)
    acc = acceptance if spec_tokens else 1.0
    cal, cal_src = (calib, "given") if calib is not None else calibration_for(chip)
    prompt = prompt or context

    reserve = mem.CPU_RUNTIME_RESERVE if chip.family == "cpu" else mem.RUNTIME_RESERVE
    budget = mem.device_memory(m, chip.memory.value, par, quant, kv_dtype, engram, context, concurrency, chunk,
                               reserve)
    lay = mem.kv_layout(m, kv_dtype)
    limit = m.max_position or None
    max_ctx = mem.max_context(m, chip.memory.value, par, quant, kv_dtype, engram, concurrency, limit, chunk, reserve)
    max_conc = _max_concurrency(budget, lay, context, par)
    deployment = Deployment(m, chip, quant, kv_dtype, engram, context, concurrency, tp, dp, ep, chunk, reserve)
    sentence, binding, needed = verdict(deployment, par, budget, max_ctx)

    wl = Workload(context, prompt, concurrency, spec_tokens, acc, draft)
    sc, pre = step_costs(m, par, quant, kv_dtype, engram, wl)
    t = timings(sc, pre, chip, cal, wl, output_tokens, arrival)
    step, tpot, ttft, t_pre = t["step"], t["tpot"], t["ttft"], t["prefill"]
    roof = sc.step_time(chip, Calib())

    return Plan(
        model=m.name, hardware=chip.name, devices=devices, tp=par.tp, dp=par.dp, ep=par.ep, quant=quant,
        kv_dtype=kv_dtype, engram=engram, context=context, concurrency=concurrency,
        spec_tokens=spec_tokens, acceptance=acc,
        kv_bytes_per_token=lay.bytes_per_token, kv_pools_bytes_per_token=dict(lay.per_token),
        kv_fixed_bytes_per_sequence=dict(lay.fixed), kv_step_bytes=budget.kv["window_step"],
        checkpoint_bytes=sum(mem.weights_by_class(m, "native").values()),
        weights_bytes_per_device=budget.weights_total, weights_by_class_per_device=dict(budget.weights),
        engram_device_bytes=budget.engram_device, engram_host_bytes=budget.engram_host,
        kv_bytes_per_device=budget.kv_total, workspace_bytes=budget.workspace, reserve_bytes=budget.reserve,
        workspace_terms=workspace_terms(m, par.tp, context, min(chunk, context)), prefill_chunk=chunk,
        usable_bytes=budget.usable, spare_bytes=budget.spare, fits=budget.spare >= 0,
        max_context_tokens=max_ctx, max_concurrency=max_conc,
        verdict=sentence, binding=binding, devices_needed=needed,
        ttft_ms=ttft * 1e3, prefill_ms=t_pre * 1e3, tpot_ms=tpot * 1e3, step_ms=step * 1e3,
        host_floor_ms=sc.host_floor(cal) * 1e3, roofline_step_ms=roof * 1e3, roofline_tpot_ms=roof / acc * 1e3,
        tokens_per_s_per_device=concurrency * 1e3 / (tpot * 1e3) / devices,
        ops=_ops_table(sc, chip), calibration={"source": cal_src, **asdict(cal)},
    )


def _max_concurrency(b: mem.DeviceMemory, lay: mem.KVLayout, context: int, par: mem.Parallel) -> int:
    room = b.usable - (b.weights_total + b.engram_device + b.workspace + b.reserve)
    per_seq = lay.per_sequence(context)
    return max(0, int(room // per_seq)) * par.dp if room > 0 else 0


def _ops_table(sc: StepCost, chip: ChipSpec) -> dict:
    times = sc.per_op_time(chip)
    return {k: {"flops": f, "bytes": b, "format": fmt, "roofline_ms": times[k] * 1e3}
            for k, (f, b, fmt) in sc.ops.items()}


def parse_tokens(text: str, param: str = "tokens") -> int:
    """'1M' -> 1,048,576; '64K' / '64k' -> 65,536; '8192' -> 8192 (binary K/M); ParameterError (naming
    ``param``) for anything else, NaN and infinities included."""
    t = str(text).strip().upper()
    scale = {"K": 1024, "M": 1024 * 1024}.get(t[-1:], 1)
    num = t[:-1] if scale > 1 else t
    try:
        value = float(num)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise check.ParameterError(param, text, "a token count such as 8192, 64K or 1M")
    return int(math.floor(value * scale))
