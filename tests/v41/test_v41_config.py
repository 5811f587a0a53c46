"""V4.1 config parsing: released keys (nested text_config), CSA2 roles, one-line errors naming the key."""

from __future__ import annotations

import copy
import json

import pytest

from v4stack.config.family import load_config, parse_config
from v4stack.config.model_config import ConfigError, ModelConfig
from v4stack.config.v41_config import FULL, REINDEX, REUSE, SWA, V41Config
from v4stack.planner.model_shape import PRESET_DIR


def _raw(golden_v41):
    return json.loads((golden_v41 / "tiny_a" / "config.json").read_text())


def test_tiny_a_roles_match_the_readme(golden_v41):
    cfg = load_config(golden_v41 / "tiny_a")
    assert isinstance(cfg, V41Config)
    roles = [cfg.role(i) for i in range(cfg.num_hidden_layers)]
    assert roles == [SWA, SWA, FULL, REUSE, FULL, REUSE, FULL, REUSE, REINDEX, REUSE]
    assert [cfg.kv_source(i) for i in range(2, 10)] == [2, 2, 4, 4, 6, 6, 6, 6]
    assert [cfg.index_source(i) for i in range(2, 10)] == [2, 2, 4, 4, 6, 6, 8, 8]
    assert [i for i in range(10) if cfg.uses_candidates(i)] == [8]
    assert cfg.engram.layer_ids == (1, 4) and cfg.engram.ids_per_token == 24
    assert cfg.dspark.num_stages == 3 and cfg.dspark.target_layer_ids == (7, 8, 9)
    assert cfg.quant.weight_block_size == (32, 32) and cfg.quant.expert_dtype == "fp4"


def test_released_v41_flash_roles():
    cfg = load_config(PRESET_DIR / "v4.1-flash.json")
    reindex = [i for i in range(40) if cfg.role(i) == REINDEX]
    assert reindex == [24, 28, 32, 36]
    assert [i for i in range(40) if cfg.role(i) == FULL] == [2, 8, 14, 20]
    assert cfg.kv_source(39) == 20 and cfg.index_source(39) == 36 and cfg.index_source(23) == 20


def test_v4_parser_points_at_the_family_parser(golden_v41):
    with pytest.raises(ConfigError, match="load_config"):
        ModelConfig.from_dict(_raw(golden_v41))


@pytest.mark.parametrize("mutate, key", [
    (lambda t: t.pop("index_topk"), "index_topk"),
    (lambda t: t.update(compress_ratios=t["compress_ratios"][:-1]), "compress_ratios"),
    (lambda t: t.update(kv_source_layer_ids=[3, 4, 6]), "kv_source_layer_ids"),
    (lambda t: t.update(candidate_source_layer_id=8), "candidate_source_layer_id"),
    (lambda t: t.update(engram_num_embeddings=[5]), "engram_num_embeddings"),
    (lambda t: t.pop("dspark_markov_rank"), "dspark_markov_rank"),
    (lambda t: t.update(surprise=1), "text_config.surprise"),
    (lambda t: t.update(hidden_size="wide"), "hidden_size"),
])
def test_bad_configs_name_the_key(golden_v41, mutate, key):
    raw = copy.deepcopy(_raw(golden_v41))
    mutate(raw["text_config"])
    with pytest.raises(ConfigError, match=f"'{key}'"):
        parse_config(raw)


def test_overrides_apply_after_validation(golden_v41):
    cfg = load_config(golden_v41 / "tiny_a", {"index_topk": 1024, "candidate_topk_blocks": 1024})
    assert cfg.index_topk == 1024 and cfg.candidate_topk_blocks == 1024
    with pytest.raises(ConfigError, match="unknown override"):
        load_config(golden_v41 / "tiny_a", {"no_such_field": 1})
