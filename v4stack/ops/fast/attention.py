"""Fast sparse attention and indexer scoring: whole-tensor GEMMs instead of gathers and per-block loops.

``sparse_attention`` with the official kernel's rounding (``round_probs``) runs the C kernel of
``ops.fast.prefill_attention`` (each query scores only its listed rows, read in place); without it, or where that
kernel cannot run, ``sliced_attention``, the dense torch form below. ``sliced_attention`` scores each query against the rows of ``kv`` with one GEMM per context slice (``KEY_SLICE``
rows) instead of one gather per query, keeps the scores of the slots its index list names (V4 index lists hold no
repeats, so this is the gather's softmax), computes the official kernel's weights from them in list order (running
max per block of 64 slots, numerators rounded to bf16 before P.V) and accumulates P.V slice by slice. Its memory
is bounded by the query and key slices, not by the context (given ``KeyRows``, the compressed entries are read
from the cache pool a slice at a time, never copied whole): at a 32K prompt ``kv`` (window + chunk + compressed
entries) holds ~9,300 rows per CSA layer, and a 1M prompt ~262,000. In decode ``kv`` is the sequence's window plus
its compressed entries, so the dense form costs about what the gather would.
"""

from __future__ import annotations

import torch

from v4stack.ops.fast import bf16_gemm, kernels, prefill_attention
from v4stack.ops.key_rows import read_rows
from v4stack.ops.reference.indexer import _hidden

QUERY_CHUNK = 512  # queries per GEMM at most
# Elements of one [queries, H, key slice] score block of sparse_attention (8 MiB in fp32). The dense form scores
# every key row, but a context slice of KEY_SLICE rows at a time: the ~8 score-sized temporaries of a slice (fp64
# GEMM output, fp32 scores, the gather of the listed slots, the weights scattered back) stay near 64 MiB whatever
# the prompt, and the key rows are upcast (fp32, fp64) one slice at a time, never the whole context.
SCORE_ELEMENTS = 1 << 21
# Key rows (columns of the score block) per context slice: 2,048 x 512 dims is 8 MiB in fp64.
KEY_SLICE = 2048
KERNEL_BLOCK = 64  # index-list slots per step of the official kernel's online softmax
# Queries per indexer-score GEMM: each chunk scores the entries its last query sees, so smaller chunks skip more of
# a causal prefill's hidden half (512: 62% of the [S, N] block computed at a 2K prompt, 128: 53%) at more calls.
INDEX_QUERY_CHUNK = 128


def sparse_attention(q: torch.Tensor, kv: torch.Tensor, idx: torch.Tensor, sink: torch.Tensor, scale: float,
                     round_probs: bool, budget: int = SCORE_ELEMENTS, key_slice: int = KEY_SLICE) -> torch.Tensor:
    """``ops.reference.attention.sparse_attention``'s contract: the C kernel of listed rows with ``round_probs``
    (the decode kernel's scores and weights, P.V summed in double), else ``sliced_attention`` (``budget`` and
    ``key_slice`` shape that torch form only)."""
    if round_probs:
        fused = prefill_attention.sparse_attention(q, kv, idx, sink, scale)
        if fused is not None:
            return fused
    return sliced_attention(q, kv, idx, sink, scale, round_probs, budget, key_slice)


def sliced_attention(q: torch.Tensor, kv: torch.Tensor, idx: torch.Tensor, sink: torch.Tensor, scale: float,
                     round_probs: bool, budget: int = SCORE_ELEMENTS, key_slice: int = KEY_SLICE) -> torch.Tensor:
    """``ops.reference.attention.sparse_attention``'s contract in torch: q [S, H, d], kv [N, d] (a tensor or
    ``ops.key_rows.KeyRows``: the segments are read one key slice at a time, never joined), idx [S, K] (-1 empty),
    sink [H] -> o [S, H, d] in q.dtype.

    Queries go in slices of at most ``budget // (H * key_slice)`` rows (at least one), keys in context slices of
    ``key_slice`` rows. Two passes over the context per query slice: (1) one GEMM per key slice scores it and the
    scores of the listed slots are gathered into list order [rows, H, K]; the kernel-order weights of the listed
    slots then come out of those K scores alone (as in ``decode_attention``); (2) the weights are scattered back
    per key slice and P.V accumulates one GEMM per slice in fp32. Memory is bounded by the slices, not by N."""
    s_len, heads, d = q.shape
    n, slots = kv.shape[0], idx.shape[1]
    cols = max(1, min(key_slice, n))
    step = max(1, min(QUERY_CHUNK, budget // (heads * cols)))
    exact = torch.float64 if round_probs else torch.float32  # bf16 products summed exactly in fp64, rounded once
    sink = sink.float()[None, :]
    out = torch.empty_like(q)
    for start in range(0, s_len, step):
        stop = min(start + step, s_len)
        rows, ids = stop - start, idx[start:stop].long()
        valid = ids >= 0
        qs = q[start:stop].to(exact).reshape(rows * heads, d)
        listed = torch.full((rows, heads, slots), float("-inf"), device=q.device)  # scores in list order
        for c0 in range(0, n, cols):
            c1 = min(c0 + cols, n)
            inside = valid & (ids >= c0) & (ids < c1)
            if not bool(inside.any()):
                continue
            scores = (qs @ read_rows(kv, c0, c1).to(exact).T).float().view(rows, heads, c1 - c0) * scale
            local = (ids - c0).clamp(0, c1 - c0 - 1)[:, None, :].expand(-1, heads, -1)
            listed = torch.where(inside[:, None, :], scores.gather(2, local), listed)
        if round_probs:
            weights, denom = _blocked_weights(listed, sink)
        else:
            peak = listed.amax(-1, keepdim=True)  # finite: every row names at least its own position
            weights = torch.exp(listed - peak)
            denom = weights.sum(-1) + torch.exp(sink - peak.squeeze(-1))  # [rows, H]
        o = torch.zeros(rows * heads, d, dtype=torch.float32, device=q.device)
        for c0 in range(0, n, cols):
            c1 = min(c0 + cols, n)
            inside = valid & (ids >= c0) & (ids < c1)
            if not bool(inside.any()):
                continue
            width = c1 - c0
            where = torch.where(inside, ids - c0, width)[:, None, :].expand(-1, heads, -1)  # column width: others
            dense = torch.zeros(rows, heads, width + 1, device=q.device).scatter_(2, where, weights)
            o.addmm_(dense[..., :width].reshape(rows * heads, width), read_rows(kv, c0, c1).float())
        out[start:stop] = (o.view(rows, heads, d) / denom[..., None]).to(q.dtype)
    return out


def decode_attention(q: torch.Tensor, keys: torch.Tensor, valid: torch.Tensor, sink: torch.Tensor, scale: float,
                     round_probs: bool) -> torch.Tensor:
    """``ops.reference.attention.decode_attention``'s contract, every row in one batched GEMM pair: q [B, H, d],
    keys [B, K, d] in index-list order (masked slots: any value), valid [B, K] -> o [B, H, d]. The keys arrive
    gathered in list order, so the kernel's 64-slot blocks are plain reshapes (no scatter as in
    ``sparse_attention``); the C kernel never reads a masked slot."""
    if round_probs:
        fused = kernels.decode_attention_blocked(q, keys, valid, sink, scale)  # ~25 torch ops in one C call
        if fused is not None:
            return fused
    batch, heads, _ = q.shape
    slots = keys.shape[1]
    keys = keys.masked_fill(~valid[..., None], 0.0)  # masked slots may hold NaN: the GEMMs below read every slot
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
    """The official kernel's rounding in dense form, scores [B, H, K] fp32 whose column k is list slot k (-inf where
    empty). The kernel walks the list in blocks of 64 with a running max m_b and rounds each numerator e^(s - m_b)
    to bf16; rescaled to the final max M that is weight bf16(e^(s_k - m_b(k))) e^(m_b(k) - M) and denominator
    sum_k e^(s_k - m_b(k)) e^(m_b(k) - M) + e^(sink - M) -> (weights [B, H, K], denominators [B, H])."""
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
    per_head = bf16_gemm.bmm(q, keys.to(q.dtype).transpose(1, 2)).relu_()  # [B, H, N]
    out = (per_head * weights.unsqueeze(-1)).sum(dim=1).float()  # the reference's rounding
    hidden = torch.arange(keys.shape[1], device=q.device)[None, :] >= ((positions + 1) // ratio)[:, None]
    return out.masked_fill_(hidden, float("-inf"))


def index_scores(q: torch.Tensor, weights: torch.Tensor, keys: torch.Tensor, positions: torch.Tensor,
                 ratio: int, chunk: int = INDEX_QUERY_CHUNK) -> torch.Tensor:
    """``ops.reference.indexer.index_scores``'s contract: ReLU(q k^T) [S, H, N] as one GEMM in q.dtype, then the
    reference's weighted head sum (bf16 products), in query chunks of ``chunk`` rows -> fp32 [S, N] with -inf where
    hidden. A chunk scores only the entries its last-visible query sees (a prefill from position 0 sees ~N/2 on
    average): each score is one dot product over d, so the columns it skips change no other value."""
    s_len, heads, d = q.shape
    n = keys.shape[0]
    k = keys.to(q.dtype)
    out = torch.empty(s_len, n, dtype=torch.float32, device=q.device)
    seen = ((positions + 1) // ratio).clamp(0, n)  # [S] entries visible to each query
    for start in range(0, s_len, chunk):
        stop = min(start + chunk, s_len)
        rows, cols = stop - start, int(seen[start:stop].max()) if s_len else 0
        out[start:stop, cols:] = float("-inf")  # hidden from every query of the chunk
        if cols == 0:
            continue
        per_head = bf16_gemm.matmul(q[start:stop].reshape(rows * heads, d), k[:cols].T).view(rows, heads, cols)
        per_head.relu_()
        out[start:stop, :cols] = (per_head * weights[start:stop].unsqueeze(-1)).sum(dim=1).float()  # the reference's rounding
    return out.masked_fill_(_hidden(n, positions, ratio), float("-inf"))
