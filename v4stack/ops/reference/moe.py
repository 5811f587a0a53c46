"""DeepSeekMoE routing and experts (model_spec.md §3.8), as op-table entries over the ``model.moe`` modules.

    s = score_func(x W_g^T)                          [T, E]  fp32
    idx = topk(s + bias) | tid2eid[token_id]         [T, k]  (ties: lower expert id)
    w = s[idx] / sum s[idx] * route_scale            [T, k]  (no renormalisation for softmax)
    y = sum_e w_e * Expert_e(x) + Shared(x)          fp32 accumulate, returned in x.dtype
    Expert(x) = w2( w * silu(min(w1 x, L)) * clamp(w3 x, -L, L) )
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from v4stack.ops.reference.blas_order import linear_fp32
from v4stack.ops.reference.indexer import topk_lower_index_on_ties


def gate_scores(logits: torch.Tensor, score_func: str) -> torch.Tensor:
    """Router logits [T, E] fp32 -> scores [T, E] fp32 (before the selection bias)."""
    if score_func == "softmax":
        return logits.softmax(-1)
    if score_func == "sigmoid":
        return logits.sigmoid()
    return F.softplus(logits).sqrt()


def route(gate, x: torch.Tensor, token_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``gate`` (``model.moe.Gate``), x [T, D], token_ids [T] -> (weights [T, k] fp32, expert ids [T, k] int64)."""
    scores = gate_scores(linear_fp32(x.float(), gate.weight.float()), gate.score_func)
    if gate.hashed:
        experts = gate.tid2eid[token_ids.to(gate.tid2eid.device)].long()
    else:
        experts = topk_lower_index_on_ties(scores + gate.bias, gate.topk)
    weights = scores.gather(1, experts)
    if gate.score_func != "softmax":
        weights = weights / weights.sum(-1, keepdim=True)
    return weights * gate.route_scale, experts


def swiglu(gate: torch.Tensor, up: torch.Tensor, limit: float) -> torch.Tensor:
    """fp32 silu(min(gate, L)) * clamp(up, -L, L) (no clamp when L <= 0)."""
    if limit > 0:
        up = up.clamp(-limit, limit)
        gate = gate.clamp(max=limit)
    return F.silu(gate) * up


def expert_forward(expert, x: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """``expert`` (``model.moe.Expert``), x [N, D] -> [N, D] in the compute dtype; routed experts scale the hidden
    activation by ``weights`` [N, 1] before w2."""
    h = swiglu(expert.w1(x).float(), expert.w3(x).float(), expert.limit)
    if weights is not None:
        h = weights * h
    return expert.w2(h.to(expert.compute.dtype))


def moe_experts(moe, x: torch.Tensor, weights: torch.Tensor, experts: torch.Tensor) -> torch.Tensor:
    """``moe`` (``model.moe.MoE``), x [T, D], routing weights [T, k] fp32 and expert ids [T, k] -> routed + shared
    experts [T, D] in x.dtype (summed in fp32, routed experts in ascending id order, then the shared one)."""
    y = torch.zeros(x.shape, dtype=torch.float32, device=x.device)
    counts = torch.bincount(experts.flatten(), minlength=len(moe.experts)).tolist()
    for e, count in enumerate(counts):
        if count == 0:
            continue
        rows, slot = torch.where(experts == e)
        y[rows] += expert_forward(moe.experts[e], x[rows], weights[rows, slot, None]).float()
    y += expert_forward(moe.shared_experts, x).float()
    return y.to(x.dtype)
