"""Hardware registry: one table of accelerator figures, each with its source.

What it is: frozen `ChipSpec` records for Ascend 910B / 910C / 950PR (roadmap and the shipped
Atlas 350) / 950DT, NVIDIA H20 / H100 / H200 / B200 / GB300, and "cpu" (this machine, probed at
run time).  Every number is a `Figure` carrying its unit, its source and a kind:

* ``vendor``   -- a vendor claim (datasheet, launch slide);
* ``measured`` -- measured by someone (paper, benchmark log, ``npu-smi`` output);
* ``derived``  -- arithmetic on other figures (the arithmetic is in ``source``);
* ``estimate`` -- an assumption of ours or an unverified third-party figure; treat with care.

Sources are quoted from ``shared/docs/hardware.md`` (section 1, "Hardware spec table").

What it does not know: achieved (as opposed to peak) bandwidth or FLOP/s, kernel quality, or host
CPU speed.  Those live in the planner's calibration (``v4stack.planner.calibration``), not here.
The engine's ``platforms/`` can share this table for capability flags (fp8/fp4 support).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Mapping

GB = 1e9          # decimal gigabyte: vendors quote memory and bandwidth in GB, GB/s
TB = 1e12
TFLOPS = 1e12
PFLOPS = 1e15
US = 1e-6         # microsecond

KINDS = ("vendor", "measured", "derived", "estimate")


@dataclass(frozen=True)
class Figure:
    """One number with unit, source and provenance kind (one of ``KINDS``)."""

    value: float
    unit: str
    source: str
    kind: str = "vendor"

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"Figure kind {self.kind!r} not in {KINDS}")
        if self.value < 0:
            raise ValueError("Figure values are non-negative")


@dataclass(frozen=True)
class ChipSpec:
    """Peak figures of one accelerator (per chip/card, as sold).

    Contract: ``memory`` in bytes, ``memory_bw`` in bytes/s, ``flops[dtype]`` dense FLOP/s with
    dtype in {"bf16", "fp8", "fp4", "int8"} (missing key = no datapath for that dtype),
    ``link_bw`` the published scale-up interconnect bandwidth per chip in bytes/s (see
    ``link_bidirectional``), ``link_latency`` seconds per collective hop, ``power`` watts or None.
    """

    name: str
    vendor: str                     # "huawei" | "nvidia" | "host"
    family: str                     # calibration family: "ascend" | "nvidia" | "cpu"
    memory: Figure
    memory_bw: Figure
    flops: Mapping[str, Figure]
    link_bw: Figure
    link_latency: Figure
    power: Figure | None = None
    link_bidirectional: bool = True  # published link figure counts both directions
    notes: str = ""
    aliases: tuple[str, ...] = field(default=())

    @property
    def has_fp8(self) -> bool:
        return "fp8" in self.flops

    @property
    def has_fp4(self) -> bool:
        return "fp4" in self.flops

    @property
    def link_bw_per_direction(self) -> float:
        """Bytes/s one chip can send while also receiving (half a bidirectional figure)."""
        return self.link_bw.value / (2.0 if self.link_bidirectional else 1.0)

    def gemm_flops(self, weight_format: str) -> float:
        """Peak dense FLOP/s of a GEMM whose weights are stored as ``weight_format``.

        Rule: FP4 weights run at the FP8 rate (activations are FP8 in V4's W4A8 scheme, so the
        FP4 x FP4 rate is not reachable); FP8 at the FP8 rate; INT8/INT4 (A2/A3 W8A8/W4A8) at the
        INT8 rate; anything else at BF16.  Falls back to BF16 when the datapath is missing.
        """
        wanted = {"fp4": "fp8", "fp8": "fp8", "int8": "int8", "int4": "int8"}.get(weight_format, "bf16")
        fig = self.flops.get(wanted) or self.flops["bf16"]
        return fig.value


# ---------------------------------------------------------------------------------------------
# Shared source strings (hardware.md section 1) and assumptions
# ---------------------------------------------------------------------------------------------
_HW = "shared/docs/hardware.md s1.1"
_NV = "shared/docs/hardware.md s1.2 (NVIDIA datasheet values via glennklockwood.com, lzwjava.github.io)"
# INT8 on Da Vinci cube units is twice the FP16 rate; no INT8 figure is quoted in hardware.md.
_INT8_IS_2X_BF16 = "estimate: INT8 = 2 x BF16 (Da Vinci cube; no published INT8 figure in hardware.md)"
# No collective latency is published for any of these links; typical small-message all-to-all
# hop latencies are a few microseconds on NVLink and somewhat more on HCCS/UB.  Calibrated away.
_NVLINK_LATENCY = Figure(3.0 * US, "s", "estimate: NVLink small-message hop latency (not published)", "estimate")
_HCCS_LATENCY = Figure(5.0 * US, "s", "estimate: HCCS/UB small-message hop latency (not published)", "estimate")


def _ascend_910b() -> ChipSpec:
    return ChipSpec(
        name="910b", vendor="huawei", family="ascend", aliases=("ascend910b", "a2", "910b3"),
        memory=Figure(64 * GB, "B", f"{_HW}: Atlas 800 A2 '64GB x 8' (VA tutorial); 910B4 = 32 GB", "vendor"),
        memory_bw=Figure(1.6 * TB, "B/s", f"{_HW}: 910C 3.2 TB/s / 2 dies", "derived"),
        flops={"bf16": Figure(376 * TFLOPS, "FLOP/s", f"{_HW}: 752 / 2 dies", "derived"),
               "int8": Figure(752 * TFLOPS, "FLOP/s", _INT8_IS_2X_BF16, "estimate")},
        link_bw=Figure(392 * GB, "B/s", "estimate: 910C 784 GB/s / 2 dies (per-chip HCCS not confirmed)", "estimate"),
        link_latency=_HCCS_LATENCY,
        power=Figure(400, "W", f"{_HW}: 310-400 W third-party [?]", "estimate"),
        notes="No FP8/FP4 datapath: V4 runs as INT8 W8A8 or W4A8 ModelSlim checkpoints.",
    )


def _ascend_910c() -> ChipSpec:
    return ChipSpec(
        name="910c", vendor="huawei", family="ascend", aliases=("ascend910c", "a3"),
        memory=Figure(128 * GB, "B", f"{_HW}: 2 x 64 GB (Huawei Connect 2025; CloudMatrix paper)", "vendor"),
        memory_bw=Figure(3.2 * TB, "B/s", f"{_HW}: CloudMatrix384 paper arXiv 2506.12708", "vendor"),
        flops={"bf16": Figure(752 * TFLOPS, "FLOP/s", f"{_HW}: CloudMatrix384 paper (dense)", "measured"),
               "int8": Figure(1504 * TFLOPS, "FLOP/s", _INT8_IS_2X_BF16, "estimate")},
        link_bw=Figure(784 * GB, "B/s", f"{_HW}: Huawei Connect 2025 roadmap slide", "vendor"),
        link_latency=_HCCS_LATENCY,
        power=Figure(310, "W", f"{_HW}: kocka.news [?] (implausible for dual-die)", "estimate"),
        notes="One card = 2 dies = 2 logical devices; the planner counts cards.",
    )


def _ascend_950(name: str, mem_gb: float, bw_tbs: float, fp4_pf: float, *, src: str,
                kind_fp4: str, power: Figure | None, aliases: tuple[str, ...], notes: str,
                mem_src: str) -> ChipSpec:
    return ChipSpec(
        name=name, vendor="huawei", family="ascend", aliases=aliases,
        memory=Figure(mem_gb * GB, "B", mem_src, "vendor"),
        memory_bw=Figure(bw_tbs * TB, "B/s", src, "vendor"),
        flops={"bf16": Figure(0.5 * PFLOPS, "FLOP/s", f"{_HW}: BF16 not published; FP8/2 (speculative)", "estimate"),
               "fp8": Figure(1.0 * PFLOPS, "FLOP/s", f"{_HW}: 1 PFLOPS FP8/MXFP8/HiF8", "vendor"),
               "fp4": Figure(fp4_pf * PFLOPS, "FLOP/s", src, kind_fp4),
               "int8": Figure(1.0 * PFLOPS, "FLOP/s", "estimate: INT8 = FP8 rate (not published)", "estimate")},
        link_bw=Figure(2.0 * TB, "B/s", f"{_HW}: 2 TB/s ('2.5x 910C')", "vendor"),
        link_latency=_HCCS_LATENCY,
        power=power, notes=notes,
    )


def _nvidia(name: str, mem_gb: float, bw_tbs: float, bf16_tf: float, fp8_tf: float,
            fp4_tf: float | None, link_gbs: float, power_w: float, *, aliases: tuple[str, ...] = (),
            fp8_kind: str = "vendor", fp4_kind: str = "vendor", notes: str = "") -> ChipSpec:
    flops = {"bf16": Figure(bf16_tf * TFLOPS, "FLOP/s", _NV, "vendor"),
             "fp8": Figure(fp8_tf * TFLOPS, "FLOP/s", _NV, fp8_kind),
             "int8": Figure(fp8_tf * TFLOPS, "FLOP/s", f"{_NV}: INT8 = FP8 dense rate", "derived")}
    if fp4_tf is not None:
        flops["fp4"] = Figure(fp4_tf * TFLOPS, "FLOP/s", _NV, fp4_kind)
    return ChipSpec(
        name=name, vendor="nvidia", family="nvidia", aliases=aliases,
        memory=Figure(mem_gb * GB, "B", _NV, "vendor"),
        memory_bw=Figure(bw_tbs * TB, "B/s", _NV, "vendor"),
        flops=flops,
        link_bw=Figure(link_gbs * GB, "B/s", f"{_NV}: NVLink per GPU, bidirectional", "vendor"),
        link_latency=_NVLINK_LATENCY,
        power=Figure(power_w, "W", _NV, "vendor"), notes=notes,
    )


# ---------------------------------------------------------------------------------------------
# "cpu": this machine.  Only memory size and core count are probed; bandwidth/FLOPs are
# conservative defaults flagged 'estimate'.
# ---------------------------------------------------------------------------------------------
# Conservative per-core sustained DRAM bandwidth share (a 2-channel DDR4 desktop gives ~20-40 GB/s
# for the whole socket; we assume 5 GB/s per core, capped at a 40 GB/s socket).
CPU_BW_PER_CORE = 5 * GB
CPU_BW_CAP = 40 * GB
# FP32 FMA throughput per core: 2 AVX2 FMA units x 8 lanes x 2 FLOP at an assumed 2.5 GHz.
CPU_FLOPS_PER_CORE = 2 * 8 * 2 * 2.5e9
# Shared-memory "interconnect" between CPU ranks: assume DRAM copy speed and 1 us latency.
CPU_LINK_LATENCY = 1.0 * US
CPU_FALLBACK_MEMORY = 8 * GB   # if /proc/meminfo is unreadable


def _probe_meminfo(path: str = "/proc/meminfo") -> float | None:
    """MemTotal in bytes from /proc/meminfo (kB units), or None when unavailable."""
    try:
        with open(path, encoding="ascii") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return float(line.split()[1]) * 1024.0
    except OSError:
        return None
    return None


def probe_cpu() -> ChipSpec:
    """Build the "cpu" spec for this machine (os.cpu_count and /proc/meminfo only)."""
    cores = os.cpu_count() or 1
    mem = _probe_meminfo()
    mem_fig = (Figure(mem, "B", "probed: /proc/meminfo MemTotal", "measured") if mem is not None
               else Figure(CPU_FALLBACK_MEMORY, "B", "estimate: /proc/meminfo unreadable", "estimate"))
    bw = min(cores * CPU_BW_PER_CORE, CPU_BW_CAP)
    fl = cores * CPU_FLOPS_PER_CORE
    est = f"estimate: {cores} cores (os.cpu_count) x conservative per-core default"
    return ChipSpec(
        name="cpu", vendor="host", family="cpu", aliases=("host", "this-cpu"),
        memory=mem_fig,
        memory_bw=Figure(bw, "B/s", est, "estimate"),
        flops={"bf16": Figure(fl, "FLOP/s", est + " (fp32 FMA rate)", "estimate")},
        link_bw=Figure(bw, "B/s", "estimate: shared-memory copies at DRAM speed", "estimate"),
        link_latency=Figure(CPU_LINK_LATENCY, "s", "estimate", "estimate"),
        link_bidirectional=False, notes=f"Probed at run time: {cores} cores.",
    )


def _static_chips() -> dict[str, ChipSpec]:
    roadmap_src = f"{_HW}: Huawei Connect 2025 (cloudnews.tech, reportify.ai)"
    atlas_src = f"{_HW}: Atlas 350 launch 2026-03-20 (allthingsgeek.me/?p=6100)"
    dt_src = f"{_HW}: reportify.ai/social-media/721107923617455, 05bd.com/news/13452.html"
    chips = [
        _ascend_910b(), _ascend_910c(),
        _ascend_950("950pr-roadmap", 128, 1.6, 2.0, src=roadmap_src, kind_fp4="vendor", power=None,
                    aliases=("950pr-spec",), mem_src=f"{roadmap_src}: 128 GB HiBL 1.0",
                    notes="Roadmap figures (Sept 2025); the shipped card is 'atlas350'/'950pr'."),
        _ascend_950("950pr", 112, 1.4, 1.56, src=atlas_src, kind_fp4="vendor",
                    power=Figure(600, "W", atlas_src, "vendor"), aliases=("atlas350", "950pr-shipped", "a5"),
                    mem_src=f"{atlas_src}: 112 GB",
                    notes="Ascend 950PR as shipped on the Atlas 350 card; FP8 1 PF implied, not stated."),
        _ascend_950("950dt", 144, 4.0, 2.0, src=dt_src, kind_fp4="vendor", power=None, aliases=(),
                    mem_src=f"{dt_src}: 144 GB HiZQ 2.0",
                    notes="Huawei's decode part (Q4 2026 roadmap)."),
        _nvidia("h20", 96, 4.0, 148, 296, None, 900, 400),
        _nvidia("h100", 80, 3.35, 989, 1979, None, 900, 700, aliases=("h100-sxm",)),
        _nvidia("h200", 141, 4.8, 989, 1979, None, 900, 700, aliases=("h200-sxm",)),
        _nvidia("b200", 192, 8.0, 2250, 4500, 9000, 1800, 1000),
        _nvidia("gb300", 288, 8.0, 2500, 5000, 15000, 1800, 1400, aliases=("b300",), fp8_kind="derived",
                fp4_kind="derived", notes="FP8/FP4 = NVL72 rack figures / 72 (hardware.md s1.2)."),
    ]
    return {c.name: c for c in chips}


_CHIPS = _static_chips()
_ALIASES = {a: c.name for c in _CHIPS.values() for a in c.aliases}
_ALIASES.update({a: "cpu" for a in ("host", "this-cpu")})


def list_chips() -> list[str]:
    """Canonical chip names, including "cpu"."""
    return sorted(_CHIPS) + ["cpu"]


def get_chip(name: str) -> ChipSpec:
    """Look up a chip by canonical name or alias (case-insensitive); "cpu" probes this machine."""
    key = name.strip().lower()
    key = key.removeprefix("ascend") if key.startswith("ascend9") else key    # "Ascend910C" -> "910c"
    key = _ALIASES.get(key, key)
    if key == "cpu":
        return probe_cpu()
    try:
        return _CHIPS[key]
    except KeyError:
        raise KeyError(f"unknown hardware {name!r}; known: {', '.join(list_chips())}") from None
