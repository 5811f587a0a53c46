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


V41_CONFIGS = {"v4.1-flash": ROOT / "v4stack/planner/presets/v4.1-flash.json"}


@pytest.mark.parametrize("name", [*V41_CONFIGS, "tiny"])
def test_v41_bytes_per_token_and_state_equal_the_planners(name, tmp_path):
    from v4stack.cache.specs import v41_cache_specs
    from v4stack.config.family import parse_config
    from v4stack.modelio.writer import tiny_v41_config

    if name == "tiny":
        path = tmp_path / "config.json"
        path.write_text(json.dumps(tiny_v41_config()))
        ref = str(path)
    else:
        path, ref = V41_CONFIGS[name], name
    cfg = parse_config(json.loads(path.read_text()))
    specs = v41_cache_specs(cfg, torch.bfloat16)
    plan = make_plan(ref, "cpu", 1, context=cfg.max_position_embeddings, kv_dtype="bf16")
    assert specs.bytes_per_token == plan.kv_bytes_per_token
    assert specs.state_bytes_per_sequence == plan.kv_fixed_bytes_per_sequence["compressor_state"]
    assert specs.tail_bytes_per_block == 0  # no compressor tails: every group closes at a block boundary


def test_v41_flash_pools():
    from v4stack.cache.specs import v41_cache_specs
    from v4stack.config.family import parse_config

    cfg = parse_config(json.loads(V41_CONFIGS["v4.1-flash"].read_text()))
    specs = v41_cache_specs(cfg, torch.bfloat16)
    sources = {r: [s for s in cfg.kv_source_layer_ids if cfg.compress_ratio(s) == r] for r in (1, 2)}
    # per kv source: entries (2 B x head_dim) and index keys (2 B x index_head_dim), one per r tokens
    want = sum(len(v) * (2 * cfg.head_dim + 2 * cfg.index_head_dim) / r for r, v in sources.items())
    assert specs.bytes_per_token == want
    assert {p.name for p in specs.pools} == {"window"} | {f"c{r}" for r, v in sources.items() if v}
    assert specs.pool("window").layers == tuple(range(cfg.num_hidden_layers))


@pytest.mark.parametrize("name", ["v4-flash", "demo"])
@pytest.mark.parametrize("seqs,chunk", [(1, 1024), (4, 300)])
def test_window_pool_bytes_equal_the_planners(name, seqs, chunk):
    """The engine's sliding groups (window + mtp_window, whole blocks: a window per sequence and one step's rows)
    hold exactly the planner's window bytes per sequence x sequences + its per-device step rows."""
    from v4stack.cache.window_blocks import DEFAULT_BLOCK_SIZE
    from v4stack.cache.specs import TOKEN_ALIGN
    from v4stack.engine.config import CacheConfig, EngineConfig, SchedulerConfig
    from v4stack.engine.llm_engine import size_cache

    assert DEFAULT_BLOCK_SIZE == TOKEN_ALIGN == CacheConfig().block_size
    path = CONFIGS[name]
    cfg = ModelConfig.from_dict(json.loads(path.read_text()))
    specs = cache_specs(cfg, torch.bfloat16, prefix_tails=False, with_mtp=True)
    config = EngineConfig(enable_mtp=True, scheduler=SchedulerConfig(max_num_seqs=seqs, max_num_batched_tokens=chunk),
                          cache=CacheConfig(num_blocks=64, enable_prefix_caching=False))
    num, _ = size_cache(specs, config, available_bytes=1 << 40)
    engine = sum(num[p.name] * p.bytes_per_block for p in specs.pools if p.sliding_window is not None)
    plan = make_plan(name if name != "demo" else str(path), "cpu", 1, context=4096, kv_dtype="bf16",
                     concurrency=seqs, chunk=chunk)
    assert engine == seqs * plan.kv_fixed_bytes_per_sequence["window"] + plan.kv_step_bytes
    # V4-Flash, 1 sequence, chunk 1,024: 3 + 8 blocks of 44 layers x 128 rows x 1 KiB + the MTP streams
    if name == "v4-flash" and seqs == 1:
        assert engine == 11 * (44 * 128 * 1024 + 4 * 4096 * 2)
