"""The op table: the small set of hot ops a platform may replace, bundled as one frozen object.

The model receives an ``OpTable`` when it is built and calls ops only through it, so a CUDA (Triton) or
Ascend (torch_npu) backend plugs in by returning a table with some entries replaced; the model
definition never changes. ``reference_ops()`` is the plain-PyTorch table every fast entry is tested against.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Callable

from v4stack.ops.reference import attention, gemm, hadamard, mixing, quant


@dataclass(frozen=True)
class OpTable:
    """Each field is a callable with the contract of the reference function named in its default."""

    linear_fp8: Callable = gemm.linear_fp8
    linear_fp4: Callable = gemm.linear_fp4
    linear_dense: Callable = gemm.linear_dense
    quant_dequant_fp8: Callable = quant.quant_dequant_fp8
    quant_dequant_fp4: Callable = quant.quant_dequant_fp4
    quant_dequant_fp4_e4m3_scale: Callable = quant.quant_dequant_fp4_e4m3_scale  # V4.1 compressed KV
    hadamard_rotate: Callable = hadamard.hadamard_rotate
    sparse_attention: Callable = attention.sparse_attention
    hc_split_sinkhorn: Callable = mixing.hc_split_sinkhorn
    hc_collapse: Callable = mixing.hc_collapse
    hc_expand: Callable = mixing.hc_expand

    def with_overrides(self, **ops: Callable) -> "OpTable":
        """A copy with some ops replaced; unknown names raise (a typo must not silently fall back)."""
        known = {f.name for f in fields(self)}
        unknown = sorted(set(ops) - known)
        if unknown:
            raise KeyError(f"unknown ops {unknown}; known: {sorted(known)}")
        return replace(self, **ops)


def reference_ops() -> OpTable:
    return OpTable()
