"""DeepSeekMoE of V4 (model_spec.md §3.8): sqrtsoftplus router, noaux_tc selection bias, hash-routed
bootstrap layers, renormalised top-k weights times routed_scaling_factor, clamped SwiGLU experts.

    s = sqrt(softplus(x W_g^T))                      [T, E]  fp32
    idx = topk(s + bias) | tid2eid[token_id]         [T, k]
    w = s[idx] / sum s[idx] * route_scale            [T, k]  (bias never enters w)
    y = sum_e w_e * Expert_e(x) + Shared(x)          fp32 accumulate
    Expert(x) = w2( silu(min(w1 x, L)) * clamp(w3 x, -L, L) )

The modules hold the checkpoint tensors; the math is the op table's ``route`` and ``moe_experts`` (reference:
``ops.reference.moe``), so a platform can run all experts of a step as one grouped op.
"""

from __future__ import annotations

import torch
from torch import nn

from v4stack.config.model_config import ModelConfig
from v4stack.model.compute import Compute
from v4stack.model.linear import FP4, FP8, Linear
from v4stack.ops.reference.moe import expert_forward


class Gate(nn.Module):
    """Router of one MoE layer; hash layers carry ``tid2eid`` [vocab, k] instead of ``bias`` [E]."""

    def __init__(self, cfg: ModelConfig, hashed: bool, compute: Compute) -> None:
        super().__init__()
        self.topk, self.score_func, self.route_scale = cfg.num_experts_per_tok, cfg.scoring_func, cfg.routed_scaling_factor
        self.hashed, self.compute = hashed, compute
        self.register_buffer("weight", torch.empty(cfg.n_routed_experts, cfg.hidden_size, dtype=torch.bfloat16))
        if hashed:
            self.register_buffer("tid2eid", torch.empty(cfg.vocab_size, cfg.num_experts_per_tok, dtype=torch.int64))
        else:
            self.register_buffer("bias", torch.empty(cfg.n_routed_experts, dtype=torch.float32))

    def forward(self, x: torch.Tensor, token_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x [T, D], token_ids [T] -> (weights [T, k] fp32, expert ids [T, k] int64)."""
        return self.compute.ops.route(self, x, token_ids)


class Expert(nn.Module):
    """SwiGLU expert with the V4 clamp; ``fmt`` is FP4 for routed experts of released checkpoints."""

    def __init__(self, dim: int, inter: int, fmt: str, limit: float, compute: Compute) -> None:
        super().__init__()
        self.limit, self.compute = limit, compute
        self.w1 = Linear(dim, inter, fmt, compute)
        self.w2 = Linear(inter, dim, fmt, compute)
        self.w3 = Linear(dim, inter, fmt, compute)

    def forward(self, x: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
        """x [N, D] -> [N, D]; routed experts scale the hidden activation by ``weights`` [N, 1] before w2."""
        return expert_forward(self, x, weights)


class MoE(nn.Module):
    def __init__(self, cfg: ModelConfig, layer_id: int, compute: Compute) -> None:
        super().__init__()
        self.compute = compute
        self.gate = Gate(cfg, cfg.is_hash_layer(layer_id), compute)
        expert_fmt = FP4 if cfg.quant.expert_dtype == "fp4" else FP8
        dim, inter, limit = cfg.hidden_size, cfg.moe_intermediate_size, cfg.swiglu_limit
        self.experts = nn.ModuleList(Expert(dim, inter, expert_fmt, limit, compute) for _ in range(cfg.n_routed_experts))
        self.shared_experts = Expert(dim, inter, FP8, limit, compute)

    def forward(self, x: torch.Tensor, token_ids: torch.Tensor) -> torch.Tensor:
        """x [T, D], token_ids [T] -> [T, D] in the compute dtype."""
        weights, experts = self.gate(x, token_ids)
        return self.compute.ops.moe_experts(self, x, weights, experts)
