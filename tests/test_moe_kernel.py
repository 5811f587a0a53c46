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
    return load_model(tiny_checkpoint, Numerics.fast_kernels(), progress=False)


def _without_kernel(moe, *args):
    table = getattr(moe, moe_kernel.EXPERT_TABLE)
    delattr(moe, moe_kernel.EXPERT_TABLE)
    try:
        return fast_moe.moe_experts(moe, *args)
    finally:
        setattr(moe, moe_kernel.EXPERT_TABLE, table)


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
    table = getattr(moe, moe_kernel.EXPERT_TABLE)
    setattr(moe, moe_kernel.EXPERT_TABLE, (*table[:3], table[3] + 1))  # addresses no longer those of the weights
    try:
        assert moe_kernel.run(moe, x[:1], weights[:1], experts[:1]) is None
    finally:
        setattr(moe, moe_kernel.EXPERT_TABLE, table)


def test_exact_modes_get_no_kernel_table(tiny_checkpoint):
    ref = load_model(tiny_checkpoint, Numerics.reference(), progress=False)
    assert not any(hasattr(b.ffn, moe_kernel.EXPERT_TABLE) for b in ref.layers)
