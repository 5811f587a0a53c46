"""Long prefill chunks keep activations bounded: the CSA indexer scores slices of queries (``Indexer.select``)
instead of one [S, H_I, N] product, and the slicing changes neither the chosen entries nor the logits."""

import functools

import pytest
import torch

from tests.conftest import golden_case
from tests.engine.engine_harness import make_engine, run_to_end
from v4stack.config.numerics import Numerics
from v4stack.engine.config import EngineConfig
from v4stack.engine.sampling_params import SamplingParams
from v4stack.model.attention import CSA_RATIO
from v4stack.modelio.loader import load_model


@pytest.fixture(scope="module")
def model():
    return load_model(golden_case("flash_like"), Numerics.exact_fp32(), progress=False)


def _indexers(model):
    return [layer.attn.indexer for layer in model.layers if layer.attn.ratio == CSA_RATIO]


def test_select_in_query_slices_equals_scoring_all_queries_at_once(model):
    indexer = _indexers(model)[0]
    g = torch.Generator().manual_seed(0)
    s, n = 300, 120  # 120 entries = positions up to 480; queries at positions 180..479
    q = torch.randn(s, indexer.n_heads, indexer.head_dim, generator=g)
    w = torch.randn(s, indexer.n_heads, generator=g)
    keys = torch.randn(n, indexer.head_dim, generator=g)
    positions = torch.arange(180, 180 + s)
    whole = indexer.top(indexer.scores(q, w, keys, positions), positions)
    for rows in (1, 7, 64):  # budget for `rows` queries per slice
        sliced = indexer.select(q, w, keys, positions, budget=rows * indexer.n_heads * n)
        assert torch.equal(sliced, whole), rows


def test_engine_prefill_with_sliced_scoring_gives_identical_logits(model):
    prompt = torch.randint(3, 2048, (400,), generator=torch.Generator().manual_seed(4)).tolist()
    params = SamplingParams(temperature=0, max_tokens=3)
    engine, rec = make_engine(model, EngineConfig(numerics="fp32"))
    ref = run_to_end(engine, {"p": prompt}, params)["p"].outputs[0].token_ids
    for ix in _indexers(model):  # a budget of 3 queries per slice at the prompt's 100 entries
        ix.select = functools.partial(type(ix).select, ix, budget=3 * ix.n_heads * 100)
    try:
        engine2, rec2 = make_engine(model, EngineConfig(numerics="fp32"))
        out = run_to_end(engine2, {"p": prompt}, params)["p"].outputs[0].token_ids
    finally:
        for ix in _indexers(model):
            del ix.select
    assert out == ref
    assert all(torch.equal(a, b) for a, b in zip(rec.logits["p"], rec2.logits["p"]))


@pytest.mark.parametrize("numerics", [Numerics.reference(), Numerics.exact_fp32()])
def test_index_queries_in_row_slices_equal_one_pass(numerics, monkeypatch):
    from v4stack.model import indexer as indexer_module

    indexer = _indexers(load_model(golden_case("flash_like"), numerics, progress=False))[0]
    qr = torch.randn(37, indexer.wq_b.in_features, generator=torch.Generator().manual_seed(1))
    positions = torch.arange(100, 137)
    whole = indexer.queries(qr.to(numerics.compute_dtype), positions)
    monkeypatch.setattr(indexer_module, "QUANT_BUDGET", 5 * indexer.n_heads * indexer.head_dim)  # 5 rows a slice
    assert torch.equal(indexer.queries(qr.to(numerics.compute_dtype), positions), whole)


def test_fast_attention_in_query_slices_equals_one_pass():
    from v4stack.ops.fast.attention import sliced_attention as sparse_attention  # the torch form's slices

    g = torch.Generator().manual_seed(2)
    s, heads, d, n = 40, 2, 64, 90
    q = torch.randn(s, heads, d, generator=g).bfloat16()
    kv = torch.randn(n, d, generator=g).bfloat16()
    idx = torch.stack([torch.randperm(n, generator=g)[:24] for _ in range(s)])
    idx[:, 20:] = -1
    sink = torch.randn(heads, generator=g)
    for round_probs in (True, False):
        whole = sparse_attention(q, kv, idx, sink, d ** -0.5, round_probs)
        for rows in (1, 7):
            sliced = sparse_attention(q, kv, idx, sink, d ** -0.5, round_probs, budget=rows * heads * (n + 1))
            assert torch.equal(sliced, whole), (round_probs, rows)


def _attention_case(n: int, s: int = 32, heads: int = 2, d: int = 64, slots: int = 48, seed: int = 3,
                    listed: int | None = None):
    """Random bf16 q [s, heads, d], kv [n, d], index lists of ``slots`` distinct rows of kv[:listed] (some -1)."""
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(s, heads, d, generator=g).bfloat16()
    kv = torch.randn(n, d, generator=g).bfloat16()
    idx = torch.stack([torch.randperm(listed or n, generator=g)[:slots] for _ in range(s)])  # rows of kv[:listed]
    idx[:4, slots - 10:] = -1  # some rows with empty slots
    return q, kv, idx, torch.randn(heads, generator=g), d ** -0.5


@pytest.mark.parametrize("round_probs", [True, False])
def test_fast_attention_in_context_slices_matches_one_slice_and_the_reference(round_probs):
    """Scores and weights do not depend on the key slice (exact per slot); only P.V's fp32 sum order does."""
    from v4stack.ops.fast.attention import sliced_attention as sparse_attention  # the torch form's slices
    from v4stack.ops.reference.attention import sparse_attention as reference

    q, kv, idx, sink, scale = _attention_case(300)
    whole = sparse_attention(q, kv, idx, sink, scale, round_probs, key_slice=300).float()
    want = reference(q, kv, idx, sink, scale, round_probs).float()
    bf16_ulp = 2.0 ** -8 * want.abs().clamp_min(2.0 ** -6)  # one bf16 step of each output
    assert ((whole - want).abs() <= bf16_ulp).all()
    for key_slice in (1, 7, 64, 299):
        sliced = sparse_attention(q, kv, idx, sink, scale, round_probs, key_slice=key_slice).float()
        assert ((sliced - whole).abs() <= bf16_ulp).all(), key_slice


@pytest.mark.parametrize("form", ["sparse_attention", "sliced_attention"])
def test_fast_attention_activations_do_not_grow_with_the_context(form):
    """The same queries and index lists over 2,048 and 16,384 key rows: the probe's peak is the slices' (the old
    dense form upcast all N rows to fp32 and fp64, 8x more at the longer context); the C kernel of listed rows
    (``sparse_attention``) and the torch form (``sliced_attention``) alike."""
    from v4stack.engine.activation_probe import ActivationProbe
    from v4stack.ops.fast import attention

    sparse_attention = getattr(attention, form)
    peaks = []
    for n in (2048, 16384):
        q, kv, idx, sink, scale = _attention_case(n, d=512, listed=2048)  # the same lists, any context
        with torch.inference_mode(), ActivationProbe() as probe:
            sparse_attention(q, kv, idx, sink, scale, True, key_slice=1024)
        peaks.append(probe.peak_bytes)
    assert peaks[1] <= peaks[0] * 1.01, peaks


def _segments(kv: torch.Tensor, seed: int = 5):
    """kv [n, d] as KeyRows: a dense head, the middle rows scattered in a bigger 'pool' (read by slot), a dense tail."""
    from v4stack.ops.key_rows import KeyRows

    n = kv.shape[0]
    a, b = n // 5, n - n // 7
    g = torch.Generator().manual_seed(seed)
    pool = torch.randn(2 * n, kv.shape[1], generator=g).to(kv.dtype)
    slots = torch.randperm(2 * n, generator=g)[: b - a]
    pool[slots] = kv[a:b]
    return KeyRows([(kv[:a], None), (pool, slots), (kv[b:], None)])


def test_key_rows_read_the_rows_of_the_joined_matrix():
    from v4stack.ops.key_rows import as_tensor, read_rows

    kv = torch.randn(100, 8, generator=torch.Generator().manual_seed(4)).bfloat16()
    keys = _segments(kv)
    assert keys.shape == kv.shape and keys.dtype == kv.dtype
    assert torch.equal(as_tensor(keys), kv) and as_tensor(kv) is kv
    for lo, hi in ((0, 100), (0, 20), (15, 25), (19, 86), (85, 100), (50, 50)):
        assert torch.equal(read_rows(keys, lo, hi), kv[lo:hi]), (lo, hi)


@pytest.mark.parametrize("form", ["sparse_attention", "sliced_attention"])
@pytest.mark.parametrize("round_probs", [True, False])
def test_attention_over_key_rows_in_place_equals_the_joined_keys(round_probs, form):
    """The entries read from the pool slice by slice (fast: the C kernel row by row, the torch form a slice at a
    time) or joined (reference): the same bits as one tensor."""
    from v4stack.ops.fast import attention
    from v4stack.ops.reference.attention import sparse_attention as reference

    sparse_attention = getattr(attention, form)

    q, kv, idx, sink, scale = _attention_case(300)
    keys = _segments(kv)
    assert torch.equal(reference(q, keys, idx, sink, scale, round_probs), reference(q, kv, idx, sink, scale, round_probs))
    for key_slice in (7, 64, 300):  # slices that straddle the segments, and one slice
        assert torch.equal(sparse_attention(q, keys, idx, sink, scale, round_probs, key_slice=key_slice),
                           sparse_attention(q, kv, idx, sink, scale, round_probs, key_slice=key_slice)), key_slice


def test_engine_attention_reads_the_entries_in_place(monkeypatch):
    """A CSA layer's prefill chunk hands sparse_attention its compressed entries as pool slots, not a copy."""
    from v4stack.engine.config import SchedulerConfig
    from v4stack.ops.key_rows import KeyRows, as_tensor
    from v4stack.ops.reference import attention as reference

    seen = []

    def spy(kv):
        seen.append(kv)
        return as_tensor(kv)

    monkeypatch.setattr(reference, "as_tensor", spy)
    model = load_model(golden_case("flash_like"), Numerics.reference(), progress=False)
    engine, _ = make_engine(model, EngineConfig(numerics="reference",
                                                scheduler=SchedulerConfig(max_num_batched_tokens=128)))
    run_to_end(engine, {"p": list(range(3, 300))}, SamplingParams(temperature=0, max_tokens=1))
    paged = [kv for kv in seen if isinstance(kv, KeyRows)]
    assert paged and any(slots is not None and slots.numel() for kv in paged for _, slots in kv.parts)
