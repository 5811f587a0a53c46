"""The V4.1 attention layer with its CSA2 role (model_spec.md §3.3, §3.6).

Common to every role (the V4 path minus the per-head q rescale):
    qr = q_norm(wq_a x)             q = RoPE(wq_b qr)                       [S, H, d]
    kv = FP8_32(RoPE(kv_norm(wkv x)))                                       [S, d]  window rows, all dims
Compressed entries (ratio r > 0) come from the layer's kv source (the latest kv-source layer of its ratio):
    full     owns the compressor; its indexer owns the keys; scores all visible entries; publishes top-k
             (and, as candidate source, the candidate blocks)
    reindex  own index q/weights over its kv source's keys, inside the candidate blocks; publishes top-k
    reuse    no indexer: uses the top-k of its index source from the same forward
Entry j: FP4_16e4m3(RoPE_{j r}(latent_j)). Keys = [last W raw rows..., selected entries] with the sink;
output: inverse RoPE, grouped wo_a, wo_b (``Attention._project_out``).
"""

from __future__ import annotations

import torch
from torch import nn

from v4stack.config.v41_config import FULL, REINDEX, V41Config
from v4stack.model.attention import Attention, window_indices
from v4stack.model.compute import Compute
from v4stack.model.v41.compressor import V41Compressor
from v4stack.model.v41.indexer import V41Indexer, select_candidate_blocks
from v4stack.model.v41.state import CSA2Shared, V41State

WINDOW_KV_QUANT_BLOCK = 32  # V4.1 window KV: FP8 blocks of 32 over all head dims (model_spec.md §3.12)
COMPRESSED_KV_QUANT_BLOCK = 16  # V4.1 compressed KV: FP4 blocks of 16 with E4M3 scales


class V41Attention(Attention):
    """Shares the V4 projections' layout and output path; CSA2 replaces the V4 compressor/indexer."""

    def __init__(self, cfg: V41Config, layer_id: int, compute: Compute) -> None:
        nn.Module.__init__(self)  # V4's constructor would build V4 compressors for ratio > 0
        self.cfg, self.compute, self.layer_id = cfg, compute, layer_id
        self.ratio = cfg.compress_ratio(layer_id)  # DSpark stages (ids >= num_hidden_layers) have ratio 0
        self._build_projections(cfg, compute)
        self.role = cfg.role(layer_id)
        self.kv_source = cfg.kv_source(layer_id) if self.ratio else None
        self.index_source = cfg.index_source(layer_id) if self.ratio else None
        self.compressor = self.indexer = None
        if self.role == FULL:
            self.compressor = V41Compressor(cfg.hidden_size, self.head_dim, self.ratio, cfg.rms_norm_eps, compute)
        if self.role in (FULL, REINDEX):
            self.indexer = V41Indexer(cfg.hidden_size, cfg.q_lora_rank, self.head_dim, cfg.index_n_heads, cfg.index_head_dim,
                                      cfg.index_topk, self.ratio, cfg.rms_norm_eps, compute, self.rotary,
                                      owns_keys=self.role == FULL)
        self.is_candidate_source = layer_id == cfg.candidate_source_layer_id
        self.uses_candidates = cfg.uses_candidates(layer_id)

    # ---- pieces ---------------------------------------------------------------------------------
    def queries(self, x: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x [S, D] -> (qr [S, q_lora], q [S, H, d] roped)."""
        qr = self.q_norm(self.wq_a(x))
        return qr, self.rotary.apply(self.wq_b(qr).unflatten(-1, (self.n_heads, self.head_dim)), positions)

    def window_rows(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """x [S, D] -> raw KV rows [S, d]: kv_norm(wkv x), RoPE, FP8 QAT over all dims."""
        c = self.compute
        kv = self.rotary.apply(self.kv_norm(self.wkv(x)), positions)
        return c.ops.quant_dequant_fp8(kv, WINDOW_KV_QUANT_BLOCK).to(c.dtype) if c.quant else kv

    def finish_entries(self, latent: torch.Tensor, first_entry: int) -> torch.Tensor:
        """Un-roped latents [n, d] of entries first_entry.. -> stored compressed KV (RoPE at j*r, FP4 QAT)."""
        c = self.compute
        positions = (torch.arange(latent.shape[0], device=latent.device) + first_entry) * self.ratio
        kv = self.rotary.apply(latent, positions)
        return c.ops.quant_dequant_fp4_e4m3_scale(kv, COMPRESSED_KV_QUANT_BLOCK).to(c.dtype) if c.quant else kv

    def attend_window(self, q: torch.Tensor, kv: torch.Tensor, prior: torch.Tensor, positions: torch.Tensor,
                      extra_keys: torch.Tensor | None = None, extra_idx: torch.Tensor | None = None) -> torch.Tensor:
        """Sparse attention over [prior raw rows, new raw rows, extra keys]: window indices then ``extra_idx``
        (entries of ``extra_keys``, -1 = none) -> o [S, H, d] before the inverse RoPE."""
        start = int(positions[0])
        keys = torch.cat([prior, kv])
        idx = window_indices(positions, start - prior.shape[0], self.window)
        if extra_keys is not None:
            idx = torch.cat([idx, torch.where(extra_idx >= 0, extra_idx + keys.shape[0], extra_idx)], dim=1)
            keys = torch.cat([keys, extra_keys])
        c = self.compute
        return c.ops.sparse_attention(q, keys, idx, self.attn_sink, self.scale, c.quant)

    # ---- the layer ------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, state: V41State, shared: CSA2Shared) -> torch.Tensor:
        """x [S, D] (normed input of positions state.num_tokens..) -> [S, D]; extends this layer's rows of
        ``state`` (window, and for a full layer its compressed entries and index keys)."""
        start = state.num_tokens
        positions = torch.arange(start, start + x.shape[0], device=x.device)
        qr, q = self.queries(x, positions)
        kv = self.window_rows(x, positions)
        prior = state.prior_window(self.layer_id, kv)
        entries = chosen = None
        if self.ratio:
            if self.role == FULL:
                self._extend_source(x, start, state)
            entries = state.source(self.kv_source)[0]
            if self.indexer is not None:
                chosen = self._select(x, qr, positions, state, shared)
                shared.topk[self.layer_id] = chosen
            else:
                chosen = shared.topk[self.index_source]
        o = self.attend_window(q, kv, prior, positions, entries, chosen)
        state.keep_window(self.layer_id, prior, kv, self.window - 1)
        return self._project_out(self.rotary.apply(o, positions, inverse=True))

    def _extend_source(self, x: torch.Tensor, start: int, state: V41State) -> None:
        """Compress the new tokens; append finished entries and their index keys to this source's rows."""
        latent = self.compressor.advance(x, start, state, self.layer_id)
        first = state.num_entries(self.layer_id)
        state.extend_source(self.layer_id, self.finish_entries(latent, first), self.indexer.keys(latent, first))

    def _select(self, x, qr, positions, state: V41State, shared: CSA2Shared) -> torch.Tensor:
        keys = state.source(self.kv_source)[1]
        scores = self.indexer.scores(self.indexer.queries(qr, positions), self.indexer.head_weights(x), keys,
                                     positions)
        visible = (positions + 1) // self.ratio
        if self.is_candidate_source:
            shared.candidates[self.layer_id] = select_candidate_blocks(
                scores, visible, self.cfg.candidate_topk_blocks, self.cfg.candidate_block_size)
        if self.uses_candidates:
            scores = scores.masked_fill(~shared.candidates[self.cfg.candidate_source_layer_id], float("-inf"))
        chosen = self.indexer.select(scores, positions)
        if shared.trace is not None:
            shared.trace[self.layer_id] = chosen
        if shared.scores is not None:
            shared.scores[self.layer_id] = scores
        return chosen
