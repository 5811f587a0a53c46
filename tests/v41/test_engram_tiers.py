"""Engram tables on the device, host and disk tiers give bit-identical logits; the disk tier reads rows from the
checkpoint file itself through a row cache smaller than the table, and the counters say what was fetched."""

from __future__ import annotations

import pytest
import torch

from v4stack.config.engram_placement import EngramPlacement, row_bytes
from v4stack.config.validation import ParameterError
from v4stack.modelio.engram_tiers import EngramStore
from v4stack.modelio.loader import load_model
from v4stack.modelio.writer import write_v41_checkpoint

CACHE_BYTES = 16 << 10  # 16 KiB: ~500 rows of 33 B, against tables of ~50k rows each
PROMPT_LEN, DECODE_STEPS = 150, 4


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return write_v41_checkpoint(tmp_path_factory.mktemp("v41_tiers"), seed=3)


def _drive(model, ids: torch.Tensor) -> torch.Tensor:
    """Prefill ids[:PROMPT_LEN] in two chunks, then teacher-forced decode steps -> every logit row [n, V]."""
    state, rows = model.new_state(), []
    cut = PROMPT_LEN // 3
    rows.append(model(state, ids[:cut], logit_rows=torch.arange(cut)).logits)
    rows.append(model(state, ids[cut:PROMPT_LEN], logit_rows=torch.arange(PROMPT_LEN - cut)).logits)
    for k in range(PROMPT_LEN, PROMPT_LEN + DECODE_STEPS):
        rows.append(model(state, ids[k:k + 1]).logits)
    return torch.cat(rows)


@pytest.fixture(scope="module")
def prompt(ckpt):
    gen = torch.Generator().manual_seed(0)
    return torch.randint(3, 512, (PROMPT_LEN + DECODE_STEPS,), generator=gen)


@pytest.fixture(scope="module")
def device_logits(ckpt, prompt):
    model = load_model(ckpt, progress=False)
    assert isinstance(model.engram_rows, EngramStore) and model.engram_rows.placement.tier == "device"
    return _drive(model, prompt), model


@pytest.mark.parametrize("tier, prefetch", [("host", True), ("disk", True), ("disk", False)])
def test_tiers_bit_identical(ckpt, prompt, device_logits, tier, prefetch):
    reference, device_model = device_logits
    placement = EngramPlacement(tier=tier, cache_bytes=CACHE_BYTES, prefetch=prefetch)
    model = load_model(ckpt, progress=False, engram=placement)
    store = model.engram_rows
    cfg = model.cfg.engram
    table_bytes = sum(cfg.num_embeddings) * row_bytes(cfg.head_dim)
    assert table_bytes > 50 * CACHE_BYTES  # the tables really are larger than the cache budget
    # off the device tier the model holds no table data: the loader did not read those tensors
    assert all(model.layers[i].engram.embed.weight.is_meta for i in cfg.layer_ids)
    logits = _drive(model, prompt)
    assert torch.equal(logits, reference)
    s = store.stats
    assert s.forwards == 2 + DECODE_STEPS and s.tokens == prompt.numel()
    assert s.lookups == prompt.numel() * cfg.ids_per_token * len(cfg.layer_ids)
    assert 0 < s.distinct_rows <= s.lookups
    if tier == "host":
        assert s.rows_fetched == s.distinct_rows and s.cache_hits == 0
    else:  # every distinct row is either a cache hit or read from the file; the cache is bounded
        assert s.rows_fetched + s.cache_hits == s.distinct_rows
        assert s.rows_fetched > placement.cache_rows(cfg)  # more rows went through than the cache can hold
        assert store._source.cache_nbytes <= CACHE_BYTES
    assert store.table_bytes()[tier] == table_bytes
    assert store.table_bytes()["device"] == 0
    store.close()
    assert device_model.engram_rows.table_bytes()["device"] == table_bytes


def test_disk_tier_cache_hits_on_repeated_rows(ckpt):
    """A repeated prompt inside a cache big enough for it is served from the cache the second time."""
    model = load_model(ckpt, progress=False, engram=EngramPlacement("disk", cache_bytes=1 << 20))
    ids = torch.arange(3, 43)
    first = model(model.new_state(), ids).logits
    fetched = model.engram_rows.stats.rows_fetched
    second = model(model.new_state(), ids).logits
    assert torch.equal(first, second)
    assert model.engram_rows.stats.rows_fetched == fetched  # nothing read from the file again
    assert model.engram_rows.stats.cache_hits == model.engram_rows.stats.distinct_rows // 2
    model.engram_rows.close()


@pytest.mark.parametrize("kwargs, match", [(dict(tier="gpu"), "engram"), (dict(cache_bytes=0), "engram_cache")])
def test_placement_refuses_bad_values(kwargs, match):
    with pytest.raises(ParameterError, match=match):
        EngramPlacement(**kwargs)
