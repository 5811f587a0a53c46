"""Batched-matmul formulations of reference ops, for training and long prefills on any device.

Same contracts as the reference functions they replace (named in each docstring), but summed in a
different order (einsum / bmm over whole tensors instead of gathers and broadcast-then-sum), so they are
not bit-identical to the official kernels: use them where exact fp32 is the goal (training the demo
model), not for golden bf16 reproduction. Each is tested against its reference in tests/test_ops.py.
"""

from __future__ import annotations

import torch

from v4stack.ops.key_rows import as_tensor
from v4stack.ops.table import OpTable, reference_ops


def sparse_attention_masked(q: torch.Tensor, kv: torch.Tensor, idx: torch.Tensor, sink: torch.Tensor, scale: float,
                            round_probs: bool) -> torch.Tensor:
    """``sparse_attention``'s contract computed densely: scores against every row of ``kv`` [S, H, N] with
    the rows not named in ``idx`` masked out. No gather of [S, K, d] keys, so it is much cheaper for long
    prefills and training (where N is about S); exact fp32 softmax only (``round_probs`` must be False).
    Repeated indices in a row count once (the reference path counts them twice; V4 index lists have none)."""
    if round_probs:
        raise ValueError("sparse_attention_masked computes the exact softmax; use sparse_attention for the "
                         "kernel's rounded probabilities")
    kv = as_tensor(kv)  # KeyRows segments joined (ops.key_rows)
    allowed = torch.zeros(idx.shape[0], kv.shape[0] + 1, dtype=torch.bool, device=idx.device)
    allowed.scatter_(1, torch.where(idx >= 0, idx, kv.shape[0]).long(), True)
    allowed = allowed[:, :-1]  # [S, N]; the extra column swallowed the -1 padding
    scores = torch.einsum("shd,nd->shn", q.float(), kv.float()) * scale
    scores = scores.masked_fill(~allowed[:, None, :], float("-inf"))
    peak = scores.amax(-1, keepdim=True).detach()  # [S, H, 1]; finite: every row has a valid index
    probs = torch.exp(scores - peak)
    denom = probs.sum(-1) + torch.exp(sink.float()[None, :] - peak.squeeze(-1))  # [S, H]
    o = torch.einsum("shn,nd->shd", probs, kv.float()) / denom[..., None]
    return o.to(q.dtype)


def hc_collapse_bmm(x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``mixing.hc_collapse``: x [T, hc, D], weights [T, hc] -> fp32 [T, D]."""
    return torch.einsum("th,thd->td", weights, x.float())


def hc_expand_bmm(out: torch.Tensor, residual: torch.Tensor, post: torch.Tensor, comb: torch.Tensor) -> torch.Tensor:
    """``mixing.hc_expand``: -> fp32 [T, hc, D] = post_k out + sum_j comb[j, k] X_j."""
    mixed = torch.einsum("tjk,tjd->tkd", comb, residual.float())
    return post.unsqueeze(-1) * out.float().unsqueeze(1) + mixed


def batched_ops(base: OpTable | None = None) -> OpTable:
    """``base`` (default: the reference table) with the batched formulations swapped in."""
    return (base or reference_ops()).with_overrides(sparse_attention=sparse_attention_masked,
                                                    hc_collapse=hc_collapse_bmm, hc_expand=hc_expand_bmm)
