"""The DeepSeek-V4.1 model configuration, parsed from the released HF ``config.json`` (nested ``text_config``).

Knows: every key of the released V4.1-Flash config (model_spec.md §2.4) and what CSA2, Engram and DSpark
need from it; which layer plays which CSA2 role. Does not know: tensors, devices or runtime sizing.

The attribute names shared with :class:`~v4stack.config.model_config.ModelConfig` (``hidden_size``,
``rms_norm_eps``, ``hc_mult``, ``quant`` ...) mean the same thing, so the V4 building blocks (linear, norm,
MoE experts, mHC maths) take either config. Unknown keys, missing keys and inconsistent values raise
:class:`ConfigError` naming the key. The vision tower (``vision_config``) is not run: it is kept in ``extra``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Mapping

from v4stack.config.model_config import ConfigError, QuantConfig, RopeScaling, _check, _parse_quant, _parse_rope, _typed

ARCHITECTURE = "DeepseekV41ForCausalLM"
COMPRESS_RATIOS = (0, 1, 2)  # window-only, per-token latent (decoder half), pairs (encoder half)
# Roles of a backbone layer in CSA2 (model_spec.md §3.6)
SWA, FULL, REUSE, REINDEX = "swa", "full", "reuse", "reindex"
TOP_LEVEL_IGNORED = frozenset({"architectures", "model_type", "torch_dtype", "dtype", "transformers_version",
                               "image_token_id", "vision_config", "auto_map"})
TEXT_IGNORED = frozenset({"model_type", "hidden_act", "topk_method", "num_key_value_heads", "torch_dtype",
                          "initializer_range", "attention_bias", "attention_dropout", "use_cache", "pad_token_id"})


@dataclass(frozen=True)
class EngramConfig:
    """N-gram hash memory (model_spec.md §3.9): tables before ``layer_ids``, one row per hash id."""

    layer_ids: tuple[int, ...]
    num_embeddings: tuple[int, ...]  # table rows per engram layer (= sum of that layer's primes)
    max_ngram_size: int  # N: n-grams of sizes 2..N
    vocab_size: int  # prime search starts above vocab_size - 1
    n_heads: int  # hash heads per n-gram size
    head_dim: int  # row width (FP8 values)
    pad_token_id: int
    compressed_vocab_size: int

    @property
    def ngram_sizes(self) -> int:
        return self.max_ngram_size - 1

    @property
    def ids_per_token(self) -> int:
        """Hash ids (table rows) per token and layer: n-gram sizes x heads (24 in V4.1-Flash)."""
        return self.ngram_sizes * self.n_heads


@dataclass(frozen=True)
class DSparkHeadConfig:
    """The 3-stage block drafter of V4.1 (model_spec.md §3.10)."""

    num_stages: int
    block_size: int
    noise_token_id: int
    target_layer_ids: tuple[int, ...]
    markov_rank: int
    n_routed_experts: int
    num_experts_per_tok: int


@dataclass(frozen=True)
class V41Config:
    """DeepSeek-V4.1 hyper-parameters (HF ``text_config`` key names)."""

    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    head_dim: int
    qk_rope_head_dim: int
    q_lora_rank: int
    o_groups: int
    o_lora_rank: int
    sliding_window: int
    n_routed_experts: int
    num_experts_per_tok: int
    moe_intermediate_size: int
    routed_scaling_factor: float
    compress_ratios: tuple[int, ...]
    kv_source_layer_ids: tuple[int, ...]
    index_source_layer_ids: tuple[int, ...]
    index_n_heads: int
    index_head_dim: int
    index_topk: int
    candidate_source_layer_id: int | None
    candidate_topk_blocks: int
    candidate_block_size: int
    rope_scaling: RopeScaling
    quant: QuantConfig
    engram: EngramConfig | None
    dspark: DSparkHeadConfig | None
    n_shared_experts: int = 1
    scoring_func: str = "sqrtsoftplus"
    norm_topk_prob: bool = True
    swiglu_limit: float = 10.0
    hc_mult: int = 4
    hc_sinkhorn_iters: int = 20
    hc_eps: float = 1e-6
    rms_norm_eps: float = 1e-20
    rope_theta: float = 10000.0
    compress_rope_theta: float = 160000.0
    max_position_embeddings: int = 1 << 20
    bos_token_id: int = 0
    eos_token_id: int = 1
    tie_word_embeddings: bool = False
    num_hash_layers: int = 0  # V4.1 has no hash-routed layers (shared MoE code reads this)
    extra: Mapping[str, Any] = field(default_factory=dict, compare=False)

    family = "v41"

    def __post_init__(self) -> None:
        n = self.num_hidden_layers
        n_draft = 0 if self.dspark is None else self.dspark.num_stages
        _check(len(self.compress_ratios) == n + n_draft, "compress_ratios",
               f"has {len(self.compress_ratios)} entries, expected num_hidden_layers + num_nextn_predict_layers "
               f"= {n + n_draft}")
        for i, r in enumerate(self.compress_ratios):
            _check(r in COMPRESS_RATIOS, "compress_ratios", f"entry {i} is {r}, expected one of {COMPRESS_RATIOS}")
            _check(i < n or r == 0, "compress_ratios", f"DSpark entry {i} must be 0 (window-only)")
        for key in ("kv_source_layer_ids", "index_source_layer_ids"):
            ids = getattr(self, key)
            _check(list(ids) == sorted(set(ids)), key, f"{list(ids)} must be strictly increasing")
            for i in ids:
                _check(0 <= i < n and self.compress_ratios[i] > 0, key,
                       f"layer {i} must be a backbone layer with compress ratio > 0")
        for i in range(n):
            r = self.compress_ratios[i]
            if r == 0:
                continue
            src = self.kv_source(i)
            _check(src is not None, "kv_source_layer_ids", f"layer {i} (ratio {r}) has no kv source of ratio {r} "
                   f"at or before it")
            _check(self.index_source(i) is not None, "index_source_layer_ids",
                   f"layer {i} (ratio {r}) has no index source at or before it")
        c = self.candidate_source_layer_id
        if c is not None:
            _check(c in self.kv_source_layer_ids and c in self.index_source_layer_ids, "candidate_source_layer_id",
                   f"layer {c} must be both a kv source and an index source")
            _check(self.candidate_topk_blocks > 0 and self.candidate_block_size > 0, "candidate_topk_blocks",
                   "candidate_topk_blocks and candidate_block_size must be positive")
        _check(self.num_attention_heads % self.o_groups == 0, "o_groups",
               f"{self.o_groups} does not divide num_attention_heads={self.num_attention_heads}")
        _check(0 < self.qk_rope_head_dim < min(self.head_dim, self.index_head_dim) and self.qk_rope_head_dim % 2 == 0,
               "qk_rope_head_dim", f"{self.qk_rope_head_dim} must be even and below head_dim and index_head_dim")
        _check(0 < self.num_experts_per_tok <= self.n_routed_experts, "num_experts_per_tok",
               f"{self.num_experts_per_tok} must be in 1..n_routed_experts={self.n_routed_experts}")
        _check(self.n_shared_experts == 1, "n_shared_experts", f"{self.n_shared_experts} (the reference has exactly 1)")
        _check(self.scoring_func in ("sqrtsoftplus", "sigmoid", "softmax"), "scoring_func", repr(self.scoring_func))
        _check(not self.tie_word_embeddings, "tie_word_embeddings", "must be false for DeepSeek-V4.1")
        block = self.quant.weight_block_size[0]
        for name in ("hidden_size", "moe_intermediate_size", "head_dim", "q_lora_rank", "index_head_dim"):
            _check(getattr(self, name) > 0 and getattr(self, name) % block == 0, name,
                   f"{getattr(self, name)} must be a positive multiple of the {block}-wide quantisation block")
        if self.engram is not None:
            e = self.engram
            _check(len(e.layer_ids) == len(e.num_embeddings), "engram_num_embeddings",
                   f"{len(e.num_embeddings)} entries for {len(e.layer_ids)} engram layers")
            for i in e.layer_ids:
                _check(0 <= i < n, "engram_layer_ids", f"layer {i} is not a backbone layer")
            _check(e.max_ngram_size >= 2 and e.n_heads > 0 and e.head_dim % block == 0, "engram_max_ngram_size",
                   "needs max_ngram_size >= 2, n_heads > 0 and head_dim a multiple of the scale block")
            _check(e.pad_token_id >= 0 and e.compressed_vocab_size > 0, "engram_pad_token_id",
                   f"pad id {e.pad_token_id} and compressed vocab {e.compressed_vocab_size} must be non-negative")
        if self.dspark is not None:
            d = self.dspark
            for t in d.target_layer_ids:
                _check(0 <= t < n, "dspark_target_layer_ids", f"layer {t} is not a backbone layer")
            _check(d.block_size >= 2 and 0 <= d.noise_token_id < self.vocab_size, "dspark_block_size",
                   f"block {d.block_size} must be >= 2 and noise id {d.noise_token_id} inside the vocab")
            _check(0 < d.num_experts_per_tok <= d.n_routed_experts, "dspark_num_experts_per_tok",
                   f"{d.num_experts_per_tok} must be in 1..dspark_n_routed_experts={d.n_routed_experts}")

    # ---- CSA2 roles -----------------------------------------------------------------------------
    def compress_ratio(self, layer_id: int) -> int:
        return self.compress_ratios[layer_id]

    def is_hash_layer(self, layer_id: int) -> bool:
        return False

    def kv_source(self, layer_id: int) -> int | None:
        """The layer whose compressed KV ``layer_id`` attends to: the latest kv source of the same ratio at or
        before it (None for window-only layers)."""
        r = self.compress_ratios[layer_id]
        found = [s for s in self.kv_source_layer_ids if s <= layer_id and self.compress_ratios[s] == r]
        return found[-1] if r and found else None

    def index_source(self, layer_id: int) -> int | None:
        """The layer whose top-k selection ``layer_id`` uses: the latest index source of the same ratio."""
        r = self.compress_ratios[layer_id]
        found = [s for s in self.index_source_layer_ids if s <= layer_id and self.compress_ratios[s] == r]
        return found[-1] if r and found else None

    def role(self, layer_id: int) -> str:
        """swa | full (owns compressor + index keys) | reindex (own scores over a source's keys) | reuse."""
        if layer_id >= self.num_hidden_layers or self.compress_ratios[layer_id] == 0:
            return SWA
        if layer_id in self.kv_source_layer_ids:
            return FULL
        return REINDEX if layer_id in self.index_source_layer_ids else REUSE

    def uses_candidates(self, layer_id: int) -> bool:
        """Reindex layers of the candidate source's ratio score only inside its candidate blocks."""
        c = self.candidate_source_layer_id
        return (c is not None and self.role(layer_id) == REINDEX and layer_id > c
                and self.compress_ratios[layer_id] == self.compress_ratios[c])

    @property
    def weight_block(self) -> int:
        return self.quant.weight_block_size[0]

    @property
    def num_draft_layers(self) -> int:
        return 0 if self.dspark is None else self.dspark.num_stages

    def draft_view(self) -> "V41Config":
        """This config as seen by a DSpark stage's MoE (its own expert count and top-k)."""
        d = self.dspark
        return replace(self, n_routed_experts=d.n_routed_experts, num_experts_per_tok=d.num_experts_per_tok)

    def with_overrides(self, **values: Any) -> "V41Config":
        """A copy with some fields replaced (e.g. the golden all-top-k override: index_topk, candidate_topk_blocks)."""
        unknown = sorted(set(values) - set(self.__dataclass_fields__))
        _check(not unknown, unknown[0] if unknown else "", "unknown override key")
        return replace(self, **values)

    # ---- parsing --------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> "V41Config":
        return _parse(dict(raw))


_REQUIRED_INT = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "head_dim",
                 "qk_rope_head_dim", "q_lora_rank", "o_groups", "o_lora_rank", "sliding_window", "n_routed_experts",
                 "num_experts_per_tok", "moe_intermediate_size", "index_n_heads", "index_head_dim", "index_topk")
_OPTIONAL = {"n_shared_experts": int, "scoring_func": str, "norm_topk_prob": bool, "swiglu_limit": float,
             "hc_mult": int, "hc_sinkhorn_iters": int, "hc_eps": float, "rms_norm_eps": float, "rope_theta": float,
             "compress_rope_theta": float, "max_position_embeddings": int, "bos_token_id": int, "eos_token_id": int,
             "tie_word_embeddings": bool, "candidate_topk_blocks": int, "candidate_block_size": int}
_ENGRAM_KEYS = {"engram_layer_ids": "layer_ids", "engram_num_embeddings": "num_embeddings",
                "engram_max_ngram_size": "max_ngram_size", "engram_vocab_size": "vocab_size",
                "engram_n_heads": "n_heads", "engram_head_dim": "head_dim", "engram_pad_token_id": "pad_token_id",
                "engram_compressed_vocab_size": "compressed_vocab_size"}
_DSPARK_KEYS = {"dspark_block_size": "block_size", "dspark_noise_token_id": "noise_token_id",
                "dspark_target_layer_ids": "target_layer_ids", "dspark_markov_rank": "markov_rank",
                "dspark_n_routed_experts": "n_routed_experts", "dspark_num_experts_per_tok": "num_experts_per_tok"}


def _int_list(raw: dict, key: str) -> tuple[int, ...]:
    value = raw.pop(key)
    _check(isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value), key,
           f"expected a list of ints, found {value!r}")
    return tuple(value)


def _group(raw: dict, keys: dict[str, str], what: str) -> dict[str, Any] | None:
    present = [k for k in keys if k in raw]
    if not present:
        return None
    for k in keys:
        _check(k in raw, k, f"missing (all {what} keys must be given together)")
    out = {}
    for k, name in keys.items():
        out[name] = _int_list(raw, k) if isinstance(raw[k], list) else _typed(raw, k, int)
    return out


def _parse(top: dict) -> V41Config:
    archs = top.get("architectures") or []
    _check(ARCHITECTURE in archs or top.get("model_type") == "deepseek_v41", "architectures",
           f"{archs} is not a DeepSeek-V4.1 architecture (expected {ARCHITECTURE})")
    _check(isinstance(top.get("text_config"), dict), "text_config", "missing (V4.1 configs nest the text model)")
    raw = dict(top.pop("text_config"))
    qc = top.pop("quantization_config", None)
    quant = _parse_quant(qc, qc.get("expert_dtype") if isinstance(qc, dict) else None)
    extra = {k: top.pop(k) for k in list(top) if k in TOP_LEVEL_IGNORED}
    if top:
        raise ConfigError(f"config field '{sorted(top)[0]}': unknown top-level key of a DeepSeek-V4.1 config")
    _check(raw.get("num_key_value_heads", 1) == 1, "text_config.num_key_value_heads", "V4.1 has one shared KV head")
    _check(raw.get("hidden_act", "silu") == "silu", "text_config.hidden_act", f"{raw.get('hidden_act')!r}")
    _check(raw.get("topk_method", "noaux_tc") == "noaux_tc", "text_config.topk_method", f"{raw.get('topk_method')!r}")
    kwargs: dict[str, Any] = {"quant": quant}
    for key in _REQUIRED_INT:
        _check(key in raw, key, "missing")
        kwargs[key] = _typed(raw, key, int)
    _check("routed_scaling_factor" in raw, "routed_scaling_factor", "missing")
    kwargs["routed_scaling_factor"] = _typed(raw, "routed_scaling_factor", float)
    for key, kind in _OPTIONAL.items():
        if key in raw:
            kwargs[key] = _typed(raw, key, kind)
    for key in ("compress_ratios", "kv_source_layer_ids", "index_source_layer_ids"):
        _check(key in raw, key, "missing")
        kwargs[key] = _int_list(raw, key)
    cand = raw.pop("candidate_source_layer_id", None)
    _check(cand is None or (isinstance(cand, int) and not isinstance(cand, bool)), "candidate_source_layer_id",
           f"expected an int or null, found {cand!r}")
    kwargs["candidate_source_layer_id"] = cand
    kwargs.setdefault("candidate_topk_blocks", 0)
    kwargs.setdefault("candidate_block_size", 1)
    kwargs["rope_scaling"] = _parse_rope(raw.pop("rope_scaling", None))
    engram = _group(raw, _ENGRAM_KEYS, "engram_*")
    kwargs["engram"] = None if engram is None else EngramConfig(**engram)
    n_stages = _typed(raw, "num_nextn_predict_layers", int) if "num_nextn_predict_layers" in raw else 0
    dspark = _group(raw, _DSPARK_KEYS, "dspark_*")
    _check(dspark is not None or n_stages == 0, "num_nextn_predict_layers",
           f"{n_stages} draft layers but no dspark_* keys (V4.1 drafts with DSpark)")
    kwargs["dspark"] = None if dspark is None else DSparkHeadConfig(num_stages=n_stages, **dspark)
    text_extra = {k: raw.pop(k) for k in list(raw) if k in TEXT_IGNORED}
    if raw:
        raise ConfigError(f"config field 'text_config.{sorted(raw)[0]}': unknown key (not part of the DeepSeek-V4.1 "
                          f"config); all unknown keys: {sorted(raw)}")
    return V41Config(extra={**extra, **text_extra}, **kwargs)
