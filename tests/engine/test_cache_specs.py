"""One source of truth for cache bytes: the engine's pool specs and ``v4stack plan`` agree."""

import json
from pathlib import Path

import pytest
import torch

from v4stack.cache.specs import cache_specs
from v4stack.config.model_config import ModelConfig
from v4stack.planner.plan import make_plan

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = {
    "v4-flash": ROOT / "v4stack/planner/presets/v4-flash.json",
    "v4-pro": ROOT / "v4stack/planner/presets/v4-pro.json",
    "demo": ROOT / "models/v4-demo-shakespeare/config.json",
}


@pytest.mark.parametrize("name", CONFIGS)
def test_bytes_per_token_and_state_per_sequence_equal_the_planners(name):
    path = CONFIGS[name]
    cfg = ModelConfig.from_dict(json.loads(path.read_text()))
    specs = cache_specs(cfg, torch.bfloat16, prefix_tails=True)
    plan = make_plan(name if name != "demo" else str(path), "cpu", 1, context=4096, kv_dtype="bf16")
    assert specs.bytes_per_token == plan.kv_bytes_per_token
    assert specs.state_bytes_per_sequence == plan.kv_fixed_bytes_per_sequence["compressor_state"]


def test_v4_flash_pools():
    cfg = ModelConfig.from_dict(json.loads(CONFIGS["v4-flash"].read_text()))
    specs = cache_specs(cfg, torch.bfloat16, prefix_tails=True)
    # 21 CSA x (1024 + 256) / 4 + 20 HCA x 1024 / 128 (model_spec s5.2 with a bf16 cache)
    assert specs.bytes_per_token == 21 * (1024 + 256) / 4 + 20 * 1024 / 128 == 6880
    assert len(specs.pool("c4").layers) == 21 and len(specs.pool("c128").layers) == 20
    assert len(specs.pool("window").layers) == 43 and specs.pool("mtp_window").layers == (43,)
