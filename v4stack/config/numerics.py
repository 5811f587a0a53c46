"""How the model is computed: the compute dtype and whether the reference's QAT simulation points run.

The released weights were trained with quantisation-aware training, so the default reproduces the
official reference: bf16 activations plus every quant-dequant simulation point (model_spec.md §3.12).
``Numerics.exact_fp32()`` is the smooth oracle mode (fp32, all simulation points off). ``Numerics.fast()`` keeps the
reference's dtype and every simulation point but lets the platform compute them with fast kernels (``kernels``
'fast': one GEMM per linear on weights prepared at load instead of exact-order block sums, dense masked attention),
so it matches the reference to bf16 noise, not bit for bit; it is the default of generate, the engine and the
server.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

KERNELS = ("exact", "fast")
NAMES = ("fast", "reference", "fp32")  # the user-facing modes (``from_name``)


@dataclass(frozen=True)
class Numerics:
    """compute_dtype: activations and residual streams (the reference's default dtype).

    simulate_quant: FP8 activation quant before FP8/FP4 GEMMs, FP8 window/compressed KV on the non-rope
    dims, Hadamard + FP4 indexer q/k, and bf16 rounding of the attention probabilities before P.V.
    """

    compute_dtype: torch.dtype = torch.bfloat16
    simulate_quant: bool = True
    kernels: str = "exact"  # 'exact': the reference's order of operations; 'fast': the platform's fast table

    def __post_init__(self) -> None:
        if self.compute_dtype not in (torch.bfloat16, torch.float32):
            raise ValueError(f"compute_dtype must be bfloat16 or float32, got {self.compute_dtype}")
        if self.kernels not in KERNELS:
            raise ValueError(f"kernels must be one of {KERNELS}, got {self.kernels!r}")

    @property
    def fast(self) -> bool:
        return self.kernels == "fast"

    @classmethod
    def reference(cls) -> "Numerics":
        return cls(torch.bfloat16, True)

    @classmethod
    def exact_fp32(cls) -> "Numerics":
        return cls(torch.float32, False)

    @classmethod
    def fast_kernels(cls) -> "Numerics":
        return cls(torch.bfloat16, True, "fast")

    @classmethod
    def from_name(cls, name: str) -> "Numerics":
        """'fast' (reference numerics on fast kernels), 'reference' (bf16 + QAT simulation in the official
        kernels' order) or 'fp32' (no simulation)."""
        table = {"fast": cls.fast_kernels(), "reference": cls.reference(), "bf16": cls.reference(),
                 "fp32": cls.exact_fp32()}
        if name not in table:
            raise ValueError(f"unknown numerics {name!r}; choose one of {sorted(table)}")
        return table[name]
