"""The V4.1 lightning indexer of an index-source layer and the candidate blocks of CSA2 (model_spec.md §3.6).

Scores are the V4 ones (``Indexer.scores``: sum_h w[t,h] ReLU(<q_I[t,h], k_s>) in the compute dtype):
  q_I  = FP4_32(RoPE(wq_b(qr)))                     [S, H_I, d_I]   no Hadamard rotation in V4.1
  k_s  = FP4_32(RoPE_{s r}(k_norm(wk(latent_s))))   [N, d_I]        owned by kv-source layers only
A reindex layer scores with its own q and weights against its kv source's keys, inside the candidate blocks of
the candidate source. Top-k: k = min(index_topk, N), ties -> lower entry, returned in ascending entry order,
-1 where the entry is not visible to the query ((t+1) // r entries are).

Candidate blocks (at the candidate source): block score = max of the scores of its ``block_size`` entries
(padding -inf); the block holding the query's newest visible entry is always kept; the best
``candidate_topk_blocks`` blocks with a finite score form the candidate set.
"""

from __future__ import annotations

import torch
from torch import nn

from v4stack.model.compute import INDEX_QUANT_BLOCK, Compute
from v4stack.model.indexer import Indexer
from v4stack.model.linear import DENSE, FP8, Linear
from v4stack.model.norm import RMSNorm
from v4stack.model.rope import Rotary
from v4stack.ops.reference.indexer import topk_lower_index_on_ties


def select_candidate_blocks(scores: torch.Tensor, visible: torch.Tensor, topk_blocks: int,
                            block_size: int) -> torch.Tensor:
    """scores [S, N] fp32 (-inf = not visible), visible [S] entries per query -> bool mask [S, N] of the entries
    inside each query's candidate blocks."""
    s_len, n = scores.shape
    n_blocks = -(-n // block_size)
    padded = torch.full((s_len, n_blocks * block_size), float("-inf"), dtype=scores.dtype, device=scores.device)
    padded[:, :n] = scores
    block_scores = padded.view(s_len, n_blocks, block_size).amax(-1)  # [S, n_blocks]
    newest = ((visible - 1) // block_size).clamp_min(0)
    has_any = visible > 0
    block_scores[has_any, newest[has_any]] = float("inf")
    k = min(topk_blocks, n_blocks)
    picked = topk_lower_index_on_ties(block_scores, k)  # [S, k]
    live = torch.gather(block_scores, 1, picked) > float("-inf")
    keep = torch.zeros(s_len, n_blocks, dtype=torch.bool, device=scores.device)
    keep.scatter_(1, picked, live)
    return keep.repeat_interleave(block_size, dim=1)[:, :n]


class V41Indexer(Indexer):
    """Own queries and head weights; index keys only when ``owns_keys`` (kv-source layers)."""

    def __init__(self, dim: int, q_lora_rank: int, latent_dim: int, n_heads: int, head_dim: int, topk: int,
                 ratio: int, eps: float, compute: Compute, rotary: Rotary, owns_keys: bool) -> None:
        nn.Module.__init__(self)  # V4's constructor would add the V4-only indexer compressor
        self.n_heads, self.head_dim, self.topk, self.ratio = n_heads, head_dim, topk, ratio
        self.compute, self.rotary = compute, rotary
        self.weight_scale = head_dim ** -0.5 * n_heads ** -0.5
        self.wq_b = Linear(q_lora_rank, n_heads * head_dim, FP8, compute)
        self.weights_proj = Linear(dim, n_heads, DENSE, compute)
        if owns_keys:
            self.wk = Linear(latent_dim, head_dim, DENSE, compute)
            self.k_norm = RMSNorm(head_dim, eps)

    def queries(self, qr: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """qr [T, q_lora] -> index queries [T, H_I, d_I] (roped, FP4-simulated)."""
        c = self.compute
        q = self.rotary.apply(self.wq_b(qr).unflatten(-1, (self.n_heads, self.head_dim)), positions)
        return c.ops.quant_dequant_fp4(q, INDEX_QUANT_BLOCK).to(c.dtype) if c.quant else q

    def keys(self, latent: torch.Tensor, first_entry: int) -> torch.Tensor:
        """Un-roped latents [n, d] of entries first_entry.. -> index keys [n, d_I] (RoPE at j*r, FP4)."""
        c = self.compute
        positions = (torch.arange(latent.shape[0], device=latent.device) + first_entry) * self.ratio
        k = self.rotary.apply(self.k_norm(self.wk(latent)), positions)
        return c.ops.quant_dequant_fp4(k, INDEX_QUANT_BLOCK).to(c.dtype) if c.quant else k

    def select(self, scores: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """scores [S, N] from ``scores`` (masked) -> entry ids [S, min(topk, N)] ascending, -1 = none."""
        k = min(self.topk, scores.shape[1])
        if k == 0:
            return torch.empty(scores.shape[0], 0, dtype=torch.long, device=scores.device)
        top = topk_lower_index_on_ties(scores, k)
        hidden = (top >= ((positions + 1) // self.ratio)[:, None]) | (scores.gather(1, top) == float("-inf"))
        top = top.masked_fill(hidden, -1)
        # ascending entry order with the -1 slots last (the reference sorts the ids; -1 slots are skipped)
        big = scores.shape[1]
        ordered = torch.where(top < 0, torch.full_like(top, big), top).sort(dim=1).values
        return ordered.masked_fill(ordered >= big, -1)
