"""One V4.1 block with single-pass mHC (model_spec.md §3.7): attention then MoE, each site mixing the streams.

    (pre_a, post_a, C_a) = mixes(X)        y = sum_i pre_in_i X_i   (pre_in: the previous block's pre_f)
    X'  = post_a attn(attn_norm(y)) + C_a X
    (pre_f, post_f, C_f) = mixes(X')       y' = sum_i pre_a_i X'_i
    X'' = post_f MoE(ffn_norm(y')) + C_f X'             returns (X'', pre_f)
Block 0 receives the one-hot mix [1, 0, ..., 0]; the head collapses the last state with the last pre_f.
The maths of each step is the V4 op (``hc_split_sinkhorn``, ``hc_collapse``, ``hc_expand``); only which pre
vector collapses which state differs from V4.
"""

from __future__ import annotations

import torch
from torch import nn

from v4stack.config.v41_config import V41Config
from v4stack.model.block import hc_shape, register_hc_site
from v4stack.model.compute import Compute
from v4stack.model.mhc import _mixes, hc_post
from v4stack.model.moe import MoE
from v4stack.model.norm import RMSNorm
from v4stack.model.v41.attention import V41Attention
from v4stack.model.v41.engram import Engram


def one_hot_mix(num_tokens: int, hc: int, device: torch.device) -> torch.Tensor:
    """The pre-mix block 0 (and each DSpark draft block) starts from: stream 0 only, fp32 [S, hc]."""
    mix = torch.zeros(num_tokens, hc, dtype=torch.float32, device=device)
    mix[:, 0] = 1.0
    return mix


class V41Block(nn.Module):
    def __init__(self, cfg: V41Config, layer_id: int, compute: Compute, attn: V41Attention | None = None,
                 moe_cfg: V41Config | None = None) -> None:
        super().__init__()
        self.layer_id, self.compute, self.hc = layer_id, compute, hc_shape(cfg)
        self.attn = attn if attn is not None else V41Attention(cfg, layer_id, compute)
        self.ffn = MoE(moe_cfg or cfg, layer_id, compute)
        self.attn_norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.ffn_norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        register_hc_site(self, "attn", cfg)
        register_hc_site(self, "ffn", cfg)
        self.engram = None
        if cfg.engram is not None and layer_id in cfg.engram.layer_ids:
            self.engram = Engram(cfg, cfg.engram.layer_ids.index(layer_id), compute)

    def site(self, x: torch.Tensor, name: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(pre, post, comb) of mHC site ``name`` for streams x [S, hc, D]."""
        s, ops = self.hc, self.compute.ops
        fn, scale, base = (getattr(self, f"hc_{name}_{k}") for k in ("fn", "scale", "base"))
        return ops.hc_split_sinkhorn(_mixes(x, fn, s.norm_eps), scale, base, s.hc, s.iters, s.hc_eps)

    def forward(self, x: torch.Tensor, pre_in: torch.Tensor, token_ids: torch.Tensor, attend) -> tuple:
        """x [S, hc, D], pre_in [S, hc] -> (streams [S, hc, D], pre_f [S, hc]); ``attend(normed [S, D])`` runs
        this block's attention (the caller binds the sequence state)."""
        ops = self.compute.ops
        pre_a, post_a, comb_a = self.site(x, "attn")
        y = ops.hc_collapse(x, pre_in).to(x.dtype)
        x = hc_post(attend(self.attn_norm(y)), x, post_a, comb_a, ops)
        pre_f, post_f, comb_f = self.site(x, "ffn")
        y = ops.hc_collapse(x, pre_a).to(x.dtype)
        return hc_post(self.ffn(self.ffn_norm(y), token_ids), x, post_f, comb_f, ops), pre_f
