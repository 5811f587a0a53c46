"""The V4 attention layer: one shared 512-d latent KV head (K = V), sliding window + compressed entries.

Per token (model_spec.md §3.3):
    qr = q_norm(wq_a x)                      [T, q_lora]
    q  = RoPE(rms(wq_b qr).view(H, d))       [T, H, d]   per-head unweighted RMS rescale
    kv = QAT(RoPE(kv_norm(wkv x)))           [T, d]
Per sequence: keys = its last W raw rows (window, including the query itself) + compressed entries
(HCA: all visible; CSA: indexer top-k), attended with a per-head sink logit. Raw rows, compressed entries,
indexer keys and the compressors' open groups live in the paged cache (``cache/``), addressed through the
batch's ``CacheView`` with this layer's id; the output gets the inverse
RoPE, then the grouped low-rank projection  o[G, H/G*d] -> wo_a (block-diagonal) -> wo_b.
"""

from __future__ import annotations

import torch
from torch import nn

from v4stack.cache.tensors import stored
from v4stack.config.model_config import ModelConfig
from v4stack.model.batch import ForwardBatch, SeqSpan
from v4stack.model.compressor import Compressor
from v4stack.model.compute import Compute
from v4stack.model.decode_attention import attend_decode
from v4stack.model.indexer import Indexer
from v4stack.model.linear import FP8, Linear
from v4stack.model.norm import RMSNorm
from v4stack.model.rope import RopeSpec, Rotary
from v4stack.ops.key_rows import KeyRows, as_tensor

CSA_RATIO = 4  # ratio-4 layers select entries with the lightning indexer; ratio-128 layers attend to all


def rope_spec_for(cfg: ModelConfig, ratio: int) -> RopeSpec:
    """Compressed layers: compress_rope_theta + YaRN; window-only layers: rope_theta, no YaRN."""
    if ratio == 0:
        return RopeSpec(cfg.qk_rope_head_dim, cfg.rope_theta)
    rs = cfg.rope_scaling
    return RopeSpec(cfg.qk_rope_head_dim, cfg.compress_rope_theta, rs.factor, rs.original_max_position_embeddings,
                    rs.beta_fast, rs.beta_slow)


def window_indices(positions: torch.Tensor, first_row_pos: int, window: int) -> torch.Tensor:
    """For queries at ``positions`` [S] over raw rows starting at position ``first_row_pos``: the row
    indices of positions max(0, p-W+1)..p in ascending order, then -1 padding.

    Width: W, except for a prefill from position 0 shorter than W, which gets width S. This is the
    reference's index-list layout; it matters only for the kernel's blocked softmax rounding, where the
    compressed entries must start at the same offset as in the reference.
    """
    width = positions.shape[0] if int(positions[0]) == 0 and positions.shape[0] < window else window
    lo = (positions - window + 1).clamp_min(0)
    rows = lo[:, None] + torch.arange(width, device=positions.device)[None, :]
    return torch.where(rows <= positions[:, None], rows - first_row_pos, torch.full_like(rows, -1))


class Attention(nn.Module):
    # 1-token spans go through ``model.decode_attention`` (one batched op); False: the per-sequence ``_attend``
    # for every span (the definition the batched path is tested against)
    batched_decode = True

    def __init__(self, cfg: ModelConfig, layer_id: int, compute: Compute) -> None:
        super().__init__()
        self.cfg, self.compute, self.layer_id = cfg, compute, layer_id
        self.ratio = cfg.compress_ratio(layer_id)
        self._build_projections(cfg, compute)
        self.compressor = self.indexer = None
        if self.ratio:
            self.compressor = Compressor(cfg.hidden_size, self.head_dim, self.ratio, self.rope_dim,
                                         cfg.rms_norm_eps, compute, self.rotary)
        if self.ratio == CSA_RATIO:
            self.indexer = Indexer(cfg.hidden_size, cfg.q_lora_rank, cfg.index_n_heads, cfg.index_head_dim,
                                   cfg.index_topk, self.ratio, self.rope_dim, cfg.rms_norm_eps, compute, self.rotary)

    def _build_projections(self, cfg, compute: Compute) -> None:
        """The q/kv low-rank projections, norms, sink and grouped output shared by V4 and V4.1 layers
        (``self.ratio`` must be set: it picks the RoPE spec)."""
        d, h = cfg.head_dim, cfg.num_attention_heads
        self.n_heads, self.head_dim, self.rope_dim = h, d, cfg.qk_rope_head_dim
        self.window, self.eps, self.scale = cfg.sliding_window, cfg.rms_norm_eps, d ** -0.5
        self.rotary = Rotary(rope_spec_for(cfg, self.ratio), compute.ops)
        self.register_buffer("attn_sink", torch.empty(h, dtype=torch.float32))
        self.wq_a = Linear(cfg.hidden_size, cfg.q_lora_rank, FP8, compute)
        self.q_norm = RMSNorm(cfg.q_lora_rank, cfg.rms_norm_eps, ops=compute.ops)
        self.wq_b = Linear(cfg.q_lora_rank, h * d, FP8, compute)
        self.wkv = Linear(cfg.hidden_size, d, FP8, compute)
        self.kv_norm = RMSNorm(d, cfg.rms_norm_eps, ops=compute.ops)
        self.wo_a = Linear(h * d // cfg.o_groups, cfg.o_groups * cfg.o_lora_rank, FP8, compute)
        self.wo_b = Linear(cfg.o_groups * cfg.o_lora_rank, cfg.hidden_size, FP8, compute)

    def forward(self, x: torch.Tensor, batch: ForwardBatch, layer: int) -> torch.Tensor:
        """x [T, D] (normed sublayer input) -> [T, D]; reads and extends each sequence's cached rows of this
        layer (``layer`` is the cache index used for traces: the block index, MTP blocks counting from 0)."""
        c, pos = self.compute, batch.positions_on(x.device)
        self.rotary.begin_step(pos, batch.memo)  # q, kv and the output (and every layer of this spec) share them
        q, kv, qr = c.ops.attention_qkv(self, x, pos)  # [T, H, d], [T, d], [T, q_lora] (ops.reference.attention_input)
        view = batch.cache
        window = view.tensors.pool(view.window_group, "kv", self.layer_id)  # [blocks * B, d]
        window.index_copy_(0, view.window_write_slots(), stored(kv))
        extras = {}
        if self.compressor is not None:
            xf = x.float()  # both compressors project the fp32 rows (project's own cast is then a no-op)
            extras["comp"] = self.compressor.project(xf)
        if self.indexer is not None:
            extras["iq"] = self.indexer.queries(qr, pos)
            extras["iw"] = self.indexer.head_weights(x)
            extras["icomp"] = self.indexer.compressor.project(xf)
        decode = view.decode if self.batched_decode else None
        if decode is not None and decode.every_row:  # a pure decode step: one batched op, no loop
            o = attend_decode(self, q, extras, batch, layer)
        else:
            o = torch.empty_like(q)
            batched = set(decode.seqs) if decode is not None else set()
            for seq, span in enumerate(batch.spans):
                if seq not in batched:
                    o[span.begin:span.end] = self._attend(q, kv, window, extras, seq, span,
                                                          pos[span.begin:span.end], batch, (layer, seq))
            if batched:  # the decode rows of a mixed step (prefill chunks above)
                o[decode.rows] = attend_decode(self, q[decode.rows], extras, batch, layer)
        o = self.rotary.apply(o, pos, inverse=True)
        return self._project_out(o)

    def _entries(self, batch: ForwardBatch, seq: int, name: str, fresh: torch.Tensor, start: int,
                 end: int) -> KeyRows:
        """All compressed entries of ``seq`` visible after positions < end: the cached ones (groups completed
        before ``start``, read in place from the pool by slot) followed by ``fresh`` (completed now, also written
        to the cache) -> KeyRows [end // r, w], not copied (``ops.key_rows``: a 32K prompt has ~8,200 entries per
        CSA layer, 1M ~262,000)."""
        view, r = batch.cache, self.ratio
        group = f"c{r}"
        pool = view.tensors.pool(group, name, self.layer_id)
        before, after = start // r, end // r
        if after > before:
            pool.index_copy_(0, view.entry_slots(group, seq, before, after), stored(fresh))
        return KeyRows([(pool, view.entry_slots(group, seq, 0, before)), (fresh, None)])

    def _attend(self, q, kv, window, extras, seq: int, span: SeqSpan, positions, batch: ForwardBatch,
                key) -> torch.Tensor:
        """Attention of one sequence's new tokens (its rows of q and kv); extends its cached rows."""
        rows = slice(span.begin, span.end)
        start, end = span.start_pos, span.start_pos + span.num_tokens
        view = batch.cache
        num_prev = min(start, self.window - 1)
        prior = window.index_select(0, view.window_prior_slots(seq, num_prev))
        keys = torch.cat([prior, kv[rows]])  # raw rows of positions start-num_prev ..
        idx = window_indices(positions, start - num_prev, self.window)
        if self.compressor is not None:
            ckv, cscore = extras["comp"]
            ring = view.ring(f"c{self.ratio}", self.layer_id, seq, tail_prefix="")
            fresh = self.compressor.advance(ckv[rows], cscore[rows], start, ring)
            entries = self._entries(batch, seq, "kv", fresh, start, end)
            if self.indexer is not None:
                ikv, iscore = extras["icomp"]
                ring = view.ring("c4_index", self.layer_id, seq, tail_prefix="index_")
                fresh = self.indexer.compressor.advance(ikv[rows], iscore[rows], start, ring)
                # joined once (one [N, d_I] allocation): the indexer scores every entry for each query slice
                index_keys = as_tensor(self._entries(batch, seq, "index_keys", fresh, start, end))
                iq, iw = extras["iq"][rows], extras["iw"][rows]
                chosen = self._choose_entries(iq, iw, index_keys, positions, q[rows], entries, key)
                if batch.trace is not None:
                    batch.trace[key] = chosen
            else:
                visible = (positions + 1) // self.ratio
                chosen = torch.arange(entries.shape[0], device=positions.device)[None, :].expand(positions.shape[0], -1)
                chosen = chosen.masked_fill(chosen >= visible[:, None], -1)
            chosen = torch.where(chosen >= 0, chosen + keys.shape[0], chosen)
            keys = KeyRows([(keys, None), *entries.parts])  # window + chunk rows, then the entries in place
            idx = torch.cat([idx, chosen], dim=1)
        c = self.compute
        return c.ops.sparse_attention(q[rows], keys, idx, self.attn_sink, self.scale, c.quant)

    def _choose_entries(self, iq: torch.Tensor, iw: torch.Tensor, index_keys: torch.Tensor, positions: torch.Tensor,
                        q: torch.Tensor, entries: KeyRows, key) -> torch.Tensor:
        """The indexer's choice for S queries at ``positions`` -> compressed entry ids [S, k] (-1 = unused slot).

        iq/iw: the indexer's queries and head weights of these rows; index_keys [N, d_i]: every visible index key.
        Not used here, for a subclass that overrides this (training's ``ProbedAttention`` compares the attention's
        distribution over the entries with the indexer's): the attention's own queries q [S, H, d], its compressed
        entries (KeyRows [N, d], read in place; ``ops.key_rows.as_tensor`` joins them) and ``key`` (layer, seq)."""
        return self.indexer.select(iq, iw, index_keys, positions)

    def _project_out(self, o: torch.Tensor) -> torch.Tensor:
        """o [T, H, d] -> [T, D] via the block-diagonal wo_a (one [o_lora, H/G*d] block per group) and wo_b."""
        u = self.compute.ops.grouped_output(self.wo_a, o, self.cfg.o_groups, self.cfg.o_lora_rank)  # [T, G*r]
        return self.wo_b(u)
