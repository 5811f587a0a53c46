"""Fast MoE: routing on the prepared fp32 gate weight, and every routed expert of a step as one grouped pass:
(token, slot) pairs sorted by expert, the activation quantised once, one fused w1|w3 GEMM and one w2 GEMM per
expert that has tokens, one index_add back. The expert counts cross to the host once per layer (not per expert)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from v4stack.ops.fast import moe_kernel, ordered_gemm, route_kernel
from v4stack.ops.fast.linear import act_quant, project
from v4stack.ops.fast.prepare import LOWBIT
from v4stack.ops.reference import moe as reference_moe
from v4stack.ops.reference.moe import gate_scores, swiglu


def route(gate, x: torch.Tensor, token_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``ops.reference.moe.route`` on the prepared fp32 gate weight, its GEMM in the reference's summation order
    (``ops.fast.ordered_gemm.linear_fp32``: its C kernels for every row count), so a step routes like the reference.
    Decode-sized calls (``route_kernel.MAX_ROWS`` rows, ``MAX_SCORES`` scores) then route in one C call
    (``ops.fast.route_kernel``: the reference's tie rule, libm's transcendentals: weights within a few fp32 ulps of
    the reference's); longer calls and the fallback take ``route_from_logits``."""
    weight = getattr(gate, "prepared", None)
    if weight is None:
        return reference_moe.route(gate, x, token_ids)
    logits = ordered_gemm.linear_fp32(x.float(), weight)  # [T, E]
    fast = route_kernel.route_rows(gate, logits, token_ids)
    return fast if fast is not None else route_from_logits(gate, logits, token_ids)


def route_from_logits(gate, logits: torch.Tensor, token_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The torch path of ``route`` from the gate's logits [T, E] fp32 -> (weights [T, k] fp32, experts [T, k]
    int64): the reference's ops with torch.topk instead of a stable sort (fp32 router scores essentially never
    tie; CPU topk has no tie order)."""
    scores = gate_scores(logits, gate.score_func)
    if gate.hashed:
        experts = gate.tid2eid[token_ids.to(gate.tid2eid.device)].long()
    else:
        experts = torch.topk(scores + gate.bias, gate.topk, dim=-1).indices
    weights = scores.gather(1, experts)
    if gate.score_func != "softmax":
        weights = weights / weights.sum(-1, keepdim=True)
    return weights * gate.route_scale, experts


def _expert_rows(expert, xq: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    """xq [n, D] (already quantised) -> [n, D] in the compute dtype, on the expert's fused w1|w3 (fallback copy)
    or its w1 and w3 read directly, then its w2."""
    c = expert.compute
    w13 = getattr(expert, "prepared_w13", None)
    if w13 is not None:
        h = F.linear(xq.to(w13.dtype), w13).to(c.dtype).float()  # [n, 2I], rounded like the reference's outputs
        inter = h.shape[-1] // 2
        gate, up = h[:, :inter], h[:, inter:]
    else:
        gate, up = (project(w, xq).to(c.dtype).float() for w in (expert.w1, expert.w3))
    h = swiglu(gate, up, expert.limit)
    if weights is not None:
        h = weights * h
    h = h.to(c.dtype)  # the reference rounds the hidden activation to the compute dtype before w2
    hq = act_quant(h, c.act_block, c.dtype) if c.quant else h
    return project(expert.w2, hq).to(c.dtype)


def moe_experts(moe, x: torch.Tensor, weights: torch.Tensor, experts: torch.Tensor) -> torch.Tensor:
    """``ops.reference.moe.moe_experts``'s contract: routed + shared experts, [T, D] in x.dtype."""
    fused = moe_kernel.run_layer(moe, x, weights, experts)  # a decode step: act quant + the whole layer, one C call
    if fused is not None:
        return fused if fused.dtype == x.dtype else fused.to(x.dtype)
    shared = moe.shared_experts
    if getattr(shared, "prepared_w13", None) is None and not getattr(shared.w1, LOWBIT, False):
        return reference_moe.moe_experts(moe, x, weights, experts)
    c = moe.compute
    xq = act_quant(x, c.act_block, c.dtype) if c.quant else x.to(c.dtype)
    fused = moe_kernel.run(moe, xq, weights, experts)  # a decode step whose D the C act_quant does not take
    if fused is not None:
        return fused if fused.dtype == x.dtype else fused.to(x.dtype)
    t, k = experts.shape
    flat = experts.flatten()
    order = torch.argsort(flat, stable=True)  # [T*k] pairs grouped by expert
    tokens = order // k
    counts = torch.bincount(flat, minlength=len(moe.experts)).tolist()  # the one host sync of the layer
    xs, ws = xq[tokens], weights.flatten()[order, None]
    out = torch.empty(t * k, x.shape[-1], dtype=c.dtype, device=x.device)
    start = 0
    for e, n in enumerate(counts):
        if n:
            out[start:start + n] = _expert_rows(moe.experts[e], xs[start:start + n], ws[start:start + n])
            start += n
    y = torch.zeros(x.shape, dtype=torch.float32, device=x.device)
    y.index_add_(0, tokens, out.float())  # per token in ascending expert order, then the shared expert: the
    y += _expert_rows(moe.shared_experts, xq, None).float()  # reference's fp32 summation order
    return y.to(x.dtype)
