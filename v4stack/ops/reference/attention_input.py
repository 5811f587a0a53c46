"""The V4 attention sublayer's input path (model_spec.md §3.3) as one op-table entry, composed of the table's narrow
entries (the attention layer's own linears, norms and rotary, which call ``attn.compute.ops``):

    qr = q_norm(wq_a x)                      [T, q_lora]
    q  = RoPE(rms(wq_b qr).view(H, d))       [T, H, d]   per-head unweighted RMS rescale, in the compute dtype
    kv = QAT(RoPE(kv_norm(wkv x)))           [T, d]      FP8 blocks of KV_QUANT_BLOCK on the non-rope dims

A platform may replace the whole path (one kernel for the decode rows of a step) and keep this composition as its
fallback.
"""

from __future__ import annotations

import torch

from v4stack.ops.reference.quant import KV_QUANT_BLOCK


def attention_qkv(attn, x: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``attn`` (a V4 ``model.attention.Attention``), x [T, D] (the normed sublayer input), positions [T] ->
    (q [T, H, d], kv [T, d], qr [T, q_lora]) in the compute dtype."""
    c = attn.compute
    qr = attn.q_norm(attn.wq_a(x))
    q = attn.wq_b(qr).unflatten(-1, (attn.n_heads, attn.head_dim))  # [T, H, d]
    q = q * torch.rsqrt(q.square().mean(-1, keepdim=True) + attn.eps)
    q = attn.rotary.apply(q, positions)
    kv = attn.rotary.apply(attn.kv_norm(attn.wkv(x)), positions)  # [T, d]
    if c.quant:
        rd = attn.rope_dim
        kv = torch.cat([c.ops.quant_dequant_fp8(kv[:, :-rd], KV_QUANT_BLOCK).to(c.dtype), kv[:, -rd:]], -1)
    return q, kv, qr
