"""KV compressor of CSA (ratio 4, overlapping) and HCA (ratio 128) layers, V4 (model_spec.md §3.4).

For token p: a_p = wkv x_p, g_p = wgate x_p + ape[p mod r]   (fp32, [coff*d], coff = 2 if overlapping).
Entry j pools, per channel c, softmax_i(g)[c] * a[c] over
  * non-overlap: the r rows of group j;
  * overlap:     the r rows of group j-1 on channels [:d] and the r rows of group j on channels [d:]
                 (group -1 contributes score -inf, value 0).
then kv_j = RMSNorm(pooled -> compute dtype), RoPE at position j*r on the last rope dims, and the QAT
point of its consumer (FP8 on the non-rope dims for attention; Hadamard + FP4 for indexer keys).

Works on any chunk of new tokens: the raw rows that later entries still need are carried in the sequence's
compressor ring in the cache (``cache.view.StateRing``), so prefill, decode and chunked prefill share one code
path.
"""

from __future__ import annotations

import torch
from torch import nn

from v4stack.cache.decode_view import DecodeRings
from v4stack.cache.view import StateRing
from v4stack.model.compute import INDEX_QUANT_BLOCK, KV_QUANT_BLOCK, Compute
from v4stack.model.linear import DENSE, Linear
from v4stack.model.norm import RMSNorm
from v4stack.model.rope import Rotary

OVERLAP_RATIO = 4  # only ratio-4 compressors use overlapping windows


class Compressor(nn.Module):
    """dim: model width; head_dim: entry width d; for_indexer: Hadamard + FP4 keys instead of FP8 latents."""

    def __init__(self, dim: int, head_dim: int, ratio: int, rope_dim: int, eps: float, compute: Compute,
                 rotary: Rotary, for_indexer: bool = False) -> None:
        super().__init__()
        self.ratio, self.head_dim, self.rope_dim = ratio, head_dim, rope_dim
        self.overlap = ratio == OVERLAP_RATIO
        self.width = (2 if self.overlap else 1) * head_dim
        self.compute, self.rotary, self.for_indexer = compute, rotary, for_indexer
        self.wkv = Linear(dim, self.width, DENSE, compute, dense_compute_fp32=True)
        self.wgate = Linear(dim, self.width, DENSE, compute, dense_compute_fp32=True)
        self.register_buffer("ape", torch.empty(ratio, self.width, dtype=torch.float32))
        self.norm = RMSNorm(head_dim, eps, ops=compute.ops)

    def project(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x [T, D] -> (a, g) fp32 [T, coff*d], g without ape (it depends on the position)."""
        xf = x.float()
        return self.wkv(xf), self.wgate(xf)

    def state_start(self, num_tokens: int) -> int:
        """First position whose raw rows are still needed after ``num_tokens`` positions: the open group, and
        for the overlapping compressor also the last complete group (the next entry pools it too)."""
        r = self.ratio
        return max(0, (num_tokens // r - 1) * r) if self.overlap else (num_tokens // r) * r

    def advance(self, kv: torch.Tensor, score: torch.Tensor, start_pos: int, ring: StateRing) -> torch.Tensor:
        """Feed rows of positions start_pos.. (kv, score [S, coff*d] from ``project``); return the entries
        completed by them, [n_new, d] in the compute dtype. The raw rows later entries still need are read from
        and written back to ``ring`` (the sequence's compressor state in the cache)."""
        r = self.ratio
        seq_len = kv.shape[0]
        positions = torch.arange(start_pos, start_pos + seq_len, device=kv.device)
        score = score + self.ape[positions % r]
        base = self.state_start(start_pos)
        prev_kv, prev_score = ring.read(base, start_pos)
        all_kv = torch.cat([prev_kv, kv])
        all_score = torch.cat([prev_score, score])
        first_group, end_group = start_pos // r, (start_pos + seq_len) // r  # groups completed: [first, end)
        entries = self._pool(all_kv, all_score, base, first_group, end_group)
        keep_from = self.state_start(start_pos + seq_len)
        ring.write(keep_from, all_kv[keep_from - base:], all_score[keep_from - base:])
        if self.overlap:
            ring.keep_tails(all_kv, all_score, base, self.head_dim)
        if entries is None:
            return kv.new_empty(0, self.head_dim, dtype=self.compute.dtype)
        return self._finish(entries, torch.arange(first_group, end_group, device=kv.device) * r)

    def advance_decode(self, kv: torch.Tensor, score: torch.Tensor,
                       rings: DecodeRings) -> tuple[torch.Tensor, torch.Tensor] | None:
        """``advance`` for one new token of each of B decode sequences at once: kv, score [B, coff*d] ->
        (the entries closed now [n, d] in the compute dtype, the b of their sequences [n]), or None when no group
        closes. Same values as ``advance`` per sequence: the ring holds the rows ``advance`` would read."""
        r, d = self.ratio, self.head_dim
        rings.write(kv, score + self.ape.index_select(0, rings.group_offsets(r)))  # ape[p mod r] of each row
        if self.overlap:
            rings.keep_tails(d)
        done, closed = rings.completing(r)
        if not closed:
            return None
        group_kv, group_score = rings.read_groups(r, 2 if self.overlap else 1)  # [n, (1|2) r, coff*d]
        if self.overlap:  # channels [:d] of the previous group, [d:] of the closed one; group 0 has no previous
            prev_kv, prev_score = group_kv[:, :r, :d], group_score[:, :r, :d]
            if 0 in closed:  # (only the first group of a sequence: no mask to build on later steps)
                first = torch.tensor([g == 0 for g in closed], device=kv.device)[:, None, None]
                prev_kv, prev_score = prev_kv.masked_fill(first, 0.0), prev_score.masked_fill(first, float("-inf"))
            group_kv = torch.cat([prev_kv, group_kv[:, r:, d:]], dim=1)
            group_score = torch.cat([prev_score, group_score[:, r:, d:]], dim=1)
        pooled = self.compute.ops.compress_pool(group_kv, group_score)
        return self._finish(pooled, torch.tensor(closed, device=kv.device) * r), done

    def _pool(self, kv, score, base, first, end):
        """Softmax-pool groups first..end-1 -> fp32 [end-first, d], or None when no group completes."""
        n, r, d = end - first, self.ratio, self.head_dim
        if n <= 0:
            return None
        cur = slice(first * r - base, end * r - base)
        cur_kv, cur_score = kv[cur].view(n, r, -1), score[cur].view(n, r, -1)
        if self.overlap:
            prev_kv = torch.zeros(n, r, d, dtype=kv.dtype, device=kv.device)
            prev_score = torch.full((n, r, d), float("-inf"), dtype=score.dtype, device=score.device)
            lo = max(first, 1)  # groups with a predecessor: their previous group starts at (g-1)*r
            if end > lo:
                prev = slice((lo - 1) * r - base, (end - 1) * r - base)
                prev_kv[lo - first:] = kv[prev].view(end - lo, r, -1)[..., :d]
                prev_score[lo - first:] = score[prev].view(end - lo, r, -1)[..., :d]
            cur_kv = torch.cat([prev_kv, cur_kv[..., d:]], dim=1)  # [n, 2r, d]
            cur_score = torch.cat([prev_score, cur_score[..., d:]], dim=1)
        return self.compute.ops.compress_pool(cur_kv, cur_score)

    def _finish(self, pooled: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Pooled fp32 [n, d] -> stored entries [n, d]: norm, RoPE at j*r, consumer's QAT point."""
        c, rd = self.compute, self.rope_dim
        entry = self.rotary.apply(self.norm(pooled.to(c.dtype)), positions)
        if self.for_indexer:
            entry = c.ops.hadamard_rotate(entry)
            if c.quant:
                entry = c.ops.quant_dequant_fp4(entry, INDEX_QUANT_BLOCK).to(c.dtype)
        elif c.quant:
            entry = torch.cat([c.ops.quant_dequant_fp8(entry[:, :-rd], KV_QUANT_BLOCK).to(c.dtype), entry[:, -rd:]], -1)
        return entry
