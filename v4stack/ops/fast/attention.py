"""Fast sparse attention and indexer scoring: whole-tensor GEMMs instead of gathers and per-block loops.

``sparse_attention`` scores each query against every row of ``kv`` with one GEMM and masks the rows its index
list does not name (V4 index lists hold no repeats, so this is the gather's softmax); the probabilities get the
reference's bf16 rounding before P.V, with one global max per row instead of the kernel's running max per block
of 64 (a different, equally valid rounding point). In decode ``kv`` is the sequence's window plus its compressed
entries, so the dense form costs about what the gather would; in prefill it avoids an [S, K, d] gathered copy.
"""

from __future__ import annotations

import torch

from v4stack.ops.reference.indexer import _hidden

QUERY_CHUNK = 512  # queries per GEMM at most
# Elements of one [queries, H, N] score temporary of sparse_attention (8 MiB in fp32). The dense form scores every
# key row, so at a long context N (window + chunk + all compressed entries) the query slice shrinks to keep the ~10
# temporaries of the kernel-order weights (fp32 and int64) near 100 MiB whatever the prompt; each query's output
# depends on its own row only, so the slicing does not change it.
SCORE_ELEMENTS = 1 << 21
KERNEL_BLOCK = 64  # index-list slots per step of the official kernel's online softmax


def sparse_attention(q: torch.Tensor, kv: torch.Tensor, idx: torch.Tensor, sink: torch.Tensor, scale: float,
                     round_probs: bool, budget: int = SCORE_ELEMENTS) -> torch.Tensor:
    """``ops.reference.attention.sparse_attention``'s contract: q [S, H, d], kv [N, d], idx [S, K] (-1 empty),
    sink [H] -> o [S, H, d] in q.dtype; queries go in slices whose [rows, H, N] scores hold <= ``budget``
    elements (at least one query)."""
    s_len, heads, d = q.shape
    n = kv.shape[0]
    step = max(1, min(QUERY_CHUNK, budget // (heads * (n + 1))))
    kvf = kv.float()
    kvd = kv.double() if round_probs else kvf  # bf16 products summed exactly in fp64, rounded once: the kernel's q.k
    sink = sink.float()[None, :]
    out = torch.empty_like(q)
    for start in range(0, s_len, step):
        stop = min(start + step, s_len)
        rows, ids = stop - start, idx[start:stop]
        where = torch.where(ids >= 0, ids, n).long()  # column n swallows the -1 padding
        qs = q[start:stop].to(kvd.dtype).reshape(rows * heads, d)
        scores = (qs @ kvd.T).float().view(rows, heads, n) * scale
        if round_probs:
            numer, denom = _kernel_order_weights(scores, where, n, sink)
        else:
            allowed = torch.zeros(rows, n + 1, dtype=torch.bool, device=q.device).scatter_(1, where, True)
            scores.masked_fill_(~allowed[:, None, :n], float("-inf"))
            peak = scores.amax(-1, keepdim=True)  # finite: every row names at least its own position
            numer = torch.exp(scores - peak)
            denom = numer.sum(-1) + torch.exp(sink - peak.squeeze(-1))  # [rows, H]
        o = (numer.view(rows * heads, n) @ kvf).view(rows, heads, d) / denom[..., None]
        out[start:stop] = o.to(q.dtype)
    return out


def _kernel_order_weights(scores: torch.Tensor, where: torch.Tensor, n: int,
                          sink: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The official kernel's rounding in dense form. The kernel walks the index list in blocks of 64 with a running
    max m_b and rounds each numerator e^(s - m_b) to bf16; rescaled to the final max M that is key weight
    bf16(e^(s_j - m_b(j))) e^(m_b(j) - M) and denominator sum_j e^(s_j - m_b(j)) e^(m_b(j) - M) + e^(sink - M).
    scores [S, H, N] fp32 (all columns), where [S, K] column per list slot (n = padding) -> (weights [S, H, N],
    denominators [S, H])."""
    rows, heads, _ = scores.shape
    slots = where.shape[1]
    nblocks = -(-slots // KERNEL_BLOCK)
    block_of = torch.full((rows, n + 1), -1, dtype=torch.long, device=scores.device)  # list block of each column
    block_of.scatter_(1, where, torch.arange(slots, device=scores.device).expand(rows, -1) // KERNEL_BLOCK)
    block_of = block_of[:, :n]
    listed = block_of >= 0
    scores = scores.masked_fill(~listed[:, None, :], float("-inf"))
    blocks = block_of.clamp_min(0)[:, None, :].expand(-1, heads, -1)  # [S, H, N]
    block_max = torch.full((rows, heads, nblocks), float("-inf"), device=scores.device)
    block_max.scatter_reduce_(2, blocks, scores, "amax")
    running = torch.cummax(block_max, dim=2).values  # m_b: the max over blocks 0..b
    final = running[..., -1:]  # M [S, H, 1]; finite: every row names at least its own position
    col_max = running.gather(2, blocks)
    col_max = torch.where(torch.isfinite(col_max), col_max, final)  # unlisted columns (their e^ is 0 anyway)
    probs = torch.exp(scores - col_max)
    rescale = torch.exp(col_max - final)
    weights = probs.to(torch.bfloat16).float() * rescale
    denom = (probs * rescale).sum(-1) + torch.exp(sink - final.squeeze(-1))
    return weights, denom


def decode_attention(q: torch.Tensor, keys: torch.Tensor, valid: torch.Tensor, sink: torch.Tensor, scale: float,
                     round_probs: bool) -> torch.Tensor:
    """``ops.reference.attention.decode_attention``'s contract, every row in one batched GEMM pair: q [B, H, d],
    keys [B, K, d] in index-list order, valid [B, K] -> o [B, H, d]. The keys arrive gathered in list order, so
    the kernel's 64-slot blocks are plain reshapes (no scatter as in ``sparse_attention``)."""
    batch, heads, _ = q.shape
    slots = keys.shape[1]
    kvf = keys.float()
    kvd = keys.double() if round_probs else kvf  # the kernel's exact q.k (see sparse_attention)
    scores = torch.bmm(q.to(kvd.dtype), kvd.transpose(1, 2)).float().mul_(scale)  # [B, H, K]
    scores.masked_fill_(~valid[:, None, :], float("-inf"))
    sink = sink.float()[None, :]
    if round_probs:
        numer, denom = _blocked_weights(scores, sink)
    else:
        peak = scores.amax(-1, keepdim=True)  # finite: slot 0 is valid
        numer = torch.exp(scores - peak)
        denom = numer.sum(-1) + torch.exp(sink - peak.squeeze(-1))
    return (torch.bmm(numer, kvf) / denom[..., None]).to(q.dtype)


def _blocked_weights(scores: torch.Tensor, sink: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``_kernel_order_weights`` for scores [B, H, K] whose column k is list slot k -> (weights, denominators)."""
    batch, heads, slots = scores.shape
    nblocks = -(-slots // KERNEL_BLOCK)
    padded = torch.nn.functional.pad(scores, (0, nblocks * KERNEL_BLOCK - slots), value=float("-inf"))
    running = torch.cummax(padded.view(batch, heads, nblocks, KERNEL_BLOCK).amax(-1), dim=2).values  # m_b
    final = running[..., -1:]  # M [B, H, 1]
    col_max = running.repeat_interleave(KERNEL_BLOCK, dim=2)[..., :slots]
    col_max = torch.where(torch.isfinite(col_max), col_max, final)  # blocks before the first valid slot
    probs = torch.exp(scores - col_max)
    rescale = torch.exp(col_max - final)
    weights = probs.to(torch.bfloat16).float() * rescale
    denom = (probs * rescale).sum(-1) + torch.exp(sink - final.squeeze(-1))
    return weights, denom


def decode_index_scores(q: torch.Tensor, weights: torch.Tensor, keys: torch.Tensor, positions: torch.Tensor,
                        ratio: int) -> torch.Tensor:
    """``ops.reference.indexer.decode_index_scores``'s contract as one batched GEMM in q.dtype: q [B, H, d],
    weights [B, H], keys [B, N, d], positions [B] -> fp32 [B, N], -inf where not yet visible."""
    per_head = torch.bmm(q, keys.to(q.dtype).transpose(1, 2)).relu_()  # [B, H, N]
    out = (per_head * weights.unsqueeze(-1)).sum(dim=1).float()  # the reference's rounding
    hidden = torch.arange(keys.shape[1], device=q.device)[None, :] >= ((positions + 1) // ratio)[:, None]
    return out.masked_fill_(hidden, float("-inf"))


def index_scores(q: torch.Tensor, weights: torch.Tensor, keys: torch.Tensor, positions: torch.Tensor,
                 ratio: int) -> torch.Tensor:
    """``ops.reference.indexer.index_scores``'s contract: ReLU(q k^T) [S, H, N] as one GEMM in q.dtype, then the
    reference's weighted head sum (bf16 products), in query chunks -> fp32 [S, N] with -inf where hidden."""
    s_len, heads, d = q.shape
    n = keys.shape[0]
    k = keys.to(q.dtype)
    out = torch.empty(s_len, n, dtype=torch.float32, device=q.device)
    for start in range(0, s_len, QUERY_CHUNK):
        stop = min(start + QUERY_CHUNK, s_len)
        rows = stop - start
        per_head = (q[start:stop].reshape(rows * heads, d) @ k.T).view(rows, heads, n).relu_()
        out[start:stop] = (per_head * weights[start:stop].unsqueeze(-1)).sum(dim=1).float()  # the reference's rounding
    return out.masked_fill_(_hidden(n, positions, ratio), float("-inf"))
