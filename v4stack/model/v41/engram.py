"""The Engram layer (model_spec.md §3.9): hashed n-gram rows added into the residual streams before a block.

    E      = rows(ids)                                  [S, K, hd]  K = (N-1) H hash ids, FP8 x E8M0/32 -> bf16
    kv     = wkv(flatten(E))                            [S, (hc+1) D]   FP8 linear
    key_c  = kv[c D:(c+1) D] (c < hc), value = kv[hc D:]
    dot_c  = sum_D X_c (q_w k_w)_c key_c * rsqrt(ms(X_c)+eps) rsqrt(ms(key_c)+eps) / sqrt(D)
    gate_c = sigmoid(sign(dot_c) sqrt(max(|dot_c|, 1e-6)))
    X_c   += gate_c value                               (same value for every stream)

Where the table rows come from is the caller's choice (``EngramRows``): the module's own buffers (device tier)
or a tiered store (``engram_store``); every source returns the same bf16 rows.
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import nn

from v4stack.config.v41_config import V41Config
from v4stack.model.compute import Compute
from v4stack.model.linear import FP8, Linear
from v4stack.weights.formats import ue8m0_to_float

ENGRAM_SCALE_BLOCK = 32  # one E8M0 scale per 32 FP8 values of a row (model_spec.md §4.4)
SIGNED_SQRT_FLOOR = 1e-6  # the gate's signed square root clamps |dot| from below


class EngramRows(Protocol):
    def rows(self, table: int, ids: torch.Tensor) -> torch.Tensor:
        """ids [S, K] int64 of Engram table ``table`` (index in engram_layer_ids) -> bf16 rows [S, K, hd]."""


def dequant_rows(values: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """FP8 rows [..., hd] + E8M0 scales [..., hd/32] -> bf16 [..., hd] (exact in fp32, then one rounding)."""
    s = ue8m0_to_float(scales).repeat_interleave(ENGRAM_SCALE_BLOCK, dim=-1)
    return (values.float() * s).to(torch.bfloat16)


class EngramTable(nn.Module):
    """The table as checkpoint buffers: ``weight`` FP8 [rows, hd], ``scale`` E8M0 [rows, hd/32]."""

    def __init__(self, rows: int, head_dim: int) -> None:
        super().__init__()
        self.register_buffer("weight", torch.empty(rows, head_dim, dtype=torch.float8_e4m3fn))
        self.register_buffer("scale", torch.empty(rows, head_dim // ENGRAM_SCALE_BLOCK, dtype=torch.float8_e8m0fnu))

    def lookup(self, ids: torch.Tensor) -> torch.Tensor:
        ids = ids.to(self.weight.device)
        return dequant_rows(self.weight[ids], self.scale[ids])


class Engram(nn.Module):
    def __init__(self, cfg: V41Config, table_index: int, compute: Compute) -> None:
        super().__init__()
        e = cfg.engram
        self.table_index, self.compute = table_index, compute
        self.hc, self.dim, self.eps = cfg.hc_mult, cfg.hidden_size, cfg.rms_norm_eps
        self.embed = EngramTable(e.num_embeddings[table_index], e.head_dim)
        self.wkv = Linear(e.ids_per_token * e.head_dim, cfg.hidden_size * (cfg.hc_mult + 1), FP8, compute)
        self.register_buffer("q_weight", torch.empty(cfg.hc_mult, cfg.hidden_size, dtype=torch.float32))
        self.register_buffer("k_weight", torch.empty(cfg.hc_mult, cfg.hidden_size, dtype=torch.float32))

    def forward(self, x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """x [S, hc, D] streams, rows [S, K, hd] bf16 -> streams [S, hc, D] with the gated value added."""
        kv = self.wkv(rows.flatten(1).to(self.compute.dtype)).float()  # [S, (hc+1) D]
        key = kv[:, :self.hc * self.dim].view(-1, self.hc, self.dim)
        value = kv[:, self.hc * self.dim:]
        # the reference holds q_weight / k_weight as bf16 parameters (checkpoint values are F32)
        wgt = self.q_weight.to(torch.bfloat16).float() * self.k_weight.to(torch.bfloat16).float()  # [hc, D]
        xf = x.float()
        rstd = torch.rsqrt(xf.square().mean(-1) + self.eps) * torch.rsqrt(key.square().mean(-1) + self.eps)
        dot = (xf * wgt * key).sum(-1) * rstd * self.dim ** -0.5  # [S, hc]
        gate = torch.sigmoid(torch.sign(dot) * dot.abs().clamp_min(SIGNED_SQRT_FLOOR).sqrt())
        return (xf + gate.unsqueeze(-1) * value.unsqueeze(1)).to(x.dtype)
