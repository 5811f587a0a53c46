"""V4.1 KV compressor of a kv-source layer (model_spec.md §3.6): no position bias, no overlapping groups.

  ratio 1:  latent_p = norm(wkv x_p)                         wkv bf16, computed in bf16, no state
  ratio r:  a_p = wkv x_p, g_p = wgate x_p (fp32 weights)    entry j = norm(sum_i softmax_i(g)[c] a[c])
            over the r tokens of group j, per channel c; the open group's raw rows wait in the state.
The latent is returned *before* RoPE: the layer's indexer derives its keys from it, then the attention
applies RoPE at position j*r and the FP4 QAT of the compressed KV.
"""

from __future__ import annotations

import torch
from torch import nn

from v4stack.model.compute import Compute
from v4stack.model.linear import DENSE, Linear
from v4stack.model.norm import RMSNorm
from v4stack.model.v41.state import V41State  # or PagedV41State: the same storage methods


class V41Compressor(nn.Module):
    def __init__(self, dim: int, head_dim: int, ratio: int, eps: float, compute: Compute) -> None:
        super().__init__()
        self.ratio, self.head_dim, self.compute = ratio, head_dim, compute
        gated = ratio > 1
        # ratio > 1: the reference keeps wkv/wgate as fp32 parameters (bf16 values in the checkpoint)
        self.wkv = Linear(dim, head_dim, DENSE, compute, dense_compute_fp32=gated)
        self.wgate = Linear(dim, head_dim, DENSE, compute, dense_compute_fp32=True) if gated else None
        self.norm = RMSNorm(head_dim, eps)

    def advance(self, x: torch.Tensor, start_pos: int, state: V41State, layer_id: int) -> torch.Tensor:
        """x [S, D] (normed attention input of positions start_pos..) -> un-roped latents of the groups that
        these tokens complete, [n_new, d] in the compute dtype; the open group's rows are kept in ``state``."""
        c, r = self.compute, self.ratio
        if r == 1:
            return self.norm(self.wkv(x))
        kv, score = self.wkv(x.float()), self.wgate(x.float())  # fp32 [S, d]
        kept = state.open_group(layer_id)
        if kept is not None:
            kv, score = torch.cat([kept[0], kv]), torch.cat([kept[1], score])
        first = start_pos - (start_pos % r)  # position of kv's first row
        n_done = (start_pos + x.shape[0]) // r - first // r
        keep = n_done * r
        state.keep_open_group(layer_id, kv[keep:], score[keep:])
        if n_done == 0:
            return x.new_empty(0, self.head_dim, dtype=c.dtype)
        groups_kv = kv[:keep].view(n_done, r, -1)
        groups_score = score[:keep].view(n_done, r, -1)
        pooled = (groups_kv * groups_score.softmax(dim=1)).sum(dim=1)  # [n_done, d] fp32
        return self.norm(pooled.to(c.dtype))
