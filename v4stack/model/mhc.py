"""Manifold-constrained hyper-connections (mHC, model_spec.md §3.7): hc_mult residual streams per token.

    x^ = flatten(X) fp32 [T, hc*D];  m = (fn x^) * rsqrt(mean(x^^2) + eps)        [T, (2+hc)*hc]
    pre, post, comb = split_sinkhorn(m, scale, base)
    sublayer input  y = sum_i pre_i X_i                                            [T, D]
    new streams     X'_k = post_k F(y) + sum_j comb_jk X_j                          [T, hc, D]
The head collapses the streams with its own sigmoid weights (no Sinkhorn, no post).
Parameters live on the owning module under their checkpoint names (``hc_attn_fn`` ...); these functions
only compute.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from v4stack.ops.reference.mixing import hc_mixes
from v4stack.ops.table import OpTable

MIX_SPLITS = 2  # pre and post vectors, besides the hc x hc comb matrix


def mix_width(hc: int) -> int:
    return (MIX_SPLITS + hc) * hc


@dataclass(frozen=True)
class HcShape:
    hc: int
    iters: int
    norm_eps: float
    hc_eps: float


def _mixes(x: torch.Tensor, fn: torch.Tensor, eps: float) -> torch.Tensor:
    """Streams x [T, hc, D] -> fp32 mixes [T, rows of fn] (``ops.reference.mixing.hc_mixes``)."""
    return hc_mixes(x, fn, eps)


def hc_pre(x: torch.Tensor, fn: torch.Tensor, scale: torch.Tensor, base: torch.Tensor, shape: HcShape,
           ops: OpTable) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Streams x [T, hc, D] -> (sublayer input [T, D] in x.dtype, post [T, hc], comb [T, hc, hc]) fp32."""
    return ops.hc_pre(x, fn, scale, base, shape, ops)


def hc_post(out: torch.Tensor, residual: torch.Tensor, post: torch.Tensor, comb: torch.Tensor,
            ops: OpTable) -> torch.Tensor:
    """Sublayer output [T, D] + streams [T, hc, D] -> new streams [T, hc, D] in out.dtype."""
    return ops.hc_post(out, residual, post, comb, ops)


def hc_head(x: torch.Tensor, fn: torch.Tensor, scale: torch.Tensor, base: torch.Tensor,
            shape: HcShape, ops: OpTable) -> torch.Tensor:
    """Streams [T, hc, D] -> [T, D]: y = sum_i (sigmoid(m_i * scale + base_i) + hc_eps) X_i."""
    return ops.hc_head(x, fn, scale, base, shape, ops)
