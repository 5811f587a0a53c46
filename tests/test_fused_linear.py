"""The one-call decode linear (``ops.fast.fused_linear``) against the torch-side chain it replaces
(``ops.fast.linear.linear`` with the fused path off): bit-identical on every linear of a fast model."""

import pytest
import torch

from v4stack.config.numerics import Numerics
from v4stack.ops.fast import fused_linear
from v4stack.ops.fast import linear as fast_linear
from v4stack.ops.reference import layers as reference_layers
from v4stack.ops.reference.layers import DENSE, FP4, FP8


@pytest.fixture(scope="module")
def fast_model(tiny_checkpoint):
    from v4stack.modelio.loader import load_model

    if fused_linear._library() is None:
        pytest.skip("no C compiler")
    return load_model(tiny_checkpoint, Numerics.fast_kernels(), progress=False)


def _linears(model):
    return [m for m in model.modules() if hasattr(m, "fmt") and hasattr(m, "compute") and hasattr(m, "in_features")]


@pytest.mark.parametrize("rows", [1, 3, 16])
def test_fused_linear_equals_the_chain_on_every_layer(fast_model, rows, monkeypatch):
    g = torch.Generator().manual_seed(rows)
    layers = _linears(fast_model)
    formats = set()
    inputs = {}
    got = {}
    for i, layer in enumerate(layers):
        dtype = torch.float32 if layer.fmt == DENSE and layer.dense_compute_fp32 else torch.bfloat16
        x = (torch.randn(rows, layer.in_features, generator=g) * 3).to(dtype)
        x[0, :7] = torch.tensor([0.0, 1e-30, -1e-6, 448.0, -600.0, 2 ** -10, 5e3]).to(dtype)  # floor, clamp, tiny
        inputs[i] = x
        got[i] = fused_linear.linear(layer, x)
        if got[i] is not None:
            formats.add(layer.fmt)
    assert {FP8, DENSE} <= formats  # the one-call path really ran
    monkeypatch.setattr(fused_linear, "linear", lambda layer, x: None)  # the chain
    for i, layer in enumerate(layers):
        if got[i] is None:
            continue
        want = fast_linear.linear(layer, inputs[i])
        assert got[i].dtype == want.dtype and got[i].shape == want.shape
        assert torch.equal(got[i], want), (layer, (got[i].float() - want.float()).abs().max())
        ref = reference_layers.linear(layer, inputs[i]).float()  # and close to the reference's exact sums
        assert (got[i].float() - ref).abs().max() <= 2 ** -6 * ref.abs().max() + 1e-6


def test_fused_linear_declines_prefill_rows(fast_model):
    layer = fast_model.layers[0].attn.wq_a
    assert fused_linear.linear(layer, torch.randn(17, layer.in_features).bfloat16()) is None
    assert fused_linear.linear(layer, torch.randn(16, layer.in_features).bfloat16()) is not None


def test_fused_linear_declines_a_weight_replaced_since_load(tiny_checkpoint):
    """The plan holds the load-time weight's addresses: a layer whose weight buffer was replaced (another tensor)
    or became a parameter (a trainable twin) must take the chain, not read the old bytes."""
    from v4stack.modelio.loader import load_model

    if fused_linear._library() is None:
        pytest.skip("no C compiler")
    model = load_model(tiny_checkpoint, Numerics.fast_kernels(), progress=False)
    layer = model.layers[0].attn.wq_a
    x = torch.randn(1, layer.in_features).bfloat16()
    assert fused_linear.planned(layer) is not None and fused_linear.linear(layer, x) is not None
    layer.weight = layer.weight.clone()  # same values, another tensor: the plan is void
    assert fused_linear.planned(layer) is None and fused_linear.linear(layer, x) is None
    del layer._buffers["weight"]
    layer.weight = torch.nn.Parameter(torch.zeros(1), requires_grad=False)
    assert fused_linear.current_weight(layer) is None and fused_linear.planned(layer) is None
