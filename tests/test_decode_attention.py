"""Batched decode attention (model/decode_attention.py) against the per-sequence path it replaces, and its two
op-table entries against their reference definitions."""

import pytest
import torch

from tests.conftest import golden_case
from v4stack.config.numerics import Numerics
from v4stack.model import ForwardBatch
from v4stack.model.attention import Attention
from v4stack.modelio.loader import load_model
from v4stack.ops.fast import attention as fast_attention
from v4stack.ops.reference import attention, indexer

# 127: its first decode closes a 128-group (HCA) and fills the window; 1 and 3: no compressed entry yet
LENGTHS = (127, 6, 1, 3)
STEPS = 5  # decode steps: every sequence closes a ratio-4 group; step 2 is a mixed step


def _run(model, batched: bool):
    for m in model.modules():
        if isinstance(m, Attention):
            m.batched_decode = batched
    g = torch.Generator().manual_seed(0)
    states = [model.new_state() for _ in LENGTHS]
    out = model(ForwardBatch.build(states, [torch.randint(3, 2048, (n,), generator=g) for n in LENGTHS]))
    tokens, logits = [out.logits.argmax(-1)], [out.logits]
    for step in range(STEPS):
        nxt = list(out.logits.argmax(-1)[:, None])
        if step == 2:  # one sequence gets a 5-token chunk: decode rows batched beside a prefill span
            nxt[0] = torch.randint(3, 2048, (5,), generator=g)
        out = model(ForwardBatch.build(states, nxt))
        tokens.append(out.logits.argmax(-1))
        logits.append(out.logits)
    return torch.stack(tokens), torch.stack(logits)


@pytest.mark.parametrize("numerics", [Numerics.exact_fp32(), Numerics.reference()], ids=["fp32", "reference"])
def test_batched_decode_matches_the_per_sequence_path(numerics):
    model = load_model(golden_case("flash_like"), numerics, progress=False)  # window, CSA and HCA layers
    want_tokens, want = _run(model, batched=False)
    got_tokens, got = _run(model, batched=True)
    assert torch.equal(got_tokens, want_tokens)
    if numerics.compute_dtype == torch.float32:
        assert (got - want).abs().max() <= 1e-5  # fp32 sums over padded key lists in another order
    else:
        assert torch.equal(got, want)  # the reference table's entries are defined row by row


def _decode_case(round_probs: bool):
    g = torch.Generator().manual_seed(3)
    b, h, k, d = 5, 4, 150, 32  # 150 slots: three kernel blocks, the last one partial
    q = torch.randn(b, h, d, generator=g).bfloat16()
    keys = torch.randn(b, k, d, generator=g).bfloat16()
    valid = torch.rand(b, k, generator=g) < 0.6
    valid[:, 0] = True
    valid[1, 64:] = False  # a row whose later blocks are empty
    sink = torch.randn(h, generator=g)
    return q, keys.masked_fill(~valid[..., None], 0), valid, sink, 0.2, round_probs


@pytest.mark.parametrize("round_probs", [False, True])
def test_fast_decode_attention_matches_its_reference(round_probs):
    args = _decode_case(round_probs)
    want = attention.decode_attention(*args).float()
    got = fast_attention.decode_attention(*args).float()
    assert (got - want).abs().max() <= 2 ** -7 * want.abs().max()  # bf16 outputs: a few ulps of reorder
    # and the reference is the per-row sparse attention over the valid keys of each row
    q, keys, valid, sink, scale, rp = args
    row = attention.sparse_attention(q[2:3], keys[2][valid[2]], torch.arange(int(valid[2].sum()))[None], sink,
                                     scale, rp)
    if not rp:  # exact softmax: the order and the masked slots do not matter
        assert torch.allclose(want[2:3], row.float(), atol=1e-2)


def test_decode_index_scores_match_index_scores_per_row():
    g = torch.Generator().manual_seed(4)
    q, w = torch.randn(3, 4, 16, generator=g).bfloat16(), torch.randn(3, 4, generator=g).bfloat16()
    keys = torch.randn(3, 9, 16, generator=g).bfloat16()
    positions = torch.tensor([3, 39, 21])  # 1, 9 (all) and 5 visible entries of ratio 4
    want = indexer.decode_index_scores(q, w, keys, positions, 4)
    for b, n in enumerate([1, 9, 5]):
        row = indexer.index_scores(q[b:b + 1], w[b:b + 1], keys[b, :n], positions[b:b + 1], 4)[0]
        assert torch.equal(want[b, :n], row) and bool(torch.isinf(want[b, n:]).all())
    got = fast_attention.decode_index_scores(q, w, keys, positions, 4)
    assert torch.equal(torch.isinf(got), torch.isinf(want))
    assert (got - want).nan_to_num(0, 0, 0).abs().max() <= 2 ** -6 * want[~torch.isinf(want)].abs().max()


def test_c_decode_attention_equals_the_torch_formulation(monkeypatch):
    """The one-call C kernel of the fast decode attention against its torch formulation (the same rounding
    points; only exp's last ulp and the fp32 summation order may differ), NaN in unlisted slots never read."""
    from v4stack.ops.fast import kernels

    q, keys, valid, sink, scale, _ = _decode_case(True)
    keys = keys.masked_fill(~valid[..., None], float("nan"))  # the C kernel skips unlisted slots
    got = kernels.decode_attention_blocked(q, keys, valid, sink, scale)
    assert got is not None
    monkeypatch.setattr(kernels, "decode_attention_blocked", lambda *a: None)
    want = fast_attention.decode_attention(q, keys.nan_to_num(0.0), valid, sink, scale, True)
    assert not got.isnan().any()
    d = (got.float() - want.float()).abs()
    assert d.max() <= 2 ** -8 * want.abs().max(), d.max()  # within a bf16 ulp
    assert (d > 0).float().mean() < 0.05  # nearly every element identical


@pytest.mark.parametrize("round_probs", [False, True])
def test_decode_attention_never_reads_masked_slots(round_probs, monkeypatch):
    """Masked slots may hold NaN (unwritten pool rows; the model no longer zeroes them): the reference, the C
    kernel and the fast torch path give the values they give on zeroed slots."""
    from v4stack.ops.fast import kernels

    q, keys, valid, sink, scale, _ = _decode_case(round_probs)
    poisoned = keys.masked_fill(~valid[..., None], float("nan"))
    clean = keys.masked_fill(~valid[..., None], 0.0)
    want = attention.decode_attention(q, clean, valid, sink, scale, round_probs)
    assert torch.equal(attention.decode_attention(q, poisoned, valid, sink, scale, round_probs), want)
    fast = fast_attention.decode_attention(q, poisoned, valid, sink, scale, round_probs)
    assert torch.equal(fast, fast_attention.decode_attention(q, clean, valid, sink, scale, round_probs))
    monkeypatch.setattr(kernels, "decode_attention_blocked", lambda *a: None)  # the torch path
    torch_path = fast_attention.decode_attention(q, poisoned, valid, sink, scale, round_probs)
    assert not torch_path.isnan().any()
    assert torch.equal(torch_path, fast_attention.decode_attention(q, clean, valid, sink, scale, round_probs))


def test_pooled_decode_attention_reads_the_pools_in_place(monkeypatch):
    """``decode_attention_pooled``: the C kernel reading key rows through their pool slots gives exactly the fast
    ``decode_attention`` of the gathered keys (the same kernel), with NaN rows at masked slots never read; the
    reference is the reference ``decode_attention`` of the gathered keys; the torch fallback gathers."""
    from v4stack.ops.fast import fast_ops, kernels
    from v4stack.ops.fast import pooled_attention as fast_pooled
    from v4stack.ops.reference import pooled_attention
    from v4stack.ops.table import reference_ops

    fast_table, ref_table = fast_ops(), reference_ops()

    q, keys, valid, sink, scale, _ = _decode_case(True)
    b, k, d = keys.shape
    g = torch.Generator().manual_seed(5)
    pool = torch.randn(3 * b * k, d, generator=g).bfloat16()
    order = 5 + torch.randperm(pool.shape[0] - 5, generator=g)[:b * k].view(b, k)  # distinct rows, any order
    pool[order[~valid]] = float("nan")  # masked slots name unwritten rows
    parts = [(pool, order[:, :100]), (pool[5:], order[:, 100:] - 5)]  # two pools, a split inside a kernel block
    gathered = pooled_attention.gather_keys(parts)
    assert torch.equal(gathered.nan_to_num(7.0), pool[order].nan_to_num(7.0))  # NaN rows where masked
    got = fast_pooled.decode_attention_pooled(q, parts, valid, sink, scale, True, fast_table)
    assert torch.equal(got, fast_attention.decode_attention(q, gathered, valid, sink, scale, True))
    assert not got.isnan().any()
    one = fast_pooled.decode_attention_pooled(q, [(pool, order)], valid, sink, scale, True, fast_table)
    assert torch.equal(one, got)
    want = pooled_attention.decode_attention_pooled(q, parts, valid, sink, scale, True, ref_table)
    assert torch.equal(want, attention.decode_attention(q, gathered, valid, sink, scale, True))
    monkeypatch.setattr(kernels, "decode_attention_pooled", lambda *a: None)
    assert torch.equal(fast_pooled.decode_attention_pooled(q, parts, valid, sink, scale, True, fast_table), got)
