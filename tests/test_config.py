"""config.json parsing: released configs, the V4.1 refusal, and errors that name the field."""

import json
from pathlib import Path

import pytest

from tests.conftest import GOLDEN_V4
from v4stack.config import ConfigError, ModelConfig

PRESETS = Path(__file__).resolve().parents[1] / "v4stack" / "planner" / "presets"


def test_v4_flash_release_config():
    cfg = ModelConfig.from_file(PRESETS / "v4-flash.json")
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.num_attention_heads) == (43, 4096, 64)
    assert len(cfg.compress_ratios) == 44  # 43 layers + 1 MTP entry
    assert cfg.compress_ratios[:4] == (0, 0, 4, 128) and cfg.compress_ratios[42:] == (4, 0)
    assert [cfg.is_hash_layer(i) for i in range(4)] == [True, True, True, False]
    assert cfg.quant.weight_block_size == (128, 128) and cfg.quant.expert_dtype == "fp4"
    assert cfg.rope_scaling.factor == 16 and cfg.rope_scaling.original_max_position_embeddings == 65536
    assert cfg.num_mtp_layers == 1 and cfg.routed_scaling_factor == 1.5


def test_v4_pro_release_config_starts_with_hca():
    cfg = ModelConfig.from_file(PRESETS / "v4-pro.json")
    assert cfg.compress_ratios[:3] == (128, 128, 4) and len(cfg.compress_ratios) == 62
    assert cfg.routed_scaling_factor == 2.5 and cfg.o_groups == 16 and cfg.index_topk == 1024


def test_v41_is_recognised_and_refused():
    raw = json.loads((PRESETS / "v4.1-flash.json").read_text())
    with pytest.raises(ConfigError, match="DeepseekV41ForCausalLM.*not supported yet"):
        ModelConfig.from_dict(raw)


def test_dspark_keys_of_flash_0731_are_parsed():
    raw = json.loads((PRESETS / "v4-flash.json").read_text())
    raw.update(dspark_block_size=5, dspark_noise_token_id=128799, dspark_target_layer_ids=[40, 41, 42],
               dspark_markov_rank=256)
    cfg = ModelConfig.from_dict(raw)
    assert cfg.dspark.target_layer_ids == (40, 41, 42)
    assert cfg.num_mtp_layers == 0  # dspark_* keys take precedence over the legacy MTP counter


def _golden_raw():
    return json.loads((GOLDEN_V4 / "flash_like" / "config.json").read_text())


@pytest.mark.parametrize("mutate, field", [
    (lambda r: r.update(compress_ratios=[0, 0, 4]), "compress_ratios"),
    (lambda r: r.update(compress_ratios=[0, 0, 4, 128, 4, 128, 4]), "compress_ratios"),  # MTP entry must be 0
    (lambda r: r.update(compress_ratios=[0, 0, 8, 128, 4, 128, 0]), "compress_ratios"),
    (lambda r: r.update(frobnicate=1), "frobnicate"),
    (lambda r: r.pop("hidden_size"), "hidden_size"),
    (lambda r: r.update(o_groups=3), "o_groups"),
    (lambda r: r.update(num_experts_per_tok=99), "num_experts_per_tok"),
    (lambda r: r.update(hidden_size="256"), "hidden_size"),
    (lambda r: r["rope_scaling"].update(type="linear"), "rope_scaling.type"),
    (lambda r: r["quantization_config"].update(fmt="e5m2"), "quantization_config.fmt"),
    (lambda r: r.update(num_key_value_heads=8), "num_key_value_heads"),
])
def test_bad_config_names_the_field(mutate, field):
    if not (GOLDEN_V4 / "flash_like").exists():
        pytest.skip("golden data missing")
    raw = _golden_raw()
    mutate(raw)
    with pytest.raises(ConfigError, match=f"'{field}'"):
        ModelConfig.from_dict(raw)


def test_roundtrip_through_dict():
    cfg = ModelConfig.from_file(PRESETS / "v4-flash.json")
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
