"""Human-readable planner output and the TPOT-versus-context plot.

What it is: ``format_plan(plan)`` renders a ``Plan`` as plain text (memory budget by class and
pool, verdict, per-op roofline table, roofline and calibrated timings side by side);
``plot_tpot_vs_context`` draws TPOT against context for several chips into one PNG.

What it does not know: terminals, colours, or any state; matplotlib is imported only when a plot
is requested (optional dependency).
"""

from __future__ import annotations

from v4stack.planner.memory import GIB
from v4stack.planner.plan import Plan, make_plan

GB = 1e9
# What the runtime reserve stands for, by whether the plan is for this CPU (planner.memory's two reserves).
RESERVE_NOTE = {True: "Python + torch runtime after a first 1,024-token chunk, measured",
                False: "graphs, communicator buffers, allocator slack: assumed"}
DEFAULT_PLOT_CHIPS = ("950pr", "950dt", "910c", "h200", "b200", "gb300")
# Context sweep for the plot: 4K to 1M in powers of two.
PLOT_CONTEXTS = tuple(2 ** k for k in range(12, 21))
# One marker per chip, so chips whose curves coincide (same family floor, same bandwidth) stay distinguishable.
PLOT_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
PLOT_LINE_WIDTH = 2.4   # first chip's line; later ones thinner (by up to PLOT_LINE_SHRINK) so both show
PLOT_LINE_SHRINK = 0.6


def _gib(x: float) -> str:
    return f"{x / GIB:9.2f} GiB"


def format_plan(p: Plan) -> str:
    """Multi-line text report of a plan."""
    lines = [
        f"v4stack plan: {p.model} on {p.devices} x {p.hardware} (tp={p.tp} dp={p.dp} ep={p.ep}, "
        f"weights {p.quant}, KV {p.kv_dtype}, Engram {p.engram})",
        f"workload: context {p.context:,} tokens x concurrency {p.concurrency}"
        + (f", speculative K={p.spec_tokens} acceptance {p.acceptance:.2f}" if p.spec_tokens else ""),
        "",
        f"checkpoint (native formats): {p.checkpoint_bytes / GB:,.1f} GB",
        "memory per device:",
    ]
    for cls, b in sorted(p.weights_by_class_per_device.items(), key=lambda kv: -kv[1]):
        lines.append(f"  weights {cls:<16s}{_gib(b)}")
    lines.append(f"  weights total           {_gib(p.weights_bytes_per_device)}")
    if p.engram_device_bytes or p.engram_host_bytes:
        lines.append(f"  engram tables (device)  {_gib(p.engram_device_bytes)}"
                     f"   (host, per node: {p.engram_host_bytes / GIB:,.1f} GiB)")
    lines.append(f"  KV cache                {_gib(p.kv_bytes_per_device)}   "
                 f"({p.kv_bytes_per_token:,.1f} B/token/sequence growing, summed over layers)")
    for pool, b in p.kv_pools_bytes_per_token.items():
        lines.append(f"    pool {pool:<18s} {b:10.2f} B/token")
    for pool, b in p.kv_fixed_bytes_per_sequence.items():
        lines.append(f"    fixed {pool:<17s} {b / 2**20:10.2f} MiB/sequence")
    lines.append(f"    window step rows        {p.kv_step_bytes / 2**20:10.2f} MiB (one step's new rows, per device)")
    lines += [
        f"  activation workspace    {_gib(p.workspace_bytes)}   (one prefill chunk of {p.prefill_chunk:,} tokens)",
        *[f"    {name:<30s}{b / 2**20:8.1f} MiB" for name, b in p.workspace_terms.items()],
        f"  runtime reserve         {_gib(p.reserve_bytes)}   ({RESERVE_NOTE[p.hardware == 'cpu']})",
        f"  usable (of capacity)    {_gib(p.usable_bytes)}",
        f"verdict: {p.verdict}",
        f"largest context at concurrency {p.concurrency}: {p.max_context_tokens:,} tokens; "
        f"largest concurrency at {p.context:,} tokens: {p.max_concurrency:,}",
        "",
        "decode step per device, by op class (roofline at peak):",
        f"  {'op':<14s}{'GFLOP':>12s}{'MB':>12s}{'ms':>10s}  format",
    ]
    for op, d in p.ops.items():
        lines.append(f"  {op:<14s}{d['flops'] / 1e9:12.2f}{d['bytes'] / 1e6:12.1f}{d['roofline_ms']:10.3f}  {d['format']}")
    if not p.fits:   # no TPOT/TTFT for a layout that cannot run
        lines += ["", "latency: not estimated, the deployment does not fit (see the verdict)",
                  f"calibration: {p.calibration.get('source')}"]
        return "\n".join(lines)
    lines += [
        "",
        f"{'':<26s}{'roofline':>12s}{'calibrated':>12s}",
        f"{'step (ms)':<26s}{p.roofline_step_ms:12.2f}{p.step_ms:12.2f}",
        f"{'TPOT (ms)':<26s}{p.roofline_tpot_ms:12.2f}{p.tpot_ms:12.2f}",
        f"{'tokens/s per device':<26s}{p.concurrency * 1e3 / p.roofline_tpot_ms / p.devices:12.1f}"
        f"{p.tokens_per_s_per_device:12.1f}",
        f"host floor {p.host_floor_ms:.2f} ms/step; prefill {p.prefill_ms:,.0f} ms; TTFT {p.ttft_ms:,.0f} ms",
        f"calibration: {p.calibration.get('source')}",
    ]
    return "\n".join(lines)


def tpot_curve(model: str, chip: str, devices: int, contexts=PLOT_CONTEXTS,
               **kw) -> list[tuple[int, float, float, bool]]:
    """(context, calibrated TPOT ms, roofline TPOT ms, fits) per context; ``kw`` go to ``make_plan``."""
    out = []
    for c in contexts:
        p = make_plan(model, chip, devices, context=c, **kw)
        out.append((c, p.tpot_ms, p.roofline_tpot_ms, p.fits))
    return out


def plot_tpot_vs_context(path: str, model: str, devices: int, chips=DEFAULT_PLOT_CHIPS, **kw) -> None:
    """Write one PNG with TPOT versus context, one colour and marker per chip: solid = calibrated estimate,
    dashed = roofline; points that do not fit in memory are drawn hollow.  Contexts stop at the model's
    maximum.  Chips whose curves coincide stay visible: each has its own marker, and later lines are drawn
    thinner on top of earlier ones.  Requires matplotlib."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:      # optional dependency
        raise RuntimeError("--plot needs matplotlib (pip install matplotlib)") from e
    from v4stack.planner.model_shape import load_model

    limit = load_model(model).max_position or max(PLOT_CONTEXTS)
    contexts = tuple(c for c in PLOT_CONTEXTS if c <= limit)
    fig, ax = plt.subplots(figsize=(9, 5.5))
    for i, chip in enumerate(chips):
        pts = tpot_curve(model, chip, devices, contexts=contexts, **kw)
        xs = [c for c, *_ in pts]
        marker = PLOT_MARKERS[i % len(PLOT_MARKERS)]
        width = PLOT_LINE_WIDTH * (1 - PLOT_LINE_SHRINK * i / max(len(chips), 1))
        line, = ax.plot(xs, [t for _, t, _, _ in pts], marker=marker, markersize=7 - i % 3, linewidth=width,
                        label=f"{devices} x {chip}", zorder=2 + i)
        ax.plot(xs, [r for _, _, r, _ in pts], linestyle="--", marker=marker, markersize=3, linewidth=width * 0.7,
                color=line.get_color(), alpha=0.7, zorder=2 + i)
        bad = [(c, t) for c, t, _, ok in pts if not ok]
        if bad:
            ax.scatter([c for c, _ in bad], [t for _, t in bad], s=70, marker=marker, facecolors="white",
                       edgecolors=line.get_color(), zorder=20)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("context (tokens)")
    ax.set_yscale("log")
    ax.set_ylabel("TPOT (ms)")
    ax.set_title(f"{model}: TPOT vs context on {devices} devices\n"
                 "solid: calibrated, dashed: roofline, hollow: does not fit", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)   # outside: never hides a curve
    fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
