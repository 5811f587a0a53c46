"""Everything the planner needs to know about a DeepSeek-V4 / V4.1 model, from a raw HF config.

What it is: ``ModelShape.from_config(dict)`` reads the official HF ``config.json`` (V4: flat keys,
``model_type=deepseek_v4``; V4.1: nested ``text_config``, ``model_type=deepseek_v41``) and derives
per-layer roles (window-only / CSA / HCA for V4; full / reuse / reindex for V4.1's CSA2), the
draft head (MTP or DSpark), Engram table sizes, and a tensor inventory (``tensors()``) with shapes,
checkpoint formats, weight class and tensor-parallel split dimension.

Parsing is the family's one config parser (``v4stack.config.family``: ``ModelConfig`` / ``V41Config``), so a
config the model refuses the planner refuses with the same one-line message, and CSA2 roles come from
``V41Config``'s own methods. What it does not know: runtime layouts or paging. Shapes follow
``shared/docs/model_spec.md`` s2-s4 (R4 / R41 constructors).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from v4stack.config.family import AnyConfig, parse_config
from v4stack.config.model_config import ConfigError
from v4stack.config.v41_config import FULL, REUSE, SWA, V41Config

PRESET_DIR = Path(__file__).with_name("presets")
PRESETS = {"v4-flash": "v4-flash.json", "v4-pro": "v4-pro.json", "v4.1-flash": "v4.1-flash.json"}

# FP4 experts: two E2M1 nibbles per byte plus one E8M0 scale byte per 32 elements along K
# (model_spec s4.2: I8 [out, in/2] + F8_E8M0 [out, in/32]).
FP4_BLOCK = 32
# Engram table row: 256 FP8 e4m3 values + 8 E8M0 scales (one per 32) = 264 B (model_spec s3.9).
ENGRAM_SCALE_BLOCK = 32
# mHC: hc_fn has (2 + hc) * hc rows (pre, post, and the hc x hc comb matrix) and hc_scale 3 entries
# (model_spec s3.7: 24 = (2+4)*4 numbers, alpha0..alpha2).
HC_SCALE_ENTRIES = 3
# DSpark Markov head rank comes from the config; its confidence head maps D + rank -> 1 (s3.10).
# V4.1 vision tower is not in the text config's scope; counted as an estimate (see _vision_tensors).


@dataclass(frozen=True)
class TensorSpec:
    """One checkpoint tensor: ``fmt`` in {fp8, fp4, bf16, fp32, i64, engram}.

    ``cls`` is the weight class used in memory reports; ``tp_dim`` the dimension split by tensor
    parallelism (None = replicated); ``expert`` marks routed-expert tensors (split by EP instead).
    """

    name: str
    shape: tuple[int, ...]
    fmt: str
    cls: str
    tp_dim: int | None = None
    expert: bool = False
    count: int = 1                 # identical tensors (e.g. 256 experts), counted once for speed

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class LayerShape:
    """Role of one block (main or draft) in a forward step."""

    index: int
    ratio: int            # compress ratio; 0 = 128-token window only
    kind: str             # swa | csa | hca (V4); full | reuse | reindex (V4.1); mtp | dspark (draft)
    owns_compressor: bool  # writes a growing compressed-KV pool
    index_keys: bool       # writes a growing indexer-key pool
    index_scores: str      # "" | "all" | "candidates": which compressed entries its indexer scores
    overlap: bool          # V4 ratio-4 compressor pools 2r rows
    hash_routed: bool
    is_draft: bool
    n_experts: int
    topk: int
    engram: bool = False


@dataclass(frozen=True)
class ModelShape:
    """Derived dimensions of a V4/V4.1 model.  Build with ``from_config`` or ``load_model``."""

    name: str
    family: str                   # "v4" | "v41"
    vocab: int
    hidden: int
    n_layers: int
    n_heads: int
    head_dim: int
    rope_dim: int
    q_lora: int
    o_groups: int
    o_lora: int
    window: int
    index_heads: int
    index_head_dim: int
    index_topk: int
    n_routed: int
    n_shared: int
    topk: int
    moe_inter: int
    hc_mult: int
    weight_block: int
    layers: tuple[LayerShape, ...]
    draft_kind: str               # "" | "mtp" | "dspark"
    dspark_block: int
    dspark_markov_rank: int
    engram_rows: tuple[int, ...]
    engram_heads: int
    engram_head_dim: int
    engram_ngram_sizes: int       # n-gram sizes looked up (2..max_ngram)
    candidate_positions: int      # V4.1 reindex candidate cap = topk_blocks * block_size
    max_position: int
    vision: dict

    # ---------------------------------------------------------------- parsing
    @staticmethod
    def from_config(cfg: dict[str, Any], name: str = "custom") -> "ModelShape":
        """Parse a raw HF config dict (V4 flat or V4.1 nested ``text_config``) with the family parser."""
        return ModelShape.from_parsed(parse_config(cfg), name)

    @staticmethod
    def from_parsed(cfg: AnyConfig, name: str = "custom") -> "ModelShape":
        """The planner's view of a parsed config (``config.family.parse_config``): roles come from the config's
        own CSA2 methods, so the planner and the model cannot disagree on them."""
        family = "v41" if isinstance(cfg, V41Config) else "v4"
        n_layers = cfg.num_hidden_layers
        ratios = list(cfg.compress_ratios)
        n_draft = len(ratios) - n_layers
        if n_draft < 0:
            raise ValueError("compress_ratios shorter than num_hidden_layers")
        draft_kind = "dspark" if cfg.dspark is not None else ("mtp" if n_draft else "")
        layers = _layer_roles(cfg, family, ratios, n_layers, draft_kind)
        engram = getattr(cfg, "engram", None)
        return ModelShape(
            name=name, family=family, vocab=cfg.vocab_size, hidden=cfg.hidden_size,
            n_layers=n_layers, n_heads=cfg.num_attention_heads, head_dim=cfg.head_dim,
            rope_dim=cfg.qk_rope_head_dim, q_lora=cfg.q_lora_rank, o_groups=cfg.o_groups,
            o_lora=cfg.o_lora_rank, window=cfg.sliding_window, index_heads=cfg.index_n_heads,
            index_head_dim=cfg.index_head_dim, index_topk=cfg.index_topk,
            n_routed=cfg.n_routed_experts, n_shared=cfg.n_shared_experts,
            topk=cfg.num_experts_per_tok, moe_inter=cfg.moe_intermediate_size,
            hc_mult=cfg.hc_mult, weight_block=cfg.quant.weight_block_size[0],
            layers=tuple(layers), draft_kind=draft_kind,
            dspark_block=cfg.dspark.block_size if cfg.dspark else 0,
            dspark_markov_rank=cfg.dspark.markov_rank if cfg.dspark else 0,
            engram_rows=tuple(engram.num_embeddings) if engram else (),
            engram_heads=engram.n_heads if engram else 0, engram_head_dim=engram.head_dim if engram else 0,
            engram_ngram_sizes=engram.ngram_sizes if engram else 0,
            candidate_positions=(cfg.candidate_topk_blocks * cfg.candidate_block_size if family == "v41" else 0),
            max_position=cfg.max_position_embeddings,
            vision=dict(cfg.extra.get("vision_config") or {}),
        )

    # ---------------------------------------------------------------- derived
    @property
    def main_layers(self) -> tuple[LayerShape, ...]:
        return tuple(l for l in self.layers if not l.is_draft)

    @property
    def draft_layers(self) -> tuple[LayerShape, ...]:
        return tuple(l for l in self.layers if l.is_draft)

    @property
    def engram_row_bytes(self) -> int:
        """FP8 row + E8M0 scales: 256 + 256/32 = 264 B for V4.1."""
        return self.engram_head_dim + self.engram_head_dim // ENGRAM_SCALE_BLOCK

    @property
    def engram_lookups_per_token(self) -> int:
        """Random table rows read per token: layers x n-gram sizes x heads (2 x 3 x 8 = 48)."""
        return len(self.engram_rows) * self.engram_ngram_sizes * self.engram_heads

    def tensors(self) -> list[TensorSpec]:
        """Full checkpoint tensor inventory (main layers, draft head, globals, Engram, vision)."""
        out: list[TensorSpec] = []
        for layer in self.layers:
            out += block_tensors(self, layer)
        out += global_tensors(self)
        return out


def load_model(model: str) -> ModelShape:
    """Resolve ``v4-flash`` / ``v4-pro`` / ``v4.1-flash`` or a path to an HF config.json."""
    if model in PRESETS:
        path, name = PRESET_DIR / PRESETS[model], model
    else:
        path = Path(model)
        name = path.parent.name or path.stem
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a JSON object, found {type(raw).__name__}")
    try:
        return ModelShape.from_config(raw, name=name)
    except ConfigError as exc:   # the family parser's one line, naming the key; prefixed with the file
        raise ConfigError(f"{path}: {exc}") from None
    except (KeyError, TypeError, ValueError) as exc:   # a config.json without a field the planner needs
        raise ConfigError(f"{path}: not a DeepSeek-V4 config the planner can read ({type(exc).__name__}: "
                          f"{exc})") from None


# ------------------------------------------------------------------------------- layer roles
def _layer_roles(cfg: AnyConfig, family: str, ratios: list[int], n_layers: int, draft_kind: str) -> list[LayerShape]:
    n_hash = cfg.num_hash_layers if family == "v4" else 0   # V4.1 dropped hash routing
    engram = set(cfg.engram.layer_ids) if getattr(cfg, "engram", None) else set()
    experts, k = cfg.n_routed_experts, cfg.num_experts_per_tok
    out = []
    for i, r in enumerate(ratios):
        draft = i >= n_layers
        ne, nk = experts, k
        if draft and draft_kind == "dspark" and getattr(cfg.dspark, "n_routed_experts", None):
            ne, nk = cfg.dspark.n_routed_experts, cfg.dspark.num_experts_per_tok
        if draft:
            kind, comp, keys, scores, ov = draft_kind or "mtp", False, False, "", False
        elif family == "v4":
            kind = {0: "swa", 4: "csa"}.get(r, "hca")
            comp, keys = r > 0, r == 4
            scores = "all" if r == 4 else ""
            ov = r == 4      # model_spec s3.4: overlap only for ratio 4
        else:                # CSA2 roles as the model plays them (V41Config.role / uses_candidates)
            kind = cfg.role(i)
            comp = kind == FULL
            keys = comp       # kv-source layers own indexer wk / k_cache (s3.6)
            scores = "" if kind in (SWA, REUSE) else ("candidates" if cfg.uses_candidates(i) else "all")
            ov = False
        out.append(LayerShape(index=i, ratio=r, kind=kind, owns_compressor=comp, index_keys=keys,
                              index_scores=scores, overlap=ov, hash_routed=(not draft and i < n_hash),
                              is_draft=draft, n_experts=ne, topk=nk, engram=i in engram))
    return out


# ------------------------------------------------------------------------------- tensors
def block_tensors(m: ModelShape, l: LayerShape) -> list[TensorSpec]:
    """Tensors of one block; shapes per model_spec s4.3 (V4) and s4.4 (V4.1)."""
    D, H, hd, ql = m.hidden, m.n_heads, m.head_dim, m.q_lora
    p = f"{'mtp' if l.is_draft else 'layers'}.{l.index}."
    n_hc = (2 + m.hc_mult) * m.hc_mult
    cls = "draft" if l.is_draft else None
    a, n, e = cls or "attention", cls or "norms_mhc", cls or "experts"
    ts = [
        TensorSpec(p + "attn_norm|ffn_norm", (D,), "bf16", n, count=2),
        TensorSpec(p + "hc_{attn,ffn}_fn", (n_hc, m.hc_mult * D), "fp32", n, count=2),
        TensorSpec(p + "hc_{attn,ffn}_base", (n_hc,), "fp32", n, count=2),
        TensorSpec(p + "hc_{attn,ffn}_scale", (HC_SCALE_ENTRIES,), "fp32", n, count=2),
        TensorSpec(p + "attn.attn_sink", (H,), "fp32", n, tp_dim=0),
        TensorSpec(p + "attn.wq_a", (ql, D), "fp8", a),                        # q down-projection
        TensorSpec(p + "attn.q_norm", (ql,), "bf16", n),
        TensorSpec(p + "attn.wq_b", (H * hd, ql), "fp8", a, tp_dim=0),          # q up: [H*512, q_lora]
        TensorSpec(p + "attn.wkv", (hd, D), "fp8", a),                          # single KV head
        TensorSpec(p + "attn.kv_norm", (hd,), "bf16", n),
        TensorSpec(p + "attn.wo_a", (m.o_groups * m.o_lora, H * hd // m.o_groups), "fp8", a, tp_dim=0),
        TensorSpec(p + "attn.wo_b", (D, m.o_groups * m.o_lora), "fp8", a, tp_dim=1),
    ]
    ts += _compressor_indexer_tensors(m, l, p, a, n)
    E, I = l.n_experts, m.moe_inter
    ts.append(TensorSpec(p + "ffn.gate.weight", (E, D), "bf16", cls or "router"))
    if l.hash_routed:
        ts.append(TensorSpec(p + "ffn.gate.tid2eid", (m.vocab, l.topk), "i64", cls or "router"))
    else:
        n_bias = 2 if m.family == "v41" else 1           # V4.1 adds bias_vl for image tokens
        ts.append(TensorSpec(p + "ffn.gate.bias", (E,), "fp32", cls or "router", count=n_bias))
    # routed experts: w1, w3 [I, D] and w2 [D, I], FP4 (split whole by EP)
    ts.append(TensorSpec(p + "ffn.experts.*.w1|w3", (I, D), "fp4", e, expert=True, count=2 * E))
    ts.append(TensorSpec(p + "ffn.experts.*.w2", (D, I), "fp4", e, expert=True, count=E))
    for _ in range(m.n_shared):
        ts.append(TensorSpec(p + "ffn.shared_experts.w1|w3", (I, D), "fp8", cls or "shared_expert", tp_dim=0, count=2))
        ts.append(TensorSpec(p + "ffn.shared_experts.w2", (D, I), "fp8", cls or "shared_expert", tp_dim=1))
    if l.engram:
        ts += _engram_tensors(m, l.index)
    if l.is_draft:
        ts += _draft_extra_tensors(m, l)
    return ts


def _compressor_indexer_tensors(m: ModelShape, l: LayerShape, p: str, a: str, n: str) -> list[TensorSpec]:
    D, hd, ihd = m.hidden, m.head_dim, m.index_head_dim
    ts: list[TensorSpec] = []
    if m.family == "v4":
        if l.ratio > 0 and not l.is_draft:
            coff = 2 if l.overlap else 1                      # overlap doubles the channel width
            ts += [TensorSpec(p + "attn.compressor.wkv|wgate", (coff * hd, D), "bf16", a, count=2),
                   TensorSpec(p + "attn.compressor.ape", (l.ratio, coff * hd), "fp32", a),
                   TensorSpec(p + "attn.compressor.norm", (hd,), "bf16", n)]
        if l.index_keys:
            ts += [TensorSpec(p + "attn.indexer.wq_b", (m.index_heads * ihd, m.q_lora), "fp8", a, tp_dim=0),
                   TensorSpec(p + "attn.indexer.weights_proj", (m.index_heads, D), "bf16", a, tp_dim=0),
                   TensorSpec(p + "attn.indexer.compressor.wkv|wgate", (2 * ihd, D), "bf16", a, count=2),
                   TensorSpec(p + "attn.indexer.compressor.ape", (l.ratio, 2 * ihd), "fp32", a),
                   TensorSpec(p + "attn.indexer.compressor.norm", (ihd,), "bf16", n)]
        return ts
    if l.owns_compressor:            # V4.1: no ape, no overlap; ratio 1 has no gate (s3.6)
        ts.append(TensorSpec(p + "attn.compressor.wkv", (hd, D), "bf16", a))
        if l.ratio > 1:
            ts.append(TensorSpec(p + "attn.compressor.wgate", (hd, D), "bf16", a))
        ts.append(TensorSpec(p + "attn.compressor.norm", (hd,), "bf16", n))
        ts += [TensorSpec(p + "attn.indexer.wk", (ihd, hd), "bf16", a),
               TensorSpec(p + "attn.indexer.k_norm", (ihd,), "bf16", n)]
    if l.index_scores:
        ts += [TensorSpec(p + "attn.indexer.wq_b", (m.index_heads * ihd, m.q_lora), "fp8", a, tp_dim=0),
               TensorSpec(p + "attn.indexer.weights_proj", (m.index_heads, D), "bf16", a, tp_dim=0)]
    return ts


def _engram_tensors(m: ModelShape, layer: int) -> list[TensorSpec]:
    rows = m.engram_rows[sorted(l.index for l in m.layers if l.engram).index(layer)]
    width = m.engram_ngram_sizes * m.engram_heads * m.engram_head_dim       # 3*8*256 = 6144
    p = f"layers.{layer}.engram."
    return [TensorSpec(p + "embed", (rows, m.engram_head_dim), "engram", "engram_table"),
            TensorSpec(p + "wkv", (m.hidden * (m.hc_mult + 1), width), "fp8", "engram_proj"),
            TensorSpec(p + "q_weight|k_weight", (m.hc_mult, m.hidden), "fp32", "engram_proj", count=2)]


def _draft_extra_tensors(m: ModelShape, l: LayerShape) -> list[TensorSpec]:
    D, p = m.hidden, f"mtp.{l.index}."
    if m.draft_kind == "mtp":         # V4 MTPBlock: e_proj, h_proj, 3 norms, own hc_head (s3.10)
        return [TensorSpec(p + "e_proj|h_proj", (D, D), "fp8", "draft", count=2),
                TensorSpec(p + "enorm|hnorm|norm", (D,), "bf16", "draft", count=3),
                TensorSpec(p + "hc_head_fn", (m.hc_mult, m.hc_mult * D), "fp32", "draft"),
                TensorSpec(p + "hc_head_base", (m.hc_mult,), "fp32", "draft"),
                TensorSpec(p + "hc_head_scale", (1,), "fp32", "draft")]
    first = l.index == m.n_layers
    last = l.index == len(m.layers) - 1
    ts: list[TensorSpec] = []
    if first:       # stage 0: main_proj over the 3 target layers' averaged streams
        ts += [TensorSpec(p + "main_proj", (D, 3 * D), "fp8", "draft"),
               TensorSpec(p + "main_norm", (D,), "bf16", "draft")]
    if last:        # final stage: norm, Markov head, confidence head
        r = m.dspark_markov_rank
        ts += [TensorSpec(p + "norm", (D,), "bf16", "draft"),
               TensorSpec(p + "markov_head.embed|head", (m.vocab, r), "bf16", "draft", count=2),
               TensorSpec(p + "confidence_head.proj", (1, D + r), "bf16", "draft")]
    return ts


def global_tensors(m: ModelShape) -> list[TensorSpec]:
    D = m.hidden
    ts = [TensorSpec("embed.weight", (m.vocab, D), "bf16", "embeddings", tp_dim=0),
          TensorSpec("head.weight", (m.vocab, D), "bf16", "head", tp_dim=0),
          TensorSpec("norm.weight", (D,), "bf16", "norms_mhc")]
    if m.family == "v4":              # V4.1 has no hc_head (single-pass mHC)
        ts += [TensorSpec("hc_head_fn", (m.hc_mult, m.hc_mult * D), "fp32", "norms_mhc"),
               TensorSpec("hc_head_base", (m.hc_mult,), "fp32", "norms_mhc"),
               TensorSpec("hc_head_scale", (1,), "fp32", "norms_mhc")]
    ts += _vision_tensors(m)
    return ts


def _vision_tensors(m: ModelShape) -> list[TensorSpec]:
    """Rough ViT inventory (estimate): per layer qkv+o (4 d^2) and a SwiGLU MLP (3 d f), BF16,
    plus an aligner from downsample^2 * d to D.  Exact tensors were not retrieved (model_spec s4.4)."""
    v = m.vision
    if not v:
        return []
    d, f, L = int(v["hidden_size"]), int(v["intermediate_size"]), int(v["num_hidden_layers"])
    ds = int(v.get("downsample_ratio", 1))
    return [TensorSpec("vision.blocks (estimate)", (L, 4 * d * d + 3 * d * f), "bf16", "vision"),
            TensorSpec("aligner (estimate)", (ds * ds * d, m.hidden), "bf16", "vision")]
