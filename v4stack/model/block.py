"""One V4 transformer block: attention and MoE sublayers, each wrapped by mHC pre/post mixing."""

from __future__ import annotations

import torch
from torch import nn

from v4stack.config.model_config import ModelConfig
from v4stack.model.attention import Attention
from v4stack.model.batch import ForwardBatch
from v4stack.model.compute import Compute
from v4stack.model.mhc import HcShape, hc_post, hc_pre, mix_width
from v4stack.model.moe import MoE
from v4stack.model.norm import RMSNorm

HC_SCALES = 3  # one scale each for pre, post and comb


def register_hc_site(module: nn.Module, site: str, cfg: ModelConfig) -> None:
    """Checkpoint tensors ``hc_{site}_fn`` [(2+hc)*hc, hc*D], ``_base`` [(2+hc)*hc], ``_scale`` [3] (fp32)."""
    mix = mix_width(cfg.hc_mult)
    module.register_buffer(f"hc_{site}_fn", torch.empty(mix, cfg.hc_mult * cfg.hidden_size, dtype=torch.float32))
    module.register_buffer(f"hc_{site}_base", torch.empty(mix, dtype=torch.float32))
    module.register_buffer(f"hc_{site}_scale", torch.empty(HC_SCALES, dtype=torch.float32))


def hc_shape(cfg: ModelConfig) -> HcShape:
    return HcShape(cfg.hc_mult, cfg.hc_sinkhorn_iters, cfg.rms_norm_eps, cfg.hc_eps)


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig, layer_id: int, compute: Compute) -> None:
        super().__init__()
        self.layer_id, self.compute, self.hc = layer_id, compute, hc_shape(cfg)
        self.attn = Attention(cfg, layer_id, compute)
        self.ffn = MoE(cfg, layer_id, compute)
        self.attn_norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, ops=compute.ops)
        self.ffn_norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, ops=compute.ops)
        register_hc_site(self, "attn", cfg)
        register_hc_site(self, "ffn", cfg)

    def forward(self, x: torch.Tensor, batch: ForwardBatch, cache_index: int) -> torch.Tensor:
        """Streams x [T, hc, D] -> [T, hc, D]; ``cache_index`` selects this layer's cache in each sequence."""
        ops = self.compute.ops
        y, post, comb = hc_pre(x, self.hc_attn_fn, self.hc_attn_scale, self.hc_attn_base, self.hc, ops)
        x = hc_post(self.attn(self.attn_norm(y), batch, cache_index), x, post, comb, ops)
        y, post, comb = hc_pre(x, self.hc_ffn_fn, self.hc_ffn_scale, self.hc_ffn_base, self.hc, ops)
        return hc_post(self.ffn(self.ffn_norm(y), batch.token_ids), x, post, comb, ops)
