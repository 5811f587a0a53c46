"""Sparse attention with a per-head sink logit (reference of the V4 ``sparse_attn`` kernel, model_spec.md §3.3).

For query t, head h and selected key set J_t (indices != -1 into ``kv``):
    s_j = scale * <q_th, k_j>,  m = max_j s_j,  Z = sum_j e^(s_j - m) + e^(sink_h - m)
    o_th = sum_j e^(s_j - m) / Z * k_j          (K = V: the latents are both keys and values)

``round_probs`` reproduces the official kernel's numerics (model_spec.md §9): the index list is walked in
blocks of 64 with a running max (online softmax); each block's numerators e^(s_j - m_running) are rounded
to bf16 before the P.V product, while the denominator keeps fp32 values. Without it the softmax is exact
fp32 and the order of the index list does not matter.
"""

from __future__ import annotations

import torch

from v4stack.ops.key_rows import as_tensor

QUERY_CHUNK = 256  # queries per gather; bounds the [chunk, K, d] gathered-key temporary
KERNEL_BLOCK = 64  # indices per step of the official kernel's online softmax


def sparse_attention(q: torch.Tensor, kv: torch.Tensor, idx: torch.Tensor, sink: torch.Tensor, scale: float,
                     round_probs: bool) -> torch.Tensor:
    """q [S, H, d], kv [N, d] (a tensor, or ``ops.key_rows.KeyRows`` segments, joined here), idx [S, K] int
    (-1 = empty), sink [H] fp32 -> o [S, H, d] in q.dtype.

    Every row of idx must hold at least one valid index (the window always contains the query itself).
    """
    kv = as_tensor(kv)
    out = torch.empty_like(q)
    for start in range(0, q.shape[0], QUERY_CHUNK):
        stop = min(start + QUERY_CHUNK, q.shape[0])
        out[start:stop] = _attend(q[start:stop], kv, idx[start:stop], sink, scale, round_probs)
    return out


def decode_attention(q: torch.Tensor, keys: torch.Tensor, valid: torch.Tensor, sink: torch.Tensor, scale: float,
                     round_probs: bool) -> torch.Tensor:
    """One query per sequence over its own gathered keys: q [B, H, d], keys [B, K, d] (slot k of row b is entry k
    of b's index list; masked slots may hold any value, NaN included: they never reach the output), valid [B, K]
    bool (slot 0 valid), sink [H] -> o [B, H, d] in q.dtype. Defined as ``sparse_attention`` of each row over its
    keys, in list order (its index list points at valid slots only)."""
    order = torch.arange(keys.shape[1], device=keys.device)
    idx = torch.where(valid, order[None, :], torch.full_like(order, -1)[None, :])
    return torch.cat([sparse_attention(q[b:b + 1], keys[b], idx[b:b + 1], sink, scale, round_probs)
                      for b in range(q.shape[0])])


def _attend(q, kv, idx, sink, scale, round_probs):
    valid = idx >= 0  # [S, K]
    keys = kv[idx.clamp_min(0).long()]  # [S, K, d]
    if round_probs:
        return _attend_kernel_order(q, keys, valid, sink, scale)
    keys = keys.float()
    scores = torch.einsum("shd,skd->shk", q.float(), keys) * scale  # [S, H, K]
    scores = scores.masked_fill(~valid[:, None, :], float("-inf"))
    peak = scores.amax(-1, keepdim=True)  # [S, H, 1]
    probs = torch.exp(scores - peak)
    denom = probs.sum(-1) + torch.exp(sink.float()[None, :] - peak.squeeze(-1))  # [S, H]
    o = torch.einsum("shk,skd->shd", probs, keys) / denom[..., None]
    return o.to(q.dtype)


def _attend_kernel_order(q, keys, valid, sink, scale):
    """The official kernel's order of operations, block by block of 64 indices:
    s = fp32(exact q.k) * scale; m' = max(m, max s); acc = acc e^(m - m') + fp32(exact sum bf16(e^(s - m')) v);
    l = l e^(m - m') + sum e^(s - m'); finally o = acc / (l + e^(sink - m))."""
    s_len, h, _ = q.shape
    qd = q.double()
    acc = torch.zeros(s_len, h, q.shape[-1], dtype=torch.float32, device=q.device)
    run_max = torch.full((s_len, h), float("-inf"), device=q.device)
    run_sum = torch.zeros(s_len, h, device=q.device)
    for b in range(0, keys.shape[1], KERNEL_BLOCK):
        kb = keys[:, b:b + KERNEL_BLOCK].double()  # [S, 64, d]
        scores = torch.einsum("shd,skd->shk", qd, kb).float() * scale
        scores = scores.masked_fill(~valid[:, None, b:b + KERNEL_BLOCK], float("-inf"))
        new_max = torch.maximum(run_max, scores.amax(-1))
        live = torch.isfinite(new_max)
        safe_max = torch.where(live, new_max, torch.zeros_like(new_max))
        probs = torch.exp(scores - safe_max[..., None])  # -inf scores -> 0
        rescale = torch.where(torch.isfinite(run_max), torch.exp(run_max - safe_max), torch.zeros_like(run_max))
        block_pv = torch.einsum("shk,skd->shd", probs.to(torch.bfloat16).double(), kb).float()
        acc = acc * rescale[..., None] + block_pv
        run_sum = run_sum * rescale + probs.sum(-1)
        run_max = new_max
    denom = run_sum + torch.exp(sink.float()[None, :] - run_max)
    return (acc / denom[..., None]).to(q.dtype)
