"""The DSpark block drafter of V4.1 (model_spec.md §3.10): three stages ``mtp.0..2`` that draft a block of
``dspark_block_size`` tokens in one pass, for speculative decoding.

  main_x  = main_norm(main_proj(main_hidden))        main_hidden [S, n_t D]: mean over streams of each target
                                                     layer's input, per main position (stage 0 owns main_proj)
  seeding : every stage writes kv_norm(wkv(main_x)) (RoPE at the main position, FP8 QAT) into its own ring of the
            last W main positions; the main model's state is never touched
  block   : ids [last token, noise x (B-1)] at positions n .. n+B-1 (n = main tokens so far) -> shared embed ->
            hc streams -> 3 V4.1 blocks (single-pass mHC from the one-hot mix; attention = ring rows + all B block
            keys, no causal mask inside the block; MoE with the stage's own experts)
            -> collapse with the last pre_f = h [B, D] -> norm -> shared head -> logits [B, V]
  for i in 0..B-1: logits_i += markov_head(prev token) (embed [V, r] row, times head [V, r]^T);
            draft_i = argmax(logits_i); confidence_i = proj([h_i, markov embed row]) (fp32, no squashing);
            prev = draft_i (prev of i = 0 is the last token)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from v4stack.config.v41_config import V41Config
from v4stack.model.compute import Compute
from v4stack.model.linear import DENSE, FP8, Linear
from v4stack.model.norm import RMSNorm
from v4stack.model.transformer import Embedding
from v4stack.model.v41.attention import V41Attention
from v4stack.model.v41.block import V41Block, one_hot_mix
from v4stack.model.v41.state import V41State


@dataclass(frozen=True)
class DraftOutput:
    """ids [B] int64 drafted tokens; confidences [B] fp32; logits [B, V] fp32 including the Markov bias."""

    ids: torch.Tensor
    confidences: torch.Tensor
    logits: torch.Tensor


class DSparkAttention(V41Attention):
    """Window-only attention over the stage's ring of main-model rows plus the draft block's own keys."""

    def seed(self, main_x: torch.Tensor, positions: torch.Tensor, state: V41State, stage: int) -> None:
        """main_x [S, D] of main positions ``positions`` -> appended to this stage's ring (last W kept)."""
        rows = self.window_rows(main_x, positions)
        ring = state.draft_window.get(stage)
        state.draft_window[stage] = (rows if ring is None else torch.cat([ring, rows]))[-self.window:].detach()

    def draft(self, x: torch.Tensor, positions: torch.Tensor, state: V41State, stage: int) -> torch.Tensor:
        """x [B, D] (normed draft-block input) -> [B, D]; every query sees every ring row and every block key."""
        _, q = self.queries(x, positions)
        kv = self.window_rows(x, positions)
        ring = state.draft_window.get(stage, kv[:0])
        keys = torch.cat([ring, kv])
        idx = torch.arange(keys.shape[0], device=x.device).expand(x.shape[0], -1)
        c = self.compute
        o = c.ops.sparse_attention(q, keys, idx, self.attn_sink, self.scale, c.quant)
        return self._project_out(self.rotary.apply(o, positions, inverse=True))


class MarkovHead(nn.Module):
    """Low-rank bigram bias: bias(prev) = head.weight @ embed.weight[prev]   ([V, r] each)."""

    def __init__(self, vocab: int, rank: int, compute: Compute) -> None:
        super().__init__()
        self.embed = Embedding(vocab, rank)
        self.head = Linear(rank, vocab, DENSE, compute)


class ConfidenceHead(nn.Module):
    """Scalar confidence of a drafted token from [h, Markov embedding] (fp32 linear; the reference keeps the
    weight in fp32, the checkpoint's bf16 values are exact)."""

    def __init__(self, dim: int, rank: int, compute: Compute) -> None:
        super().__init__()
        self.proj = Linear(dim + rank, 1, DENSE, compute, dense_compute_fp32=True)


class DSparkStage(V41Block):
    """One stage ``mtp.k``: a V4.1 block with draft attention and the stage's own MoE size; stage 0 also owns the
    main projection, the last stage the final norm and the Markov and confidence heads."""

    def __init__(self, cfg: V41Config, stage: int, compute: Compute) -> None:
        layer_id = cfg.num_hidden_layers + stage
        super().__init__(cfg, layer_id, compute, attn=DSparkAttention(cfg, layer_id, compute),
                         moe_cfg=cfg.draft_view())
        d, spec = cfg.hidden_size, cfg.dspark
        self.stage = stage
        if stage == 0:
            self.main_proj = Linear(len(spec.target_layer_ids) * d, d, FP8, compute)
            self.main_norm = RMSNorm(d, cfg.rms_norm_eps)
        if stage == spec.num_stages - 1:
            self.norm = RMSNorm(d, cfg.rms_norm_eps)
            self.markov_head = MarkovHead(cfg.vocab_size, spec.markov_rank, compute)
            self.confidence_head = ConfidenceHead(d, spec.markov_rank, compute)


class DSparkHead(nn.ModuleList):
    """The stages, plus the seeding and drafting that use them (embedding and head shared with the model)."""

    def __init__(self, cfg: V41Config, compute: Compute) -> None:
        super().__init__(DSparkStage(cfg, k, compute) for k in range(cfg.dspark.num_stages))
        self.cfg, self.compute = cfg, compute

    def seed(self, state: V41State, main_hidden: torch.Tensor) -> None:
        """Write main_hidden [S, n_t D] (main positions state.num_draft_tokens..) into every stage's ring."""
        first = self[0]
        main_x = first.main_norm(first.main_proj(main_hidden.to(self.compute.dtype)))
        positions = torch.arange(state.num_draft_tokens, state.num_draft_tokens + main_x.shape[0],
                                 device=main_x.device)
        for stage in self:
            stage.attn.seed(main_x, positions, state, stage.stage)
        state.num_draft_tokens += main_x.shape[0]

    def draft(self, state: V41State, last_token: int, embed: Embedding, head: nn.Module,
              forced: torch.Tensor | None = None) -> DraftOutput:
        """Draft a block after the main model's last token ``last_token`` (at position state.num_tokens).
        ``forced`` [B]: teacher-force the Markov chain (the previous token of position i+1 is forced[i] instead of
        the argmax), which is how a verifier compares logits past a near-tie."""
        cfg, spec = self.cfg, self.cfg.dspark
        device = embed.weight.device
        ids = torch.full((spec.block_size,), spec.noise_token_id, dtype=torch.long, device=device)
        ids[0] = last_token
        positions = torch.arange(state.num_tokens, state.num_tokens + spec.block_size, device=device)
        x = embed(ids, self.compute.dtype).unsqueeze(1).repeat(1, cfg.hc_mult, 1)  # [B, hc, D]
        pre = one_hot_mix(spec.block_size, cfg.hc_mult, device)
        for stage in self:
            x, pre = stage(x, pre, ids, lambda y, s=stage: s.attn.draft(y, positions, state, s.stage))
        last = self[-1]
        h = self.compute.ops.hc_collapse(x, pre).to(x.dtype)  # [B, D]
        logits = head(last.norm(h))  # [B, V] fp32
        markov_table = last.markov_head.embed.weight
        markov_out = last.markov_head.head.weight.float()  # [V, r]
        drafted, confidences, prev = [], [], last_token
        for i in range(spec.block_size):
            e = markov_table[prev]  # [r]
            logits[i] += markov_out @ e.float()
            drafted.append(int(logits[i].argmax()))
            prev = drafted[-1] if forced is None else int(forced[i])
            confidences.append(last.confidence_head.proj(torch.cat([h[i], e.to(h.dtype)]).float())[0])
        return DraftOutput(torch.tensor(drafted), torch.stack(confidences).float(), logits)
