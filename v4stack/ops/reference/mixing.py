"""mHC mixing coefficients: split the per-token mixes into pre / post / Sinkhorn-normalised comb (§3.7)."""

from __future__ import annotations

import torch


def hc_split_sinkhorn(mixes: torch.Tensor, hc_scale: torch.Tensor, hc_base: torch.Tensor, hc: int, iters: int,
                      eps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """mixes [T, (2+hc)*hc] fp32 -> pre [T, hc], post [T, hc], comb [T, hc(src j), hc(dst k)].

    pre = sigmoid(m*a0 + b) + eps; post = 2 sigmoid(m*a1 + b); comb = softmax over k (+eps), then a column
    normalisation, then (iters - 1) x (row, column) normalisations, each with +eps in the denominator.

    The softmax is written out as exp(c - max) / sum with a true division, like the official kernel; torch's
    CPU ``softmax`` (and exp * (1/sum)) differ from it by an ulp often enough to flip bf16 roundings of the
    residual streams downstream (golden pro_like prompt position 16 was off by 0.13).
    """
    pre = torch.sigmoid(mixes[:, :hc] * hc_scale[0] + hc_base[:hc]) + eps
    post = 2 * torch.sigmoid(mixes[:, hc:2 * hc] * hc_scale[1] + hc_base[hc:2 * hc])
    comb = mixes[:, 2 * hc:].unflatten(-1, (hc, hc)) * hc_scale[2] + hc_base[2 * hc:].view(hc, hc)
    comb = torch.exp(comb - comb.amax(-1, keepdim=True))
    comb = comb / comb.sum(-1, keepdim=True) + eps
    comb = comb / (comb.sum(-2, keepdim=True) + eps)
    for _ in range(iters - 1):
        comb = comb / (comb.sum(-1, keepdim=True) + eps)
        comb = comb / (comb.sum(-2, keepdim=True) + eps)
    return pre, post, comb


def hc_collapse(x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Streams x [T, hc, D] and weights [T, hc] fp32 -> fp32 [T, D] = sum_i weights_i X_i."""
    return (weights.unsqueeze(-1) * x.float()).sum(dim=1)


def hc_expand(out: torch.Tensor, residual: torch.Tensor, post: torch.Tensor, comb: torch.Tensor) -> torch.Tensor:
    """Sublayer output [T, D], streams [T, hc, D], post [T, hc], comb [T, hc(j), hc(k)] -> fp32 [T, hc, D]:
    X'_k = post_k out + sum_j comb[j, k] X_j."""
    mixed = (comb.unsqueeze(-1) * residual.float().unsqueeze(2)).sum(dim=1)
    return post.unsqueeze(-1) * out.float().unsqueeze(1) + mixed


def hc_mixes(x: torch.Tensor, fn: torch.Tensor, eps: float, linear=torch.nn.functional.linear) -> torch.Tensor:
    """Streams x [T, hc, D] -> fp32 [T, rows of fn] = (fn flat(x)) * rsqrt(mean(flat(x)^2) + eps); ``linear``:
    the fp32 GEMM (the op table's ``fp32_linear``; default the BLAS)."""
    flat = x.flatten(1).float()  # [T, hc*D]
    return linear(flat, fn) * torch.rsqrt(flat.square().mean(-1, keepdim=True) + eps)


def hc_pre(x: torch.Tensor, fn: torch.Tensor, scale: torch.Tensor, base: torch.Tensor, shape,
           ops) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Streams x [T, hc, D] -> (sublayer input [T, D] in x.dtype, post [T, hc], comb [T, hc, hc]) fp32.
    ``shape``: ``model.mhc.HcShape``; the split and collapse go through ``ops`` (the caller's table)."""
    mixes = hc_mixes(x, fn, shape.norm_eps, ops.fp32_linear)
    pre, post, comb = ops.hc_split_sinkhorn(mixes, scale, base, shape.hc, shape.iters, shape.hc_eps)
    return ops.hc_collapse(x, pre).to(x.dtype), post, comb


def hc_post(out: torch.Tensor, residual: torch.Tensor, post: torch.Tensor, comb: torch.Tensor,
            ops) -> torch.Tensor:
    """Sublayer output [T, D] + streams [T, hc, D] -> new streams [T, hc, D] in out.dtype."""
    return ops.hc_expand(out, residual, post, comb).to(out.dtype)


def hc_head(x: torch.Tensor, fn: torch.Tensor, scale: torch.Tensor, base: torch.Tensor, shape, ops) -> torch.Tensor:
    """Streams [T, hc, D] -> [T, D]: y = sum_i (sigmoid(m_i * scale + base_i) + hc_eps) X_i."""
    pre = torch.sigmoid(hc_mixes(x, fn, shape.norm_eps, ops.fp32_linear) * scale + base) + shape.hc_eps
    return ops.hc_collapse(x, pre).to(x.dtype)
