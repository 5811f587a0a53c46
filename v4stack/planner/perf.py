"""FLOPs, bytes and time per step: roofline plus a calibrated estimate.

What it is: per-device, per-step cost by op class (projections, indexer, sparse/HCA/window
attention, MoE experts, mHC, head, Engram, draft) for decode and prefill at a given context, and
the communication terms (TP all-reduce, EP dispatch/combine) over the chip's interconnect.

* ``roofline``: sum over op classes of max(FLOPs / peak FLOP/s, bytes / peak bandwidth), plus
  communication at peak link bandwidth and one latency per collective.
* ``calibrated``: host floor + device time at achieved efficiencies, both fitted in
  ``calibration.py``.  The host floor is a fixed cost per forward pass (scheduler, input
  preparation, graph launch, sampling: the fit rows all run with decode graphs captured, so no
  per-layer host dispatch is modelled) times the passes in the step: 1 for plain decode, + K
  sequential MTP passes or + 1 DSpark block pass, one per prefill chunk.  The floor *adds* to the
  device time, so chip bandwidth and context always show.  Speculative decoding: TPOT = per-step
  time / acceptance length.

What it does not know: kernel fusion details, overlap of communication with compute or of the
host floor with device work (both assumed none), load imbalance across experts (uniform routing
assumed), or queueing in a server.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from v4stack.hardware.registry import ChipSpec
from v4stack.planner.memory import Parallel, device_share, entry_bytes, tensor_bytes, weight_format
from v4stack.planner.model_shape import LayerShape, ModelShape, block_tensors, global_tensors

# DSpark on a V4 checkpoint (V4-Flash-0731): 3 draft stages (model_spec s1: "43 + 3 DSpark stages");
# we approximate each stage by the V4 MTP block when the config has only the MTP layer.
DSPARK_STAGES_V4 = 3
# Engram off-device placements (assumptions, not measurements): PCIe-class host link and a
# host gather per Engram layer; NVMe random 4 KiB reads with deep queues.
HOST_LINK_BW = 25e9          # B/s, PCIe Gen4 x16 achieved
HOST_LOOKUP_LATENCY = 20e-6  # s per Engram layer per step
DISK_BW = 3e9                # B/s, NVMe random-read throughput at high queue depth
DISK_LATENCY = 100e-6        # s per Engram layer per step (one NVMe random-read round trip)
# Bytes per element of activations moved by collectives: dispatch FP8, combine / all-reduce BF16.
DISPATCH_BYTES, COMBINE_BYTES, ALLREDUCE_BYTES = 1, 2, 2
ATTN_COMPUTE = "bf16"        # attention core (QK^T, PV) runs at the BF16 rate


@dataclass(frozen=True)
class Workload:
    """What is being served.  ``context``: decode position (tokens in cache); ``prompt``: prefill
    length for TTFT; ``spec_tokens`` K drafts verified per step with mean ``acceptance`` tokens
    emitted per step; ``burst``: prompts arriving together (mean TTFT grows as (burst+1)/2)."""

    context: int
    prompt: int
    concurrency: int = 1
    spec_tokens: int = 0
    acceptance: float = 1.0
    draft: str = "auto"          # auto | mtp | dspark
    burst: int = 1

    def __post_init__(self) -> None:
        if self.spec_tokens and not 1.0 <= self.acceptance <= self.spec_tokens + 1:
            raise ValueError("acceptance must lie in [1, spec_tokens + 1]")


@dataclass(frozen=True)
class Calib:
    """Achieved fractions of peak and fixed costs (1.0 / 0.0 = pure roofline)."""

    bw_eff: float = 1.0
    flops_eff: float = 1.0
    link_eff: float = 1.0
    pass_overhead_s: float = 0.0    # per forward pass (scheduler, input prep, graph launch, sampling)


@dataclass
class StepCost:
    """Per-device cost of one step: op class -> [FLOPs, bytes, compute-format], comm seconds."""

    ops: dict[str, list] = field(default_factory=dict)
    comm_bytes: float = 0.0
    collectives: int = 0
    fixed_s: float = 0.0             # off-device latencies (host/disk Engram)
    layers_run: int = 0
    passes: int = 0                  # forward passes (main, each draft pass, each prefill chunk)

    def add(self, op: str, flops: float, nbytes: float, fmt: str = "bf16") -> None:
        cur = self.ops.setdefault(op, [0.0, 0.0, fmt])
        cur[0] += flops
        cur[1] += nbytes
        if fmt != "bf16":
            cur[2] = fmt

    def device_time(self, chip: ChipSpec, cal: Calib = Calib()) -> float:
        """Seconds on the device: sum over op classes of max(FLOPs / (peak x eff), bytes /
        (bandwidth x eff)), plus communication bytes / link, one latency per collective, and
        off-device (host/disk Engram) latencies.  No overlap between op classes or with comm."""
        t = 0.0
        for flops, nbytes, fmt in self.ops.values():
            t += max(flops / (chip.gemm_flops(fmt) * cal.flops_eff), nbytes / (chip.memory_bw.value * cal.bw_eff))
        t += self.comm_bytes / (chip.link_bw_per_direction * cal.link_eff)
        return t + self.collectives * chip.link_latency.value + self.fixed_s

    def host_floor(self, cal: Calib) -> float:
        """Host-side floor: per-pass overhead x forward passes in the step."""
        return self.passes * cal.pass_overhead_s

    def step_time(self, chip: ChipSpec, cal: Calib = Calib()) -> float:
        """Calibrated step time = host floor + device time.  Additive: the floor is the part of
        the step during which the device waits (launch, sampling, scheduling between passes), so
        every byte and FLOP on the device still costs time.  With ``Calib()`` this is the pure
        roofline (floor 0, peak figures)."""
        return self.host_floor(cal) + self.device_time(chip, cal)

    def per_op_time(self, chip: ChipSpec) -> dict[str, float]:
        return {k: max(f / chip.gemm_flops(fmt), b / chip.memory_bw.value) for k, (f, b, fmt) in self.ops.items()}


# 2-D tensors that are not multiplied by activations: mHC params (own formula), hash tables, and
# compressor position biases (``ape``, added to gate scores).
_NOT_MATMUL = re.compile(r"hc_|tid2eid|\.ape$")


def _op_of(name: str, cls: str) -> str:
    if "hc_" in name:
        return "mhc"
    if "indexer" in name:
        return "indexer"
    if cls in ("shared_expert", "router", "experts"):
        return "moe_experts"
    if cls == "engram_proj":
        return "engram"
    return "projections"


def _hit_prob(n_experts: int, topk: int, tokens: float) -> float:
    """P(an expert is chosen by at least one of ``tokens`` tokens), uniform top-k routing."""
    return 1.0 - (1.0 - topk / n_experts) ** tokens


def _attended(m: ModelShape, l: LayerShape, ctx: float) -> tuple[float, float, str]:
    """(window keys, compressed keys, op class) one query attends at context ``ctx``."""
    win = min(ctx, m.window)
    if l.is_draft or l.ratio == 0:
        return win, 0.0, "window_attn" if not l.is_draft else "draft"
    visible = ctx / l.ratio
    if m.family == "v4" and l.kind == "hca":
        return win, visible, "hca_attn"          # HCA attends every compressed entry
    return win, min(m.index_topk, visible), "sparse_attn"


def layer_cost(sc: StepCost, m: ModelShape, l: LayerShape, par: Parallel, quant: str, kv_dtype: str,
               engram: str, ctx: float, seqs: float, q: float, moe_tokens: float, op_override: str = "") -> None:
    """Add one block's decode/verify cost: ``seqs`` sequences x ``q`` tokens on this device,
    ``moe_tokens`` tokens routed into this device's expert group."""
    n_tok = seqs * q
    win_b, comp_b, idx_b = entry_bytes(m, kv_dtype)
    for t in block_tensors(m, l):
        share = device_share(t, par)
        if t.fmt == "engram":
            continue
        op = op_override or _op_of(t.name, t.cls)
        nbytes = tensor_bytes(t, quant, m.weight_block) * share
        if t.expert:     # routed experts: only experts hit this step are read; FLOPs per routed token
            p = _hit_prob(l.n_experts, l.topk, moe_tokens)
            flops = 2 * t.numel * t.count * moe_tokens * l.topk / l.n_experts / par.expert_shards
            sc.add(op, flops, nbytes * p, weight_format(t, quant))
        elif len(t.shape) == 2 and min(t.shape) > 1 and not _NOT_MATMUL.search(t.name):
            sc.add(op, 2 * t.numel * t.count * share * n_tok, nbytes, weight_format(t, quant))
        else:            # vectors, sinks, hc params: read once
            sc.add(op, 0.0, nbytes)
    D, hc = m.hidden, m.hc_mult
    n_hc = (2 + hc) * hc
    # mHC per token, 2 sublayers: fn matvec 2*n_hc*hc*D, pre collapse 2*hc*D, comb 2*hc^2*D, post 2*hc*D;
    # streams (bf16) read + written: 2 * hc * D * 2 B per sublayer.
    sc.add(op_override or "mhc", n_tok * 2 * (2 * n_hc * hc * D + 4 * hc * D + 2 * hc * hc * D),
           n_tok * 2 * 2 * hc * D * 2)
    heads = m.n_heads / par.tp
    win, comp, aop = _attended(m, l, ctx)
    # attention core: QK^T and PV, 2 FLOP each per (head, dim, key); KV read once per sequence.
    sc.add(op_override or aop, n_tok * 4 * heads * m.head_dim * (win + comp),
           seqs * (win * win_b + comp * win_b if m.family == "v4" else win * win_b + comp * comp_b))
    if l.index_scores:
        n_idx = ctx / l.ratio
        if l.index_scores == "candidates":
            n_idx = min(n_idx, m.candidate_positions)
        ih = m.index_heads / par.tp
        # scores: q.k per head (2*ih*dim per key) + weighted ReLU sum (2*ih per key); keys read once
        sc.add("indexer", n_tok * n_idx * (2 * ih * m.index_head_dim + 2 * ih), seqs * n_idx * idx_b)
    if l.engram:
        _engram_cost(sc, m, par, engram, n_tok)
    _layer_comm(sc, m, par, n_tok, moe_tokens, l.topk)
    sc.layers_run += 1


def _layer_comm(sc: StepCost, m: ModelShape, par: Parallel, n_tok: float, moe_tokens: float, topk: int) -> None:
    """TP all-reduce after attention (ring: 2 (tp-1)/tp x payload); EP dispatch FP8 + combine BF16."""
    if par.tp > 1:
        sc.comm_bytes += 2 * (par.tp - 1) / par.tp * n_tok * m.hidden * ALLREDUCE_BYTES
        sc.collectives += 1
    if par.ep > 1:
        sent = moe_tokens / par.ep * topk * m.hidden * (par.ep - 1) / par.ep
        sc.comm_bytes += sent * (DISPATCH_BYTES + COMBINE_BYTES)
        sc.collectives += 2
    elif par.tp > 1:
        sc.comm_bytes += 2 * (par.tp - 1) / par.tp * n_tok * m.hidden * ALLREDUCE_BYTES
        sc.collectives += 1


def _engram_cost(sc: StepCost, m: ModelShape, par: Parallel, engram: str, n_tok: float) -> None:
    """Rows per token per Engram layer: n-gram sizes x heads (24), 264 B each."""
    nbytes = n_tok * m.engram_ngram_sizes * m.engram_heads * m.engram_row_bytes
    if engram == "device":       # rows split over devices: gather locally, exchange the rest
        sc.add("engram", 0.0, nbytes / par.devices)
        sc.comm_bytes += nbytes * (par.devices - 1) / par.devices
        sc.collectives += 1
    elif engram == "host":
        sc.fixed_s += HOST_LOOKUP_LATENCY + nbytes / HOST_LINK_BW
    else:
        sc.fixed_s += DISK_LATENCY + nbytes / DISK_BW


def _head_cost(sc: StepCost, m: ModelShape, par: Parallel, quant: str, n_tok: float, op: str = "head") -> None:
    for t in global_tensors(m):
        share = device_share(t, par)
        if t.cls == "head":
            sc.add(op, 2 * t.numel * share * n_tok, tensor_bytes(t, quant, m.weight_block) * share)
        elif t.cls == "embeddings":          # lookup: one row per token
            sc.add(op, 0.0, n_tok * m.hidden * 2)


def decode_step(m: ModelShape, par: Parallel, quant: str, kv_dtype: str, engram: str, wl: Workload) -> StepCost:
    """One decode (or speculative verify + draft) step on one device, all layers."""
    sc = StepCost()
    seqs = math.ceil(wl.concurrency / par.dp)
    q = 1 + wl.spec_tokens
    moe_group = (wl.concurrency * q * par.ep / par.devices) if par.ep > 1 else seqs * q
    for l in m.main_layers:
        layer_cost(sc, m, l, par, quant, kv_dtype, engram, wl.context, seqs, q, moe_group)
    _head_cost(sc, m, par, quant, seqs * q)
    sc.passes += 1
    if wl.spec_tokens:
        _draft_cost(sc, m, par, quant, kv_dtype, engram, wl, seqs)
    return sc


def _draft_cost(sc: StepCost, m: ModelShape, par: Parallel, quant: str, kv_dtype: str, engram: str,
                wl: Workload, seqs: float) -> None:
    """MTP: K sequential one-token passes of the MTP block + head.  DSpark: one pass of every
    stage over a block of K draft tokens + head on the block."""
    kind = m.draft_kind if wl.draft == "auto" else wl.draft
    layers = list(m.draft_layers)
    if not layers:
        return
    if kind == "dspark":
        if m.draft_kind == "mtp":
            layers = layers * DSPARK_STAGES_V4
        passes, q = 1, wl.spec_tokens
    else:
        passes, q = wl.spec_tokens, 1
    ratio = (wl.concurrency * q * par.ep / par.devices) if par.ep > 1 else seqs * q
    for _ in range(passes):
        for l in layers:
            layer_cost(sc, m, l, par, quant, kv_dtype, engram, wl.context, seqs, q, ratio, op_override="draft")
        _head_cost(sc, m, par, quant, seqs * q, op="draft")
        sc.passes += 1


def _sum_min(c: float, r: float, p: float) -> float:
    """sum over t = 1..p of min(c, t / r) ~ integral: p^2/(2r) while p <= c r, else c p - c^2 r / 2."""
    return p * p / (2 * r) if p <= c * r else c * p - c * c * r / 2


def prefill(m: ModelShape, par: Parallel, quant: str, kv_dtype: str, engram: str, prompt: int,
            chunk: int) -> StepCost:
    """Prefill of one prompt on one DP group (TP splits heads; EP spreads experts), chunked.

    Per-token linear work uses ``layer_cost`` at context 0 with ``prompt`` tokens; the attention and
    indexer terms are replaced by their sums over query positions (quadratic in the prompt):
    window sum min(t, W); CSA/V4.1 sum min(topk, t/r); HCA sum t/128; indexer sum t/r x 2 H_I d.
    Weights are re-read once per chunk.
    """
    sc = StepCost()
    n_chunks = max(1, math.ceil(prompt / chunk))
    moe = prompt * par.ep / par.tp if par.ep > 1 else prompt       # tokens into this expert group
    for l in m.main_layers:
        tmp = StepCost()
        layer_cost(tmp, m, l, par, quant, kv_dtype, engram, 0.0, prompt, 1, moe)
        for op, (f, b, fmt) in tmp.ops.items():
            if op in ("window_attn", "sparse_attn", "hca_attn", "indexer"):
                continue
            sc.add(op, f, b * (n_chunks if op != "mhc" else 1), fmt)
        sc.comm_bytes += tmp.comm_bytes
        sc.collectives += tmp.collectives * n_chunks
        sc.fixed_s += tmp.fixed_s * n_chunks
        sc.layers_run += n_chunks
        _prefill_attention(sc, m, l, par, kv_dtype, prompt)
    _head_cost(sc, m, par, quant, 1)
    sc.passes = n_chunks
    return sc


def _prefill_attention(sc: StepCost, m: ModelShape, l: LayerShape, par: Parallel, kv_dtype: str, p: int) -> None:
    heads = m.n_heads / par.tp
    win_keys = _sum_min(m.window, 1, p)
    comp_keys, op = 0.0, "window_attn"
    if l.ratio:
        if m.family == "v4" and l.kind == "hca":
            comp_keys, op = p * p / (2 * l.ratio), "hca_attn"
        else:
            comp_keys, op = _sum_min(m.index_topk, l.ratio, p), "sparse_attn"
    win_b, comp_b, idx_b = entry_bytes(m, kv_dtype)
    sc.add(op, 4 * heads * m.head_dim * (win_keys + comp_keys), p * (win_b + comp_b / max(l.ratio, 1)))
    if l.index_scores:
        keys = p * p / (2 * l.ratio)
        if l.index_scores == "candidates":
            keys = _sum_min(m.candidate_positions, l.ratio, p)
        ih = m.index_heads / par.tp
        sc.add("indexer", keys * (2 * ih * m.index_head_dim + 2 * ih), p * idx_b / l.ratio)
