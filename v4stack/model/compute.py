"""What every layer needs to know about *how* to compute: the op table and the numerics.

Passed explicitly to each module at construction (no module globals), so two models with different
numerics or platforms can live in one process.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from v4stack.config.numerics import Numerics
from v4stack.ops.reference.quant import KV_QUANT_BLOCK  # noqa: F401  (re-exported: the model's KV QAT block)
from v4stack.ops.table import OpTable

INDEX_QUANT_BLOCK = 32  # V4 indexer q/k QAT: FP4 blocks of 32 with UE8M0 scales


@dataclass(frozen=True)
class Compute:
    """ops: the platform's op table; weight_block: FP8 weight block (128 in V4); act_block: activation
    quantisation block along K (128 in V4)."""

    ops: OpTable
    numerics: Numerics
    weight_block: int = 128
    act_block: int = 128

    @property
    def dtype(self) -> torch.dtype:
        return self.numerics.compute_dtype

    @property
    def quant(self) -> bool:
        return self.numerics.simulate_quant
