"""planner/workspace.py is tied to the code: its slice budgets are the code's, and the formula bounds the activation
peak ``engine/activation_probe.py`` measures for the engine's prefill chunks, from above and within 1.5x, on a small
config with V4-Flash's head shapes (heads 2 x 512, indexer 64 x 128, top-512, window 128) at two contexts."""

import json

import pytest
import torch

from v4stack.engine.activation_probe import ActivationProbe
from v4stack.engine.config import CacheConfig, EngineConfig, SchedulerConfig
from v4stack.engine.llm_engine import LLMEngine
from v4stack.engine.sampling_params import SamplingParams
from v4stack.modelio.writer import tiny_config, write_checkpoint
from v4stack.planner import workspace as ws
from v4stack.planner.model_shape import ModelShape

CHUNK = 512
CONTEXTS = (1024, 3072)  # the index queries' FP4 simulation binds at the first, the indexer's scoring at the second
SLACK = 1.5  # the formula may not be looser than this
FLASH_HEADS = dict(vocab_size=4096, hidden_size=256, num_hidden_layers=3, compress_ratios=(0, 4, 128, 0),
                   num_attention_heads=2, head_dim=512, qk_rope_head_dim=64, q_lora_rank=128, o_groups=2,
                   o_lora_rank=64, index_n_heads=64, index_head_dim=128, index_topk=512, sliding_window=128,
                   n_routed_experts=8, num_experts_per_tok=2, moe_intermediate_size=128, num_hash_layers=1,
                   hc_mult=4, hc_sinkhorn_iters=20)


def test_slice_budgets_are_the_codes():
    from v4stack.model import indexer
    from v4stack.ops.fast import attention

    assert ws.INDEX_QUANT_BUDGET == indexer.QUANT_BUDGET
    assert ws.INDEX_SCORE_BUDGET == indexer.SCORE_BUDGET
    assert ws.QUERY_CHUNK == attention.QUERY_CHUNK
    assert ws.INDEX_QUERY_CHUNK == attention.INDEX_QUERY_CHUNK
    assert ws.ATTN_SCORE_ELEMENTS == attention.SCORE_ELEMENTS
    assert ws.ATTN_KEY_SLICE == attention.KEY_SLICE


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return write_checkpoint(tmp_path_factory.mktemp("flash_heads"), tiny_config(**FLASH_HEADS), seed=0)


def _probed_peak(directory, tokens: int) -> int:
    """Largest per-step activation peak over the chunked prefill of a ``tokens``-token prompt (fast numerics)."""
    engine = LLMEngine.from_model_dir(directory, EngineConfig(
        numerics="fast", scheduler=SchedulerConfig(max_num_seqs=1, max_num_batched_tokens=CHUNK),
        cache=CacheConfig(memory_bytes=1 << 30, enable_prefix_caching=False)))
    prompt = torch.randint(3, FLASH_HEADS["vocab_size"], (tokens,), generator=torch.Generator().manual_seed(0))
    engine.add_request("long", prompt.tolist(), SamplingParams(temperature=0, max_tokens=1, ignore_eos=True))
    peak = 0
    while engine.has_unfinished():
        with ActivationProbe() as probe:
            engine.step()
        peak = max(peak, probe.peak_bytes)
    return peak


def test_workspace_bounds_the_probed_prefill_peak_within_slack(checkpoint):
    m = ModelShape.from_config(json.loads((checkpoint / "config.json").read_text()))
    for context in CONTEXTS:
        measured = _probed_peak(checkpoint, context)
        formula = ws.workspace(m, 1, context, CHUNK)
        assert measured <= formula <= SLACK * measured, (context, measured / 2 ** 20, formula / 2 ** 20)


def test_workspace_grows_with_the_context_only_through_the_index_keys_and_hca_lists():
    m = ModelShape.from_config(tiny_config(**FLASH_HEADS).to_dict())
    # up to 64K tokens an HCA layer lists at most top-k (512) entries: only the index keys copy grows
    near, far = (ws.workspace_terms(m, 1, context, CHUNK) for context in (1 << 14, 1 << 16))
    assert {k: v for k, v in near.items() if k != "index keys copy"} == {k: v for k, v in far.items()
                                                                          if k != "index keys copy"}
    assert far["index keys copy"] == 4 * near["index keys copy"] == 4 * (1 << 12) * 128 * 2  # entries x d_I bf16
    # at 1M the HCA layer lists all 8,192 entries: its int64 lists [chunk, 128 + 8192] count
    at_64k, at_1m = (ws.phases(m, 1, context, CHUNK)["attention"] for context in (1 << 16, 1 << 20))
    assert at_1m - at_64k >= ws.HCA_LIST_COPIES * CHUNK * (128 + 8192) * 8
