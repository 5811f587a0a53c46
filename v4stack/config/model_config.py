"""The DeepSeek-V4 model configuration, parsed from an official HF ``config.json``.

Knows: every key of the released V4-Flash / V4-Pro / V4-Flash-0731 configs (model_spec.md §2) and how
they map to the reference ``ModelArgs``. Does not know: tensors, devices or runtime sizing.

Unknown keys, missing required keys and inconsistent values raise :class:`ConfigError` naming the key.
Architectures that are recognised but not implemented yet (``DeepseekV41ForCausalLM``) are refused
with a message that says so.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

SUPPORTED_ARCHITECTURES = ("DeepseekV4ForCausalLM",)
# Recognised family members that this parser does not read, with the reason shown to the user.
NOT_YET_SUPPORTED = {
    "DeepseekV41ForCausalLM": "a DeepSeek-V4.1 config: read it with v4stack.config.load_config (V41Config)",
}
COMPRESS_RATIOS = (0, 4, 128)  # window-only, CSA (overlapping, with indexer), HCA
# Keys of released configs that carry no information for inference (HF bookkeeping).
IGNORED_KEYS = frozenset({
    "architectures", "model_type", "torch_dtype", "dtype", "transformers_version", "initializer_range",
    "use_cache", "attention_dropout", "auto_map", "pad_token_id", "hidden_act", "topk_method",
    "norm_topk_prob", "num_key_value_heads", "attention_bias",
})


class ConfigError(ValueError):
    """A config.json that v4stack cannot run; the message names the offending key."""


@dataclass(frozen=True)
class RopeScaling:
    """YaRN parameters used by compressed (ratio > 0) layers; ratio-0 layers use plain RoPE."""

    factor: float
    original_max_position_embeddings: int
    beta_fast: float
    beta_slow: float


@dataclass(frozen=True)
class QuantConfig:
    """Block-FP8 weight format (``quantization_config``) and the FP4 expert flag (``expert_dtype``)."""

    weight_block_size: tuple[int, int] = (128, 128)
    fmt: str = "e4m3"
    scale_fmt: str = "ue8m0"
    activation_scheme: str = "dynamic"
    expert_dtype: str | None = "fp4"  # "fp4": routed experts are FP4 e2m1; None: same format as the rest


@dataclass(frozen=True)
class DSparkConfig:
    """Keys of the DSpark draft head (V4-Flash-0731). Parsed and validated; not executed yet."""

    block_size: int
    noise_token_id: int
    target_layer_ids: tuple[int, ...]
    markov_rank: int


@dataclass(frozen=True)
class ModelConfig:
    """DeepSeek-V4 hyper-parameters (HF key names; reference names in comments)."""

    vocab_size: int
    hidden_size: int  # dim
    num_hidden_layers: int  # n_layers
    num_attention_heads: int  # n_heads
    head_dim: int  # 512 in released models; K = V latent width
    qk_rope_head_dim: int  # rope_head_dim: RoPE on the last dims of each head
    q_lora_rank: int
    o_groups: int
    o_lora_rank: int
    sliding_window: int  # window_size
    index_n_heads: int
    index_head_dim: int
    index_topk: int
    n_routed_experts: int
    num_experts_per_tok: int  # n_activated_experts
    moe_intermediate_size: int  # moe_inter_dim
    routed_scaling_factor: float  # route_scale
    num_hash_layers: int  # n_hash_layers: layers < this route by token id (tid2eid)
    compress_ratios: tuple[int, ...]  # one per layer, then one per MTP layer
    rope_scaling: RopeScaling
    quant: QuantConfig
    num_nextn_predict_layers: int = 1  # n_mtp_layers
    n_shared_experts: int = 1
    scoring_func: str = "sqrtsoftplus"  # score_func
    swiglu_limit: float = 10.0
    hc_mult: int = 4
    hc_sinkhorn_iters: int = 20
    hc_eps: float = 1e-6
    rms_norm_eps: float = 1e-6  # norm_eps
    rope_theta: float = 10000.0
    compress_rope_theta: float = 160000.0
    max_position_embeddings: int = 1 << 20
    bos_token_id: int = 0
    eos_token_id: int = 1
    tie_word_embeddings: bool = False
    dspark: DSparkConfig | None = None
    extra: Mapping[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        self._check_ranges()
        _check(len(self.compress_ratios) == self.num_hidden_layers + self.num_nextn_predict_layers,
               "compress_ratios", f"has {len(self.compress_ratios)} entries, expected num_hidden_layers + "
               f"num_nextn_predict_layers = {self.num_hidden_layers + self.num_nextn_predict_layers}")
        for i, r in enumerate(self.compress_ratios):
            _check(r in COMPRESS_RATIOS, "compress_ratios", f"entry {i} is {r}, expected one of {COMPRESS_RATIOS}")
        for i in range(self.num_hidden_layers, len(self.compress_ratios)):
            _check(self.compress_ratios[i] == 0, "compress_ratios", f"MTP entry {i} must be 0 (window-only)")
        _check(self.num_attention_heads % self.o_groups == 0, "o_groups",
               f"{self.o_groups} does not divide num_attention_heads={self.num_attention_heads}")
        _check(0 < self.qk_rope_head_dim < self.head_dim and self.qk_rope_head_dim % 2 == 0, "qk_rope_head_dim",
               f"{self.qk_rope_head_dim} must be even and smaller than head_dim={self.head_dim}")
        _check(self.qk_rope_head_dim < self.index_head_dim, "index_head_dim",
               f"{self.index_head_dim} must exceed qk_rope_head_dim={self.qk_rope_head_dim}")
        _check(self.index_head_dim & (self.index_head_dim - 1) == 0, "index_head_dim",
               f"{self.index_head_dim} must be a power of two (Hadamard rotation)")
        _check(0 < self.num_experts_per_tok <= self.n_routed_experts, "num_experts_per_tok",
               f"{self.num_experts_per_tok} must be in 1..n_routed_experts={self.n_routed_experts}")
        _check(self.n_shared_experts == 1, "n_shared_experts", f"{self.n_shared_experts} (the V4 reference has exactly 1)")
        _check(self.scoring_func in ("sqrtsoftplus", "sigmoid", "softmax"), "scoring_func", repr(self.scoring_func))
        _check(0 <= self.num_hash_layers <= self.num_hidden_layers, "num_hash_layers", str(self.num_hash_layers))
        _check(not self.tie_word_embeddings, "tie_word_embeddings", "must be false for DeepSeek-V4")
        _check(self.sliding_window > 0 and self.index_topk > 0 and self.hc_mult > 0 and self.hc_sinkhorn_iters > 0,
               "sliding_window/index_topk/hc_mult/hc_sinkhorn_iters", "must be positive")
        for name in ("hidden_size", "q_lora_rank", "moe_intermediate_size", "head_dim", "o_lora_rank"):
            _check(getattr(self, name) > 0, name, "must be positive")
        _check(self.moe_intermediate_size % 32 == 0 and self.hidden_size % 32 == 0, "moe_intermediate_size",
               "hidden_size and moe_intermediate_size must be multiples of 32 (FP4 1x32 scale blocks)")

    def _check_ranges(self) -> None:
        """Every number finite and in range (a hand-written config.json may hold 0, -1, NaN or Infinity,
        which JSON parsers accept); runs first so later checks never divide by zero."""
        for name in _POSITIVE_INT:
            _check(getattr(self, name) > 0, name, f"{getattr(self, name)} must be a positive integer")
        for name in _NON_NEGATIVE_INT:
            _check(getattr(self, name) >= 0, name, f"{getattr(self, name)} must be >= 0")
        for name in ("bos_token_id", "eos_token_id"):
            _check(getattr(self, name) < self.vocab_size, name,
                   f"{getattr(self, name)} must be below vocab_size={self.vocab_size}")
        for name in _POSITIVE_FLOAT:
            _check_positive_float(name, getattr(self, name))
        rs = self.rope_scaling
        for name in ("factor", "beta_fast", "beta_slow"):
            _check_positive_float(f"rope_scaling.{name}", getattr(rs, name))
        _check(rs.original_max_position_embeddings > 0, "rope_scaling.original_max_position_embeddings",
               f"{rs.original_max_position_embeddings} must be a positive integer")

    # ---- derived values -------------------------------------------------------------------------
    @property
    def num_mtp_layers(self) -> int:
        return self.num_nextn_predict_layers if self.dspark is None else 0

    @property
    def nope_head_dim(self) -> int:
        return self.head_dim - self.qk_rope_head_dim

    @property
    def weight_block(self) -> int:
        return self.quant.weight_block_size[0]

    def compress_ratio(self, layer_id: int) -> int:
        """Compression ratio of backbone layer ``layer_id`` (MTP layer k has id num_hidden_layers + k)."""
        return self.compress_ratios[layer_id]

    def is_hash_layer(self, layer_id: int) -> bool:
        return layer_id < self.num_hash_layers

    # ---- parsing --------------------------------------------------------------------------------
    @classmethod
    def from_file(cls, path: str | Path) -> "ModelConfig":
        path = Path(path)
        if path.is_dir():
            path = path / "config.json"
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (FileNotFoundError, NotADirectoryError) as exc:
            raise ConfigError(f"{path}: no config.json") from exc
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: not valid JSON ({exc})") from exc
        except OSError as exc:
            raise ConfigError(f"{path}: cannot be read ({exc.strerror or exc})") from exc
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: expected a JSON object, found {type(raw).__name__}")
        try:
            return cls.from_dict(raw)
        except ConfigError as exc:   # name the file the bad field is in
            raise ConfigError(f"{path}: {exc}") from None

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> "ModelConfig":
        return _parse(dict(raw))

    def to_dict(self) -> dict[str, Any]:
        """The HF ``config.json`` form (what :meth:`from_dict` reads)."""
        out: dict[str, Any] = {"architectures": ["DeepseekV4ForCausalLM"], "model_type": "deepseek_v4"}
        for name in _SCALAR_KEYS:
            out[name] = getattr(self, name)
        out["compress_ratios"] = list(self.compress_ratios)
        rs = self.rope_scaling
        out["rope_scaling"] = {"type": "yarn", "factor": rs.factor, "beta_fast": rs.beta_fast,
                               "beta_slow": rs.beta_slow,
                               "original_max_position_embeddings": rs.original_max_position_embeddings}
        q = self.quant
        out["quantization_config"] = {"quant_method": "fp8", "fmt": q.fmt, "scale_fmt": q.scale_fmt,
                                      "activation_scheme": q.activation_scheme,
                                      "weight_block_size": list(q.weight_block_size)}
        out["expert_dtype"] = q.expert_dtype
        out["num_key_value_heads"] = 1
        out["hidden_act"] = "silu"
        out["topk_method"] = "noaux_tc"
        out["norm_topk_prob"] = True
        if self.dspark is not None:
            d = self.dspark
            out.update(dspark_block_size=d.block_size, dspark_noise_token_id=d.noise_token_id,
                       dspark_target_layer_ids=list(d.target_layer_ids), dspark_markov_rank=d.markov_rank)
        return out


_REQUIRED_INT = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "head_dim",
                 "qk_rope_head_dim", "q_lora_rank", "o_groups", "o_lora_rank", "sliding_window", "index_n_heads",
                 "index_head_dim", "index_topk", "n_routed_experts", "num_experts_per_tok", "moe_intermediate_size",
                 "num_hash_layers")
_OPTIONAL = {"num_nextn_predict_layers": int, "n_shared_experts": int, "scoring_func": str, "swiglu_limit": float,
             "hc_mult": int, "hc_sinkhorn_iters": int, "hc_eps": float, "rms_norm_eps": float, "rope_theta": float,
             "compress_rope_theta": float, "max_position_embeddings": int, "bos_token_id": int, "eos_token_id": int,
             "tie_word_embeddings": bool, "routed_scaling_factor": float}
_SCALAR_KEYS = _REQUIRED_INT + tuple(_OPTIONAL)
_POSITIVE_INT = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "head_dim",
                 "q_lora_rank", "o_groups", "o_lora_rank", "index_n_heads", "n_routed_experts",
                 "max_position_embeddings")
_NON_NEGATIVE_INT = ("num_nextn_predict_layers", "bos_token_id", "eos_token_id")
_POSITIVE_FLOAT = ("routed_scaling_factor", "swiglu_limit", "hc_eps", "rms_norm_eps", "rope_theta",
                   "compress_rope_theta")
_DSPARK_KEYS = ("dspark_block_size", "dspark_noise_token_id", "dspark_target_layer_ids", "dspark_markov_rank")


def _check(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"config field '{key}': {message}")


def _check_positive_float(key: str, value: float) -> None:
    _check(isinstance(value, (int, float)) and math.isfinite(value) and value > 0, key,
           f"{value!r} must be a finite number > 0")


def _typed(raw: dict, key: str, kind: type) -> Any:
    value = raw.pop(key)
    if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if kind is int and isinstance(value, float) and value.is_integer():
        return int(value)
    _check(isinstance(value, kind) and not (kind is int and isinstance(value, bool)), key,
           f"expected {kind.__name__}, found {value!r}")
    return value


def _parse(raw: dict) -> ModelConfig:
    archs = raw.get("architectures") or []
    for arch in archs:
        if arch in NOT_YET_SUPPORTED:
            raise ConfigError(f"config field 'architectures': {arch} is recognised but not supported yet: "
                              f"{NOT_YET_SUPPORTED[arch]}")
    _check(not archs or any(a in SUPPORTED_ARCHITECTURES for a in archs), "architectures",
           f"{archs} is not a DeepSeek-V4 architecture (supported: {list(SUPPORTED_ARCHITECTURES)})")
    if "text_config" in raw:
        raise ConfigError("config field 'text_config': nested multimodal configs (DeepSeek-V4.1) are not supported yet")
    _check(raw.get("num_key_value_heads", 1) == 1, "num_key_value_heads", "DeepSeek-V4 has one shared KV head")
    _check(not raw.get("attention_bias", False), "attention_bias", "DeepSeek-V4 has no attention bias")
    _check(raw.get("hidden_act", "silu") == "silu", "hidden_act", f"{raw.get('hidden_act')!r}, expected 'silu'")
    _check(raw.get("topk_method", "noaux_tc") == "noaux_tc", "topk_method", f"{raw.get('topk_method')!r}")

    kwargs: dict[str, Any] = {}
    for key in _REQUIRED_INT:
        _check(key in raw, key, "missing")
        kwargs[key] = _typed(raw, key, int)
    _check("routed_scaling_factor" in raw, "routed_scaling_factor", "missing")
    for key, kind in _OPTIONAL.items():
        if key in raw:
            kwargs[key] = _typed(raw, key, kind)
    _check("compress_ratios" in raw, "compress_ratios", "missing")
    ratios = raw.pop("compress_ratios")
    _check(isinstance(ratios, list) and all(isinstance(r, int) for r in ratios), "compress_ratios",
           f"expected a list of ints, found {ratios!r}")
    kwargs["compress_ratios"] = tuple(ratios)
    kwargs["rope_scaling"] = _parse_rope(raw.pop("rope_scaling", None))
    kwargs["quant"] = _parse_quant(raw.pop("quantization_config", None), raw.pop("expert_dtype", None))
    if any(k in raw for k in _DSPARK_KEYS):
        for k in _DSPARK_KEYS:
            _check(k in raw, k, "missing (all dspark_* keys must be given together)")
        kwargs["dspark"] = DSparkConfig(block_size=_typed(raw, "dspark_block_size", int),
                                        noise_token_id=_typed(raw, "dspark_noise_token_id", int),
                                        target_layer_ids=tuple(raw.pop("dspark_target_layer_ids")),
                                        markov_rank=_typed(raw, "dspark_markov_rank", int))
    extra = {k: raw.pop(k) for k in list(raw) if k in IGNORED_KEYS}
    if raw:
        raise ConfigError(f"config field '{sorted(raw)[0]}': unknown key (not part of the DeepSeek-V4 config); "
                          f"all unknown keys: {sorted(raw)}")
    return ModelConfig(extra=extra, **kwargs)


def _parse_rope(rs: Any) -> RopeScaling:
    _check(isinstance(rs, dict), "rope_scaling", f"expected a YaRN dict, found {rs!r}")
    kind = rs.get("type", rs.get("rope_type"))
    _check(kind == "yarn", "rope_scaling.type", f"{kind!r}, expected 'yarn'")
    known = {"type", "rope_type", "factor", "original_max_position_embeddings", "beta_fast", "beta_slow",
             "mscale", "mscale_all_dim"}
    unknown = sorted(set(rs) - known)
    _check(not unknown, f"rope_scaling.{unknown[0] if unknown else ''}", "unknown key")
    for key in ("factor", "original_max_position_embeddings", "beta_fast", "beta_slow"):
        _check(key in rs, f"rope_scaling.{key}", "missing")
    values = {k: _typed({f"rope_scaling.{k}": rs[k]}, f"rope_scaling.{k}",
                        int if k == "original_max_position_embeddings" else float)
              for k in ("factor", "original_max_position_embeddings", "beta_fast", "beta_slow")}
    return RopeScaling(**values)


def _parse_quant(qc: Any, expert_dtype: Any) -> QuantConfig:
    _check(expert_dtype in (None, "fp4", "fp8"), "expert_dtype", f"{expert_dtype!r}, expected 'fp4' or null")
    expert = "fp4" if expert_dtype == "fp4" else None
    if qc is None:
        raise ConfigError("config field 'quantization_config': missing (v4stack runs the released FP8 format)")
    _check(qc.get("quant_method") == "fp8", "quantization_config.quant_method", f"{qc.get('quant_method')!r}")
    _check(qc.get("fmt", "e4m3") == "e4m3", "quantization_config.fmt", f"{qc.get('fmt')!r}, expected 'e4m3'")
    _check(qc.get("scale_fmt", "ue8m0") == "ue8m0", "quantization_config.scale_fmt",
           f"{qc.get('scale_fmt')!r}, expected 'ue8m0'")
    block = qc.get("weight_block_size", [128, 128])
    _check(isinstance(block, list) and len(block) == 2 and block[0] == block[1] and block[0] > 0,
           "quantization_config.weight_block_size", f"{block!r}, expected [b, b]")
    return QuantConfig(weight_block_size=(int(block[0]), int(block[1])), fmt="e4m3", scale_fmt="ue8m0",
                       activation_scheme=qc.get("activation_scheme", "dynamic"), expert_dtype=expert)
