"""Straight-through fake quantisation: the forward sees the weight exactly as the checkpoint will store it,
the backward treats the rounding as identity (so fp32 master weights keep learning below the grid step).

    fake(w) = w + (dequant(quant(w)) - w).detach()

FP8: e4m3 with one UE8M0 scale per 128x128 block; FP4: e2m1 with one UE8M0 scale per 1x32 block; BF16: a
round to bfloat16. Each uses the same quantisers as the checkpoint writer, so exporting a trained weight
yields exactly the values the training forward saw.
"""

from __future__ import annotations

import torch

from v4stack.weights.formats import FP4_BLOCK, dequant_fp8_weight, e2m1_block_values, quantize_fp8_weight


def _straight_through(w: torch.Tensor, rounded: torch.Tensor) -> torch.Tensor:
    return w + (rounded - w).detach()


def fake_fp8(w: torch.Tensor, block: int) -> torch.Tensor:
    """fp32 [out, in] -> fp32 [out, in] on the FP8 block grid (gradient: identity)."""
    with torch.no_grad():
        q, scale = quantize_fp8_weight(w.detach(), block)
        rounded = dequant_fp8_weight(q, scale, block).float()
    return _straight_through(w, rounded)


def fake_fp4(w: torch.Tensor) -> torch.Tensor:
    """fp32 [out, in] -> fp32 [out, in] on the e2m1 1x32 grid (gradient: identity); in % 32 == 0."""
    with torch.no_grad():
        values, scale = e2m1_block_values(w.detach().float().unflatten(1, (-1, FP4_BLOCK)))
        rounded = (values * scale).flatten(1)
    return _straight_through(w, rounded)


def fake_cast(w: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """fp32 -> fp32 holding values representable in ``dtype`` (bf16 for most dense checkpoint tensors)."""
    if dtype == torch.float32:
        return w
    return _straight_through(w, w.detach().to(dtype).float())


class FakeCast(torch.nn.Module):
    """A ``torch.nn.utils.parametrize`` parametrization: the tensor as its checkpoint dtype will hold it."""

    def __init__(self, dtype: torch.dtype) -> None:
        super().__init__()
        self.dtype = dtype

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return fake_cast(w, self.dtype)
