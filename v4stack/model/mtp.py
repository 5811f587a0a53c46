"""The V4 multi-token-prediction block (model_spec.md §3.10): drafts the token after next.

    e = enorm(embed(next_ids))        [T, D]      (next_ids[t] = token t+1)
    h = hnorm(H)                      [T, hc, D]  (H: main model's final streams, before hc_head)
    X = e_proj(e)[:, None] + h_proj(h)
    X = Block(X)  (window-only attention with its own cache, non-hash MoE)
    logits = head(norm(hc_head(X)))   (embedding and head shared with the main model)
"""

from __future__ import annotations

import torch

from v4stack.config.model_config import ModelConfig
from v4stack.model.batch import ForwardBatch
from v4stack.model.block import Block
from v4stack.model.compute import Compute
from v4stack.model.linear import FP8, Linear
from v4stack.model.mhc import hc_head
from v4stack.model.norm import RMSNorm


class MTPBlock(Block):
    def __init__(self, cfg: ModelConfig, layer_id: int, compute: Compute) -> None:
        super().__init__(cfg, layer_id, compute)
        d = cfg.hidden_size
        self.e_proj = Linear(d, d, FP8, compute)
        self.h_proj = Linear(d, d, FP8, compute)
        self.enorm = RMSNorm(d, cfg.rms_norm_eps, ops=compute.ops)
        self.hnorm = RMSNorm(d, cfg.rms_norm_eps, ops=compute.ops)
        self.norm = RMSNorm(d, cfg.rms_norm_eps, ops=compute.ops)
        self.register_buffer("hc_head_fn", torch.empty(cfg.hc_mult, cfg.hc_mult * d, dtype=torch.float32))
        self.register_buffer("hc_head_base", torch.empty(cfg.hc_mult, dtype=torch.float32))
        self.register_buffer("hc_head_scale", torch.empty(1, dtype=torch.float32))

    def draft_hidden(self, embedded: torch.Tensor, streams: torch.Tensor, batch: ForwardBatch,
                     cache_index: int) -> torch.Tensor:
        """embedded [T, D] (embedding of the next ids), streams [T, hc, D] -> collapsed, normed [T, D]."""
        x = self.e_proj(self.enorm(embedded)).unsqueeze(1) + self.h_proj(self.hnorm(streams))
        x = super().forward(x, batch, cache_index)
        x = hc_head(x, self.hc_head_fn, self.hc_head_scale, self.hc_head_base, self.hc, self.compute.ops)
        return self.norm(x)
