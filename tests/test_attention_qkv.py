"""The attention input path in one C call (``ops.fast.attention_qkv``) against the reference composition of the
fast table's narrow entries (``ops.reference.attention_input``): qr and kv bit-identical; q too except where the
per-head mean of squares, summed in another fp32 order, rounds to a neighbouring bf16 (then one ulp of the rescale)."""

import pytest
import torch

from v4stack.config.numerics import Numerics
from v4stack.ops.fast import attention_qkv as fast_qkv
from v4stack.ops.reference import attention_input


@pytest.fixture(scope="module")
def fast_model(tiny_checkpoint):
    from v4stack.modelio.loader import load_model

    if fast_qkv._library() is None:
        pytest.skip("no C compiler")
    return load_model(tiny_checkpoint, Numerics.fast_kernels(), progress=False)


@pytest.mark.parametrize("rows", [1, 5, 9, 16])  # T x H = 2, 10, 18 (scalar rsqrt), 32 (vector)
def test_one_call_qkv_equals_the_composition(fast_model, rows):
    g = torch.Generator().manual_seed(rows)
    layers = [b.attn for b in fast_model.layers]
    heads_total = heads_equal = 0
    for attn in layers:
        x = (torch.randn(rows, attn.cfg.hidden_size, generator=g) * 2).bfloat16()
        positions = torch.randint(0, 5000, (rows,), generator=g)
        got = fast_qkv._fused(attn, x, positions)
        assert got is not None, attn.layer_id
        want = attention_input.attention_qkv(attn, x, positions)
        q, kv, qr = got
        assert torch.equal(qr, want[2]) and torch.equal(kv, want[1])
        assert q.shape == want[0].shape and q.dtype == want[0].dtype
        same = (q == want[0]).all(-1)  # [T, H]
        heads_total += same.numel()
        heads_equal += int(same.sum())
        # a neighbouring rescale moves every value of the head by about a bf16 ulp of the head's magnitude (RoPE
        # mixes pairs, so the relative change of a small value can be larger)
        diff = (q.float() - want[0].float()).abs().amax(-1)
        assert bool((diff <= 2 ** -7 * want[0].float().abs().amax(-1)).all()), (diff[~same], same)
    assert heads_equal >= 0.99 * heads_total, (heads_equal, heads_total)


def test_qkv_falls_back_for_prefill_rows(fast_model):
    attn = fast_model.layers[0].attn
    x = torch.randn(17, attn.cfg.hidden_size).bfloat16()
    assert fast_qkv._fused(attn, x, torch.arange(17)) is None
    q, kv, qr = fast_qkv.attention_qkv(attn, x, torch.arange(17))
    want = attention_input.attention_qkv(attn, x, torch.arange(17))
    assert torch.equal(q, want[0]) and torch.equal(kv, want[1]) and torch.equal(qr, want[2])


def test_the_layer_constants_are_remade_when_the_weights_move(fast_model):
    """The call's constants are kept on the layer after the first call; a weight that moved since (its address
    changed) voids them: the kernel then steps aside (its plans name the old bytes) and the composition answers."""
    attn = fast_model.layers[0].attn
    x = torch.randn(1, attn.cfg.hidden_size).bfloat16()
    positions = torch.tensor([3])
    assert fast_qkv._fused(attn, x, positions) is not None
    call = attn.__dict__[fast_qkv.LAYER_CALL]
    assert call is not None and call.params.shape[0] == fast_qkv.QKV_FIELDS + 3 * 7
    assert fast_qkv._fused(attn, x, positions) is not None and attn.__dict__[fast_qkv.LAYER_CALL] is call
    saved = attn.wq_b.weight
    try:
        attn.wq_b.weight = saved.clone()  # the same values at another address
        assert fast_qkv._fused(attn, x, positions) is None
        q, kv, qr = fast_qkv.attention_qkv(attn, x, positions)
        want = attention_input.attention_qkv(attn, x, positions)
        assert torch.equal(q, want[0]) and torch.equal(kv, want[1]) and torch.equal(qr, want[2])
    finally:
        attn.wq_b.weight = saved
        attn.__dict__.pop(fast_qkv.LAYER_CALL)
    assert fast_qkv._fused(attn, x, positions) is not None
