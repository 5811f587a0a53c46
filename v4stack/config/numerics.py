"""How the model is computed: the compute dtype and whether the reference's QAT simulation points run.

The released weights were trained with quantisation-aware training, so the default reproduces the
official reference: bf16 activations plus every quant-dequant simulation point (model_spec.md §3.12).
``Numerics.exact_fp32()`` is the smooth oracle mode (fp32, all simulation points off).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Numerics:
    """compute_dtype: activations and residual streams (the reference's default dtype).

    simulate_quant: FP8 activation quant before FP8/FP4 GEMMs, FP8 window/compressed KV on the non-rope
    dims, Hadamard + FP4 indexer q/k, and bf16 rounding of the attention probabilities before P.V.
    """

    compute_dtype: torch.dtype = torch.bfloat16
    simulate_quant: bool = True

    def __post_init__(self) -> None:
        if self.compute_dtype not in (torch.bfloat16, torch.float32):
            raise ValueError(f"compute_dtype must be bfloat16 or float32, got {self.compute_dtype}")

    @classmethod
    def reference(cls) -> "Numerics":
        return cls(torch.bfloat16, True)

    @classmethod
    def exact_fp32(cls) -> "Numerics":
        return cls(torch.float32, False)

    @classmethod
    def from_name(cls, name: str) -> "Numerics":
        """'reference' (bf16 + QAT simulation, default) or 'fp32' (no simulation)."""
        table = {"reference": cls.reference(), "bf16": cls.reference(), "fp32": cls.exact_fp32()}
        if name not in table:
            raise ValueError(f"unknown numerics {name!r}; choose one of {sorted(table)}")
        return table[name]
