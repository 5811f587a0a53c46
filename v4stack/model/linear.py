"""Linear layers over weights kept in their checkpoint format (FP8 e4m3 / FP4 e2m1 / bf16).

Buffers are named exactly like the checkpoint (``weight`` and, for quantised formats, ``scale``), so the
module tree's state_dict keys *are* the official tensor names. Dequantisation happens inside the op (``ops.linear``).
"""

from __future__ import annotations

import torch
from torch import nn

from v4stack.model.compute import Compute
from v4stack.ops.reference.layers import DENSE, FP4, FP8
from v4stack.weights.formats import FP4_BLOCK, dequant_fp8_weight

__all__ = ["DENSE", "FP4", "FP8", "Linear"]


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


class Linear(nn.Module):
    """y = x W^T for W [out, in] stored as FP8 (+UE8M0 block scale), FP4 (+UE8M0 1x32 scale) or dense.

    ``dense_dtype`` is the checkpoint dtype of a dense weight (bf16 for most, fp32 for some).
    ``dense_compute``: dense weights are applied in fp32 instead of the compute dtype (compressor projections).
    """

    def __init__(self, in_features: int, out_features: int, fmt: str, compute: Compute,
                 dense_dtype: torch.dtype = torch.bfloat16, dense_compute_fp32: bool = False) -> None:
        super().__init__()
        self.in_features, self.out_features, self.fmt, self.compute = in_features, out_features, fmt, compute
        self.dense_compute_fp32 = dense_compute_fp32
        block = compute.weight_block
        if fmt == FP8:
            self.register_buffer("weight", torch.empty(out_features, in_features, dtype=torch.float8_e4m3fn))
            self.register_buffer("scale", torch.empty(_ceil_div(out_features, block), _ceil_div(in_features, block),
                                                      dtype=torch.float8_e8m0fnu))
        elif fmt == FP4:
            self.register_buffer("weight", torch.empty(out_features, in_features // 2, dtype=torch.int8))
            self.register_buffer("scale", torch.empty(out_features, in_features // FP4_BLOCK,
                                                      dtype=torch.float8_e8m0fnu))
        elif fmt == DENSE:
            self.register_buffer("weight", torch.empty(out_features, in_features, dtype=dense_dtype))
        else:
            raise ValueError(f"unknown weight format {fmt!r}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [..., in] -> [..., out] in the compute dtype (fp32 for ``dense_compute_fp32``)."""
        return self.compute.ops.linear(self, x)

    def dense_weight(self, dtype: torch.dtype) -> torch.Tensor:
        """The weight as a dense [out, in] tensor of ``dtype`` (exact for FP8 -> bf16/fp32)."""
        if self.fmt == FP8:
            return dequant_fp8_weight(self.weight, self.scale, self.compute.weight_block).to(dtype)
        if self.fmt == DENSE:
            return self.weight.to(dtype)
        raise ValueError("dense_weight is only defined for FP8 and dense weights")

    def extra_repr(self) -> str:
        return f"{self.in_features} -> {self.out_features}, {self.fmt}"
