"""The one-call MoE decode kernel (``ops.fast.moe_kernel``) against the fast table's torch path it replaces: the
same rounding points and fp32 summation order, so the outputs are bit-identical."""

import pytest
import torch

from v4stack.config.numerics import Numerics
from v4stack.modelio.loader import load_model
from v4stack.ops.fast import moe as fast_moe
from v4stack.ops.fast import moe_kernel
from v4stack.ops.fast.lowbit import DECODE_ROWS


@pytest.fixture(scope="module")
def fast_model(tiny_checkpoint):
    if moe_kernel._library() is None:
        pytest.skip("no C compiler (or V4STACK_NO_C_KERNELS=1): no kernel to compare")
    return load_model(tiny_checkpoint, Numerics.fast_kernels(), progress=False)


def test_without_the_library_moe_experts_takes_the_torch_path(fast_model, monkeypatch):
    """No compiled library (no compiler, V4STACK_NO_C_KERNELS=1): prepare leaves no tables, run_layer and run step
    aside, and moe_experts gives the kernel's bits from the grouped torch path."""
    moe = fast_model.layers[1].ffn
    g = torch.Generator().manual_seed(11)
    x = (torch.randn(2, moe.shared_experts.w1.in_features, generator=g) * 2).bfloat16()
    weights, experts = moe.gate(x, torch.randint(0, fast_model.cfg.vocab_size, (2,), generator=g))
    fused = fast_moe.moe_experts(moe, x, weights, experts)
    monkeypatch.setattr(moe_kernel, "_library", lambda: None)
    try:
        moe_kernel.prepare(moe)
        assert not hasattr(moe, moe_kernel.EXPERT_TABLE) and not hasattr(moe, moe_kernel.LAYER_PARAMS)
        assert moe_kernel.run_layer(moe, x, weights, experts) is None
        assert torch.equal(fast_moe.moe_experts(moe, x, weights, experts), fused)
    finally:
        monkeypatch.undo()
        moe_kernel.prepare(moe)
    assert hasattr(moe, moe_kernel.LAYER_PARAMS)


def _without_kernel(moe, *args):
    saved = {name: getattr(moe, name) for name in (moe_kernel.EXPERT_TABLE, moe_kernel.LAYER_PARAMS)}
    for name in saved:
        delattr(moe, name)
    try:
        return fast_moe.moe_experts(moe, *args)
    finally:
        for name, value in saved.items():
            setattr(moe, name, value)


@pytest.mark.parametrize("tokens", [1, 3, DECODE_ROWS])
def test_fused_moe_equals_the_grouped_torch_path(fast_model, tokens):
    g = torch.Generator().manual_seed(tokens)
    for block in fast_model.layers:  # hash-routed and score-routed layers
        moe = block.ffn
        assert hasattr(moe, moe_kernel.EXPERT_TABLE)
        x = (torch.randn(tokens, moe.shared_experts.w1.in_features, generator=g) * 2).bfloat16()
        weights, experts = moe.gate(x, torch.randint(0, fast_model.cfg.vocab_size, (tokens,), generator=g))
        fused = moe_kernel.run(moe, fast_moe.act_quant(x, moe.compute.act_block, torch.bfloat16), weights, experts)
        assert fused is not None
        want = _without_kernel(moe, x, weights, experts)
        assert want.abs().max() > 0
        assert torch.equal(fused, want)


@pytest.mark.parametrize("tokens", [1, DECODE_ROWS])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_the_layer_call_quantises_like_act_quant(fast_model, tokens, dtype):
    """run_layer takes the layer's input before its FP8 quant-dequant (bf16, or fp32 as a caller may pass): the
    same bits as run on act_quant's output (what moe_experts returned before), and for bf16 as the grouped torch
    path (whose fp32 input keeps its fp32 sums unrounded: there the kernel's bf16 output is the contract)."""
    g = torch.Generator().manual_seed(tokens + 7)
    for block in fast_model.layers:
        moe = block.ffn
        d, inter = moe.shared_experts.w1.in_features, moe.shared_experts.w1.out_features
        assert getattr(moe, moe_kernel.LAYER_PARAMS)[:3].tolist() == [d, inter, len(moe.experts)]
        x = (torch.randn(tokens, moe.shared_experts.w1.in_features, generator=g) * 3).to(dtype)
        weights, experts = moe.gate(x.bfloat16(), torch.randint(0, fast_model.cfg.vocab_size, (tokens,), generator=g))
        layer = moe_kernel.run_layer(moe, x, weights, experts)
        assert layer is not None and layer.dtype == torch.bfloat16
        quantised = moe_kernel.run(moe, fast_moe.act_quant(x, moe.compute.act_block, torch.bfloat16), weights, experts)
        assert torch.equal(layer, quantised)
        assert torch.equal(fast_moe.moe_experts(moe, x, weights, experts), layer.to(dtype))
        if dtype == torch.bfloat16:
            want = _without_kernel(moe, x, weights, experts)
            assert want.abs().max() > 0
            assert torch.equal(layer, want)


def test_duplicate_experts_of_one_token_are_both_summed(fast_model):
    """A hash table may name an expert twice for a token; the grouped path adds both slots, so must the kernel."""
    moe = fast_model.layers[0].ffn
    x = torch.randn(2, moe.shared_experts.w1.in_features).bfloat16()
    experts = torch.tensor([[1, 1], [0, 2]])[:, :moe.gate.topk].contiguous()
    weights = torch.full(experts.shape, 0.5)
    fused = moe_kernel.run(moe, fast_moe.act_quant(x, moe.compute.act_block, torch.bfloat16), weights, experts)
    assert torch.equal(fused, _without_kernel(moe, x, weights, experts))


def test_kernel_steps_aside_where_it_does_not_apply(fast_model):
    moe = fast_model.layers[0].ffn
    x = torch.randn(DECODE_ROWS + 1, moe.shared_experts.w1.in_features).bfloat16()
    weights, experts = moe.gate(x, torch.zeros(x.shape[0], dtype=torch.long))
    assert moe_kernel.run(moe, x, weights, experts) is None  # a prefill: the grouped GEMM path
    assert moe_kernel.run_layer(moe, x, weights, experts) is None
    table = getattr(moe, moe_kernel.EXPERT_TABLE)
    setattr(moe, moe_kernel.EXPERT_TABLE, (*table[:3], table[3] + 1))  # addresses no longer those of the weights
    try:
        assert moe_kernel.run(moe, x[:1], weights[:1], experts[:1]) is None
        assert moe_kernel.run_layer(moe, x[:1], weights[:1], experts[:1]) is None
    finally:
        setattr(moe, moe_kernel.EXPERT_TABLE, table)


def test_exact_modes_get_no_kernel_table(tiny_checkpoint):
    ref = load_model(tiny_checkpoint, Numerics.reference(), progress=False)
    assert not any(hasattr(b.ffn, moe_kernel.EXPERT_TABLE) for b in ref.layers)
