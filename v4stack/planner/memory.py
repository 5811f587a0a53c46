"""Memory per device: weights by class, Engram tables by placement, KV pools, workspace (``planner.workspace``),
verdict.

What it is: pure arithmetic over ``ModelShape.tensors()`` and the KV-cache formats of
``shared/docs/model_spec.md`` s5.2.  ``kv_layout`` gives per-pool bytes per token and per sequence;
``device_memory`` combines everything for one deployment; ``max_context`` / ``verdict`` answer
"does it fit, and how much context".

What it does not know: allocator fragmentation, page rounding of the whole-sequence pools (at most one
block per pool per sequence; the window groups are counted in the engine's whole blocks), framework buffers
beyond ``RUNTIME_RESERVE``, or context parallelism (vllm-ascend's ``enable_dsa_cp``): the single latent KV
head is replicated on every tensor-parallel rank, so KV scales with sequences per DP rank, not with TP.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from v4stack.cache.window_blocks import DEFAULT_BLOCK_SIZE, per_sequence_blocks, step_blocks
from v4stack.config import validation as check
from v4stack.planner.model_shape import FP4_BLOCK, ModelShape, TensorSpec
from v4stack.planner.workspace import workspace

GIB = 1024 ** 3
# vLLM's default --gpu-memory-utilization (0.9): share of device memory the engine may use.
MEMORY_UTILIZATION = 0.9
# CUDA/ACL graphs, communicator buffers (HCCL_BUFFSIZE ~ 200 MB x groups), allocator slack.
# Assumption of ours, not a measurement.
RUNTIME_RESERVE = 2 * GIB
# On the CPU the reserve is the Python + torch + v4stack runtime after a first prefill chunk, measured on 2026-12-03
# (43-layer bench model of bench/long_context.py, fast numerics, 2 threads, glibc mmap threshold fixed at 128 KiB,
# one step of a 1,024-token prompt): RSS 465.2 MiB minus what the plan counts as resident (weights 114.4, prepared
# fast weights 5.8, the cache pages the step touched 50.1 - mincore of every pool tensor - and the compressor state
# 12.1) = 282.8 MiB: 222.2 after importing torch 2.13 and the engine, ~56 MiB of library code the first forward pages
# in (file-backed pages 162.3 -> 218.5 MiB); a 1,024-row step leaves ~10 MiB more anonymous memory than a 16-token
# one in library mappings (no tensor holds it: gc finds none; MKL's buffer cache, oneDNN's primitive cache).
# Rounded up to 290 MiB. Not in it: the per-shape library caches growing ~0.5-1 MiB per prefill chunk of a long
# prompt (docs/benchmarks.md "Long context").
CPU_RUNTIME_RESERVE = 290 * 2 ** 20
# Prefill chunk for the activation workspace (vLLM-style --max-num-batched-tokens).
PREFILL_CHUNK = 4096
# ModelSlim W8A8/W4A8 (A2/A3): per-output-channel fp32 scale; W4 adds a group scale per 256
# elements along K (assumption; ModelSlim group size not in the shared docs).
INT_CHANNEL_SCALE_BYTES = 4
W4_GROUP = 256
W4_GROUP_SCALE_BYTES = 4

QUANTS = ("native", "w8a8", "w4a8", "bf16")
KV_DTYPES = ("bf16", "fp8", "fp4")
ENGRAM_PLACEMENTS = ("device", "host", "disk")

# KV entry formats, bytes per entry (model_spec s5.2):
#   V4 main KV fp8 "MODEL1_FP8Sparse": 448 fp8 + 64 bf16 rope (128 B) + 7 ue8m0 scales + 1 pad = 584
#   V4.1 window fp8 block 32: 512 + 512/32 scales = 528;  V4.1 compressed fp4 block 16 e4m3: 256 + 32 = 288
#   indexer key fp4 block 32: 64 + 4 = 68; fp8 (V3.2 style) 128 + 4-byte scale = 132; bf16 = 2 x dim
V4_FP8_ENTRY = 448 + 64 * 2 + 448 // 64 + 1          # 584
V41_FP8_ENTRY = 512 + 512 // 32                      # 528
FP4_E4M3_ENTRY = 512 // 2 + 512 // 16                # 288
INDEX_FP4_ENTRY = 128 // 2 + 128 // 32               # 68
FP32 = 4
BF16 = 2


@dataclass(frozen=True)
class Parallel:
    """Deployment split.  devices = tp * dp; ep divides devices (1 = experts TP-sharded)."""

    devices: int
    tp: int
    dp: int
    ep: int

    def __post_init__(self) -> None:
        if self.tp * self.dp != self.devices:
            raise ValueError(f"tp({self.tp}) x dp({self.dp}) must equal devices({self.devices})")
        if self.ep < 1 or self.devices % self.ep:
            raise ValueError(f"ep({self.ep}) must divide devices({self.devices})")

    @staticmethod
    def make(devices: int, tp: int | None = None, dp: int | None = None, ep: int | None = None) -> "Parallel":
        """Defaults: tp = devices / dp (dp default 1), ep = devices (EP over all devices); every count >= 1
        (ParameterError otherwise, before any division)."""
        check.integer("devices", devices, 1)
        for name, value in (("tp", tp), ("dp", dp), ("ep", ep)):
            if value is not None:
                check.integer(name, value, 1)
        if tp is None:
            tp = devices // (dp or 1)
        if dp is None:
            dp = devices // tp
        return Parallel(devices, tp, dp, devices if ep is None else ep)

    @property
    def expert_shards(self) -> int:
        """Routed experts are split whole over ep ranks, or sliced over tp when ep == 1."""
        return self.ep if self.ep > 1 else self.tp


def check_split(m: ModelShape, par: Parallel) -> None:
    """Refuse (ParameterError) a split the model cannot take: TP shards the attention heads, so tp must divide
    them (each rank whole heads, as vLLM and SGLang require); EP spreads the routed experts, so no more ranks
    than experts. Without this a huge --devices is priced as if every chip held a sliver of a head."""
    if par.tp > m.n_heads or m.n_heads % par.tp:
        raise check.ParameterError("tp", par.tp, f"a divisor of the model's {m.n_heads} attention heads "
                                   "(add --dp for more devices)")
    if m.n_routed and par.ep > m.n_routed:
        raise check.ParameterError("ep", par.ep, f"at most the model's {m.n_routed} routed experts")


def tensor_bytes(t: TensorSpec, quant: str, block: int) -> int:
    """Stored bytes of one tensor (times ``t.count``) under a deployment quantisation.

    native: FP8 = numel + ceil(out/b) * ceil(in/b) E8M0 scales; FP4 = numel/2 + out * in/32 scales.
    w8a8:   FP8 and FP4 both -> INT8 numel + 4 B per output row.
    w4a8:   FP8 -> INT8 as above; FP4 experts -> INT4 numel/2 + 4 B per row + 4 B per 256 group.
    bf16:   FP8/FP4 -> 2 B per element.
    """
    out, k = (t.shape[0], math.prod(t.shape[1:])) if len(t.shape) > 1 else (t.shape[0], 1)
    n = t.numel
    if t.fmt == "engram":
        b = t.shape[1] + t.shape[1] // 32                 # FP8 row + E8M0 per 32
        return t.shape[0] * b * t.count
    if t.fmt in ("bf16", "fp32", "i64"):
        return n * {"bf16": 2, "fp32": 4, "i64": 8}[t.fmt] * t.count
    if quant == "bf16":
        return 2 * n * t.count
    if quant == "native":
        if t.fmt == "fp8":
            return (n + math.ceil(out / block) * math.ceil(k / block)) * t.count
        return (n // 2 + out * math.ceil(k / FP4_BLOCK)) * t.count
    int8 = n + out * INT_CHANNEL_SCALE_BYTES
    if t.fmt == "fp4" and quant == "w4a8":
        return (n // 2 + out * INT_CHANNEL_SCALE_BYTES + math.ceil(n / W4_GROUP) * W4_GROUP_SCALE_BYTES) * t.count
    return int8 * t.count


def weight_format(t: TensorSpec, quant: str) -> str:
    """Storage format used for compute-rate lookup: fp8 | fp4 | int8 | int4 | bf16."""
    if t.fmt not in ("fp8", "fp4"):
        return "bf16"
    if quant == "native":
        return t.fmt
    if quant == "bf16":
        return "bf16"
    return "int4" if (t.fmt == "fp4" and quant == "w4a8") else "int8"


def device_share(t: TensorSpec, par: Parallel) -> float:
    """Fraction of a tensor held by one device."""
    if t.expert:
        return 1.0 / par.expert_shards
    if t.fmt == "engram":
        return 1.0 / par.devices
    return 1.0 / par.tp if t.tp_dim is not None else 1.0


def weights_by_class(m: ModelShape, quant: str, par: Parallel | None = None) -> dict[str, float]:
    """Bytes per weight class, per device when ``par`` is given, else whole checkpoint."""
    out: dict[str, float] = {}
    for t in m.tensors():
        b = tensor_bytes(t, quant, m.weight_block) * (device_share(t, par) if par else 1.0)
        out[t.cls] = out.get(t.cls, 0.0) + b
    return out


# ----------------------------------------------------------------------------------- KV pools
@dataclass(frozen=True)
class KVLayout:
    """Per-sequence cache bytes: ``per_token`` pools grow with context; ``fixed`` do not."""

    per_token: dict[str, float]     # pool -> bytes per token (summed over layers)
    fixed: dict[str, float]         # pool -> bytes per sequence

    @property
    def bytes_per_token(self) -> float:
        return sum(self.per_token.values())

    @property
    def fixed_bytes(self) -> float:
        return sum(self.fixed.values())

    def per_sequence(self, context: int) -> float:
        return self.fixed_bytes + self.bytes_per_token * context


def entry_bytes(m: ModelShape, kv_dtype: str) -> tuple[float, float, float]:
    """(window entry, compressed entry, indexer key) bytes for a model and --kv-dtype.

    Generalises the 512-dim formats of model_spec s5.2 to any head_dim d with rope dims r_d:
    V4 fp8: (d - r_d) fp8 + r_d bf16 + (d - r_d)/64 scales + 1 pad (584 at d = 512);
    V4.1 fp8: d + d/32 (528); fp4 (E4M3 block 16): d/2 + d/16 (288); index key fp4: k/2 + k/32 (68).
    """
    if kv_dtype not in KV_DTYPES:
        raise ValueError(f"kv dtype {kv_dtype!r} not in {KV_DTYPES}")
    d, k, nope = m.head_dim, m.index_head_dim, m.head_dim - m.rope_dim
    if kv_dtype == "bf16":
        return 2 * d, 2 * d, 2 * k
    idx = k / 2 + k / 32
    fp4 = d / 2 + d / 16
    if m.family == "v4":
        main = nope + 2 * m.rope_dim + nope / 64 + 1 if kv_dtype == "fp8" else fp4
        return main, main, idx
    v41_fp8 = d + d / 32
    return v41_fp8, (v41_fp8 if kv_dtype == "fp8" else fp4), idx   # V4.1 window stays FP8 (s3.12)


def default_kv_dtype(m: ModelShape) -> str:
    """Deployment default: V4 FP8 main KV (584 B); V4.1 FP4 compressed KV (288 B)."""
    return "fp4" if m.family == "v41" else "fp8"


def window_block_bytes(m: ModelShape, kv_dtype: str, block_size: int = DEFAULT_BLOCK_SIZE) -> float:
    """Bytes of one block of the sliding-window groups summed over every layer (backbone + draft): B raw rows
    per layer, and on MTP layers the main model's final streams of the block's last token (``hidden``,
    [hc x D] bf16, kept for prefix hits: ``cache.specs``)."""
    win = entry_bytes(m, kv_dtype)[0]
    hidden = m.hc_mult * m.hidden * BF16 if m.draft_kind == "mtp" else 0
    return len(m.layers) * block_size * win + len(m.draft_layers) * hidden


def kv_layout(m: ModelShape, kv_dtype: str, block_size: int = DEFAULT_BLOCK_SIZE) -> KVLayout:
    """Pools per sequence (model_spec s5.1): window blocks, C4 / C128 / C2 / C1 compressed pools,
    indexer keys, compressor partial state (fp32 kv+score rows: coff*r rows x coff*d wide).

    The window is counted as the engine holds it, in whole blocks of ``block_size`` tokens
    (``cache.window_blocks.per_sequence_blocks``: 3 blocks of 128 rows for a 128-row window), not as a W-row
    ring; the blocks of one step's new rows are per device, not per sequence (:func:`window_step_bytes`)."""
    win, comp, idx = entry_bytes(m, kv_dtype)
    grow: dict[str, float] = {}
    fixed: dict[str, float] = {
        "window": per_sequence_blocks(m.window, block_size) * window_block_bytes(m, kv_dtype, block_size)}
    state = 0.0
    for l in m.main_layers:
        if l.owns_compressor:
            key = f"c{l.ratio}"
            grow[key] = grow.get(key, 0.0) + comp / l.ratio
            coff = 2 if l.overlap else 1
            if l.ratio > 1:      # ratio-1 V4.1 compressor keeps no state
                state += 2 * (coff * l.ratio) * (coff * m.head_dim) * FP32
        if l.index_keys:
            grow["indexer_keys"] = grow.get("indexer_keys", 0.0) + idx / l.ratio
            if m.family == "v4":  # V4 indexer has its own overlapping compressor
                state += 2 * (2 * l.ratio) * (2 * m.index_head_dim) * FP32
    fixed["compressor_state"] = state
    return KVLayout(per_token=grow, fixed=fixed)


def window_step_bytes(m: ModelShape, kv_dtype: str, chunk: int, block_size: int = DEFAULT_BLOCK_SIZE) -> float:
    """The window blocks for one step's raw rows (``chunk`` = max_num_batched_tokens tokens), once per device:
    a step writes every new token's raw row into the window pool before attention reads it
    (``cache.window_blocks.step_blocks``). Prefix caching (on by default in the engine) doubles the window
    groups (``PREFIX_CACHE_FACTOR``); the plan counts them without it."""
    return step_blocks(chunk, block_size) * window_block_bytes(m, kv_dtype, block_size)


def workspace_bytes(m: ModelShape, par: Parallel, context: int, chunk: int = PREFILL_CHUNK) -> float:
    """Activation workspace of one prefill chunk on one device: ``planner.workspace`` (what the engine allocates
    for a chunk of min(chunk, context) tokens ending at ``context``)."""
    return workspace(m, par.tp, context, min(chunk, context))


@dataclass(frozen=True)
class DeviceMemory:
    """Per-device memory budget for one deployment (bytes)."""

    capacity: float
    usable: float
    weights: dict[str, float]
    engram_device: float
    engram_host: float
    kv: dict[str, float]
    workspace: float
    reserve: float

    @property
    def weights_total(self) -> float:
        return sum(self.weights.values())

    @property
    def kv_total(self) -> float:
        return sum(self.kv.values())

    @property
    def used(self) -> float:
        return self.weights_total + self.engram_device + self.kv_total + self.workspace + self.reserve

    @property
    def spare(self) -> float:
        return self.usable - self.used


def device_memory(m: ModelShape, capacity: float, par: Parallel, quant: str, kv_dtype: str,
                  engram: str, context: int, concurrency: int, chunk: int = PREFILL_CHUNK,
                  reserve: float = RUNTIME_RESERVE) -> DeviceMemory:
    """Budget of one device serving ``concurrency`` sequences at ``context`` tokens, prefilled in chunks of
    ``chunk`` tokens, with ``reserve`` bytes for the runtime."""
    if engram not in ENGRAM_PLACEMENTS:
        raise ValueError(f"engram placement {engram!r} not in {ENGRAM_PLACEMENTS}")
    w = weights_by_class(m, quant, par)
    table = w.pop("engram_table", 0.0)
    full_table = weights_by_class(m, quant).get("engram_table", 0.0)
    lay = kv_layout(m, kv_dtype)
    seqs = math.ceil(concurrency / par.dp)
    kv = {k: v * context * seqs for k, v in lay.per_token.items()}
    kv.update({k: v * seqs for k, v in lay.fixed.items()})
    kv["window_step"] = window_step_bytes(m, kv_dtype, chunk)
    return DeviceMemory(
        capacity=capacity, usable=capacity * MEMORY_UTILIZATION, weights=w,
        engram_device=table if engram == "device" else 0.0,
        engram_host=full_table if engram == "host" else 0.0,
        kv=kv, workspace=workspace_bytes(m, par, context, chunk), reserve=reserve)


def max_context(m: ModelShape, capacity: float, par: Parallel, quant: str, kv_dtype: str,
                engram: str, concurrency: int, limit: int | None = None, chunk: int = PREFILL_CHUNK,
                reserve: float = RUNTIME_RESERVE) -> int:
    """Largest context (tokens) at which ``concurrency`` sequences fit; 0 if nothing fits.

    Memory grows monotonically with context (KV pools, indexer-logit workspace), so bisect on the
    exact budget.  Capped at ``limit`` (max_position_embeddings), else searched up to 2^30.
    """
    def fits(t: int) -> bool:
        return device_memory(m, capacity, par, quant, kv_dtype, engram, t, concurrency, chunk, reserve).spare >= 0

    hi = limit or (1 << 30)
    if not fits(0):
        return 0
    if fits(hi):
        return hi
    lo = 0                     # invariant: fits(lo) and not fits(hi)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo


def format_gib(x: float) -> str:
    return f"{x / GIB:,.1f} GiB"
