"""Config parsing and layer roles for the three real configs and a tiny synthetic one."""

import json

from v4stack.planner.model_shape import ModelShape, load_model


def tiny_v4_config():
    """A 4-layer V4 with one MTP block: ratios [0, 4, 128, 4 | 0]."""
    return {
        "model_type": "deepseek_v4", "vocab_size": 1000, "hidden_size": 256, "num_hidden_layers": 4,
        "num_attention_heads": 4, "head_dim": 128, "qk_rope_head_dim": 64, "q_lora_rank": 64,
        "o_groups": 2, "o_lora_rank": 32, "sliding_window": 16, "index_n_heads": 2, "index_head_dim": 128,
        "index_topk": 8, "n_routed_experts": 8, "n_shared_experts": 1, "num_experts_per_tok": 2,
        "moe_intermediate_size": 64, "num_hash_layers": 1, "hc_mult": 2, "num_nextn_predict_layers": 1,
        "max_position_embeddings": 4096, "quantization_config": {"quant_method": "fp8", "fmt": "e4m3", "scale_fmt": "ue8m0",
                                                                 "weight_block_size": [128, 128]},
        "compress_ratios": [0, 4, 128, 4, 0], "routed_scaling_factor": 1.5,
        "rope_scaling": {"type": "yarn", "factor": 16, "original_max_position_embeddings": 65536, "beta_fast": 32,
                         "beta_slow": 1},
    }


def test_v4_flash_schedule():
    m = load_model("v4-flash")
    kinds = [l.kind for l in m.main_layers]
    assert kinds[:2] == ["swa", "swa"]
    assert [l.index for l in m.main_layers if l.kind == "csa"] == list(range(2, 43, 2))   # 21 CSA
    assert [l.index for l in m.main_layers if l.kind == "hca"] == list(range(3, 42, 2))   # 20 HCA
    assert [l.index for l in m.draft_layers] == [43] and m.draft_kind == "mtp"
    assert [l.index for l in m.layers if l.hash_routed] == [0, 1, 2]
    assert m.weight_block == 128 and m.max_position == 1 << 20


def test_v4_pro_schedule():
    m = load_model("v4-pro")
    assert sum(l.kind == "hca" for l in m.main_layers) == 31        # layers 0, 1 and odd 3..59
    assert sum(l.kind == "csa" for l in m.main_layers) == 30
    assert m.main_layers[0].kind == "hca" and len(m.layers) == 62


def test_v41_csa2_roles():
    m = load_model("v4.1-flash")
    by = {l.index: l for l in m.layers}
    assert [i for i, l in by.items() if l.kind == "full"] == [2, 8, 14, 20]
    assert [i for i, l in by.items() if l.kind == "reindex"] == [24, 28, 32, 36]
    assert by[24].index_scores == "candidates" and by[20].index_scores == "all"
    assert by[3].kind == "reuse" and not by[3].owns_compressor and not by[3].index_scores
    assert [i for i, l in by.items() if l.engram] == [1, 14]
    drafts = m.draft_layers
    assert [l.index for l in drafts] == [40, 41, 42] and m.draft_kind == "dspark"
    assert all(l.n_experts == 128 and l.topk == 3 for l in drafts)
    assert not any(l.hash_routed for l in m.layers)                  # V4.1 dropped hash routing
    # 24 rows per token per Engram layer (3 n-gram sizes x 8 heads), 264 B per row
    assert m.engram_lookups_per_token == 48 and m.engram_row_bytes == 264
    assert m.candidate_positions == 2048 * 8


def test_path_config_parses_like_preset(tmp_path):
    p = tmp_path / "cfg" / "config.json"
    p.parent.mkdir()
    p.write_text(json.dumps(tiny_v4_config()))
    m = load_model(str(p))
    assert m.name == "cfg" and [l.kind for l in m.layers] == ["swa", "csa", "hca", "csa", "mtp"]
    assert m.layers[1].overlap and not m.layers[2].overlap


def test_tiny_tensor_shapes():
    m = ModelShape.from_config(tiny_v4_config())
    t = {x.name: x for x in m.tensors()}
    assert t["layers.1.attn.wq_b"].shape == (4 * 128, 64)            # [H * head_dim, q_lora]
    assert t["layers.1.attn.wo_a"].shape == (2 * 32, 4 * 128 // 2)   # [G * o_lora, H * d / G]
    assert t["layers.1.attn.compressor.wkv|wgate"].shape == (2 * 128, 256)   # overlap: coff = 2
    assert t["layers.2.attn.compressor.wkv|wgate"].shape == (128, 256)
    assert t["layers.1.attn.indexer.wq_b"].shape == (2 * 128, 64)
    assert "layers.0.ffn.gate.tid2eid" in t and "layers.1.ffn.gate.tid2eid" not in t
    assert t["layers.1.ffn.experts.*.w1|w3"].count == 16             # 8 experts x (w1, w3)
