"""Engram hashing is exact: the compressed token map (size, sha256), the real model's primes and multipliers,
and every golden hash-id vector (prompt, decode steps, the extra vector over the full id range)."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
from safetensors.torch import load_file

from v4stack.config.family import load_config
from v4stack.model.v41.engram_hash import (NgramHasher, build_compressed_token_map, check_table_sizes, hash_constants,
                                           load_compressed_token_map, map_sha256)

MAP_SHA256 = "26b9be2936d236a124ba318a998c417bc7032e3e92a3107fe98deee49f1dc496"  # golden/v41/README.md
EXTRA_PREFILL = 116  # engram_extra_ids: a 116-token prefill then 116 single-token steps (README)


@pytest.fixture(scope="module")
def case(golden_v41):
    cfg = load_config(golden_v41 / "tiny_a")
    golden = load_file(str(golden_v41 / "tiny_a" / "golden.safetensors"))
    return cfg, golden, NgramHasher(cfg.engram, load_compressed_token_map(golden_v41 / "tokenizer"))


def test_map_built_from_the_tokenizer_matches_the_checksum(golden_v41):
    cmap = build_compressed_token_map(golden_v41 / "tokenizer" / "tokenizer.json")
    assert cmap.numel() == 129280 and int(cmap.max()) + 1 == 99092
    assert map_sha256(cmap) == MAP_SHA256
    assert torch.equal(cmap, load_compressed_token_map(golden_v41 / "tokenizer"))


def test_real_model_constants(golden_v41):
    real = json.loads((golden_v41 / "real_v41_engram_constants.json").read_text())
    cfg = load_config(golden_v41 / "tiny_a").engram
    cfg = replace(cfg, layer_ids=tuple(real["layer_ids"]), vocab_size=real["engram_vocab_size"],
                  num_embeddings=tuple(real["config_engram_num_embeddings"]))
    consts = hash_constants(cfg)
    assert [[list(r) for r in c.primes] for c in consts] == real["primes"]
    assert [c.num_rows for c in consts] == [384006168, 384016682]
    assert [list(c.multipliers) for c in consts] == real["multipliers_for_compressed_vocab_99092"]
    check_table_sizes(cfg)
    with pytest.raises(ValueError, match="engram_num_embeddings"):
        check_table_sizes(replace(cfg, num_embeddings=(5, 6)))


def test_prompt_and_decode_hash_ids(case):
    cfg, g, hasher = case
    prompt = hasher.compress(g["prompt_ids"])
    ids = hasher.hash_ids(prompt, prompt[:0])
    gen = hasher.compress(g["gen_ids"][:30])
    history = torch.cat([prompt, gen])
    t = prompt.numel()
    steps = torch.cat([hasher.hash_ids(history[t + k:t + k + 1], history[:t + k]) for k in range(30)], dim=1)
    for i, layer in enumerate(cfg.engram.layer_ids):
        assert torch.equal(ids[i], g[f"engram_hash_ids.layer{layer}"])
        assert torch.equal(steps[i], g[f"engram_hash_ids_decode.layer{layer}"])


def test_extra_ids_over_the_full_id_range(case):
    cfg, g, hasher = case
    extra = hasher.compress(g["engram_extra_ids"])
    assert int(g["engram_extra_ids"].max()) > cfg.vocab_size  # reaches beyond the tiny model's vocab
    first = hasher.hash_ids(extra[:EXTRA_PREFILL], extra[:0])
    rest = [hasher.hash_ids(extra[k:k + 1], extra[:k]) for k in range(EXTRA_PREFILL, extra.numel())]
    ids = torch.cat([first, *rest], dim=1)
    for i, layer in enumerate(cfg.engram.layer_ids):
        assert torch.equal(ids[i], g[f"engram_extra_hash_ids.layer{layer}"])


def test_dead_token_breaks_longer_ngrams(case):
    _, _, hasher = case
    ids = torch.tensor([5, 6, 7, 8, 9])
    comp = hasher.compress(ids)
    dead = comp.clone()
    dead[2] = -1
    a, b = hasher.hash_ids(comp, comp[:0]), hasher.hash_ids(dead, dead[:0])
    heads = hasher.cfg.n_heads
    # position 4's 2-gram (tokens 3,4) does not reach the dead token; its 3- and 4-grams do
    assert torch.equal(a[:, 4, :heads], b[:, 4, :heads])
    assert not torch.equal(a[:, 4, heads:], b[:, 4, heads:])


def test_out_of_map_ids_are_refused(case):
    _, _, hasher = case
    with pytest.raises(ValueError, match="outside the Engram token map"):
        hasher.compress(torch.tensor([1, 200000]))
