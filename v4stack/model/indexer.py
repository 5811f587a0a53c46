"""Lightning indexer of CSA layers, V4 (model_spec.md §3.5): picks the top-k compressed entries per query.

    q_I[t,h] = FP4(Hadamard(RoPE(wq_b(qr_t))))              [S, H_I, 128]
    k_s      = indexer-compressor entries                     [N, 128]
    w[t,h]   = weights_proj(x_t) * 128^-1/2 * H_I^-1/2        [S, H_I]
    I[t,s]   = sum_h w[t,h] * ReLU(<q_I[t,h], k_s>)           [S, N], computed in the compute dtype
    visible: s < (p_t + 1) // 4;  top-k with k = min(index_topk, N); ties -> lower s; order: score desc.
"""

from __future__ import annotations

import torch
from torch import nn

from v4stack.model.compressor import Compressor
from v4stack.model.compute import INDEX_QUANT_BLOCK, Compute
from v4stack.model.linear import DENSE, FP8, Linear
from v4stack.model.rope import Rotary

# Elements of the [queries, H_I, N] product one scoring pass may materialise (64 MiB in fp32). A long prefill
# chunk is scored a slice of queries at a time so its activations stay bounded; each query's scores and top-k
# do not depend on the other queries, so the slicing does not change the result.
SCORE_BUDGET = 1 << 24
# Elements of index queries [rows, H_I, 128] rotated and FP4-simulated at once. The Hadamard sums in fp64 and the
# FP4 simulation makes about eight fp32 temporaries of its input (272 MiB for a 1,024-token chunk at 64 x 128);
# both work row by row (exact fp64 sums; FP4 blocks of 32 along the last dim), so slicing the rows changes nothing
# and bounds the temporaries to ~8 x 8 B x QUANT_BUDGET (64 MiB), whatever the chunk.
QUANT_BUDGET = 1 << 20


class Indexer(nn.Module):
    def __init__(self, dim: int, q_lora_rank: int, n_heads: int, head_dim: int, topk: int, ratio: int,
                 rope_dim: int, eps: float, compute: Compute, rotary: Rotary) -> None:
        super().__init__()
        self.n_heads, self.head_dim, self.topk, self.ratio = n_heads, head_dim, topk, ratio
        self.compute, self.rotary = compute, rotary
        self.weight_scale = head_dim ** -0.5 * n_heads ** -0.5
        self.wq_b = Linear(q_lora_rank, n_heads * head_dim, FP8, compute)
        self.weights_proj = Linear(dim, n_heads, DENSE, compute)
        self.compressor = Compressor(dim, head_dim, ratio, rope_dim, eps, compute, rotary, for_indexer=True)

    def queries(self, qr: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """qr [T, q_lora] -> index queries [T, H_I, head_dim] (roped, rotated, FP4-simulated)."""
        c = self.compute
        q = self.wq_b(qr).unflatten(-1, (self.n_heads, self.head_dim))
        q = self.rotary.apply(q, positions)
        rows = max(1, QUANT_BUDGET // (self.n_heads * self.head_dim))
        dtype = c.dtype if c.quant else q.dtype
        if q.shape[0] <= rows:  # one slice (decode steps): no output buffer to fill (same rounding as copy_)
            q = self._rotate_quant(q)
            return (q if q.dtype == dtype else q.to(dtype)).contiguous()
        out = torch.empty(q.shape, dtype=dtype, device=q.device)
        for i in range(0, q.shape[0], rows):  # per-row ops: slicing bounds their fp64/fp32 temporaries
            out[i:i + rows] = self._rotate_quant(q[i:i + rows])
        return out

    def _rotate_quant(self, q: torch.Tensor) -> torch.Tensor:
        """Roped queries [n, H_I, head_dim] -> Hadamard-rotated, then FP4-simulated where the compute quantises."""
        c = self.compute
        q = c.ops.hadamard_rotate(q)
        return c.ops.quant_dequant_fp4(q, INDEX_QUANT_BLOCK) if c.quant else q

    def head_weights(self, x: torch.Tensor) -> torch.Tensor:
        """x [T, D] -> per-head score weights [T, H_I]."""
        return self.weights_proj(x) * self.weight_scale

    def scores(self, q: torch.Tensor, weights: torch.Tensor, keys: torch.Tensor,
               positions: torch.Tensor) -> torch.Tensor:
        """Index scores I[t, s]: q [S, H_I, d], weights [S, H_I], keys [N, d], positions [S] -> fp32 [S, N],
        -inf where entry s is not yet visible to query t."""
        return self.compute.ops.index_scores(q, weights, keys, positions, self.ratio)

    def select(self, q: torch.Tensor, weights: torch.Tensor, keys: torch.Tensor, positions: torch.Tensor,
               budget: int = SCORE_BUDGET) -> torch.Tensor:
        """``top(scores(q, weights, keys, positions))`` computed for slices of queries whose [rows, H_I, N]
        product holds at most ``budget`` elements (at least one query per slice) -> idx [S, min(topk, N)]."""
        rows = max(1, budget // max(1, self.n_heads * keys.shape[0]))
        if rows >= q.shape[0]:
            return self.top(self.scores(q, weights, keys, positions), positions)
        return torch.cat([self.top(self.scores(q[i:i + rows], weights[i:i + rows], keys, positions[i:i + rows]),
                                   positions[i:i + rows]) for i in range(0, q.shape[0], rows)])

    def top(self, scores: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """scores [S, N] from :meth:`scores` -> idx [S, min(topk, N)] int64, -1 where the slot has no
        visible entry."""
        return self.compute.ops.index_topk(scores, self.topk, positions, self.ratio)
