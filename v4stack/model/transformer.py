"""The DeepSeek-V4 causal LM: embed -> hc_mult streams -> blocks -> hc_head -> norm -> fp32 head.

Device-agnostic and stateless between calls: per-sequence caches live in ``SequenceState`` objects that the
caller creates with :meth:`DeepseekV4.new_state` and passes in every ``ForwardBatch``. The module tree's
buffer names are the official checkpoint names, so ``state_dict()`` of a meta-device model is the
loader's table of expected tensors.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from v4stack.config.model_config import ModelConfig
from v4stack.cache.specs import CacheSpecs, cache_specs
from v4stack.cache.standalone import SequenceState, StandaloneCache
from v4stack.config.numerics import Numerics
from v4stack.model.batch import ForwardBatch
from v4stack.model.block import Block, hc_shape
from v4stack.model.compute import Compute
from v4stack.model.mhc import hc_head
from v4stack.model.mtp import MTPBlock
from v4stack.model.norm import RMSNorm
from v4stack.ops.table import OpTable, reference_ops


class Embedding(nn.Module):
    def __init__(self, vocab: int, dim: int) -> None:
        super().__init__()
        self.register_buffer("weight", torch.empty(vocab, dim, dtype=torch.bfloat16))

    def forward(self, ids: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        return self.weight[ids].to(dtype)


class Head(nn.Module):
    """Output projection in fp32. Like the reference, it keeps an fp32 copy of the bf16 weight (made on first
    use, not part of the state dict): converting [V, D] on every step would dominate small-model decode."""

    def __init__(self, vocab: int, dim: int) -> None:
        super().__init__()
        self.register_buffer("weight", torch.empty(vocab, dim, dtype=torch.bfloat16))
        self._fp32: torch.Tensor | None = None

    def fp32_weight(self) -> torch.Tensor:
        """The weight [V, D] in fp32 (the trainable twin's own fp32 weight, else the cached copy)."""
        if self.weight.dtype == torch.float32:  # trainable twin: the weight is already fp32 (and changing)
            return self.weight
        if self._fp32 is None or self._fp32.device != self.weight.device:
            self._fp32 = self.weight.float()
        return self._fp32

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.linear(x.float(), self.fp32_weight())


@dataclass
class ModelOutput:
    """logits [n, V] fp32 for the requested rows; hidden [T, hc, D]: final streams (MTP input)."""

    logits: torch.Tensor
    hidden: torch.Tensor


class DeepseekV4(nn.Module):
    history_tokens = 0  # token ids before a chunk its forward reads (V4.1's Engram reads some; V4 none)

    def __init__(self, cfg: ModelConfig, numerics: Numerics | None = None, ops: OpTable | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.compute = Compute(ops or reference_ops(), numerics or Numerics.reference(), cfg.weight_block,
                               cfg.weight_block)
        self.hc = hc_shape(cfg)
        self.embed = Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(Block(cfg, i, self.compute) for i in range(cfg.num_hidden_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, ops=self.compute.ops)
        self.head = Head(cfg.vocab_size, cfg.hidden_size)
        hc, dim = cfg.hc_mult, cfg.hidden_size
        self.register_buffer("hc_head_fn", torch.empty(hc, hc * dim, dtype=torch.float32))
        self.register_buffer("hc_head_base", torch.empty(hc, dtype=torch.float32))
        self.register_buffer("hc_head_scale", torch.empty(1, dtype=torch.float32))
        self.mtp = nn.ModuleList(MTPBlock(cfg, cfg.num_hidden_layers + k, self.compute)
                                 for k in range(cfg.num_mtp_layers))
        self._standalone: StandaloneCache | None = None

    @property
    def device(self) -> torch.device:
        return self.embed.weight.device

    def cache_specs(self, block_size: int | None = None, prefix_tails: bool = False,
                    with_mtp: bool = True) -> CacheSpecs:
        """What this model caches per layer kind, with rows stored in the compute dtype."""
        extra = {} if block_size is None else {"block_size": block_size}
        return cache_specs(self.cfg, self.compute.dtype, prefix_tails=prefix_tails, with_mtp=with_mtp, **extra)

    def new_state(self) -> SequenceState:
        """A new hand-driven sequence (tests, golden runner, training). Its rows live in one growable paged cache
        per model (made on first use, on the model's device); the engine uses its own cache instead."""
        if self._standalone is None or self._standalone.tensors.device != self.device:
            self._standalone = StandaloneCache(self.cache_specs(), self.device)
        return SequenceState(self._standalone)

    @torch.inference_mode()
    def forward(self, batch: ForwardBatch, logit_rows: torch.Tensor | None = None) -> ModelOutput:
        """Run every sequence of ``batch`` forward; logits for ``logit_rows`` of the flat token axis
        (default: each sequence's last new token). Advances each state's position."""
        return self.run(batch, logit_rows)

    def run(self, batch: ForwardBatch, logit_rows: torch.Tensor | None = None) -> ModelOutput:
        """``forward`` without inference mode, so autograd can record it (training, v4stack.training)."""
        ids = batch.token_ids.to(self.device)
        x = self.embed(ids, self.compute.dtype).unsqueeze(1).repeat(1, self.cfg.hc_mult, 1)  # [T, hc, D]
        for i, layer in enumerate(self.layers):
            x = layer(x, batch, i)
        self._keep_block_end_streams(x, batch)
        if logit_rows is None and batch.cache.pure_decode:
            last = x  # a decode step: every row is its sequence's last (x[rows] would copy x as it is)
        else:
            last = x[(batch.last_token_rows() if logit_rows is None else logit_rows).to(self.device)]
        collapsed = hc_head(last, self.hc_head_fn, self.hc_head_scale, self.hc_head_base, self.hc, self.compute.ops)
        logits = self.compute.ops.lm_head(self.head, self.norm(collapsed))
        batch.commit()
        return ModelOutput(logits, x)

    def _keep_block_end_streams(self, x: torch.Tensor, batch: ForwardBatch) -> None:
        """Store the final streams of tokens that end a cache block (MTP models): a prefix-cache hit ending
        there reruns the MTP row of that position, which needs them."""
        targets = batch.cache.hidden_targets()
        if targets is None:
            return
        rows, slots = targets
        for block in self.mtp:
            batch.cache.tensors.pool("mtp_window", "hidden", block.layer_id).index_copy_(
                0, slots, x[rows].flatten(1).detach())

    @torch.inference_mode()
    def mtp_forward(self, batch: ForwardBatch, hidden: torch.Tensor,
                    logit_rows: torch.Tensor | None = None) -> torch.Tensor:
        """Draft logits of the first MTP block. ``batch`` is built with ``is_mtp=True`` from the *next*
        token ids (id of position t+1 at row t); hidden [T, hc, D]: the main model's final streams for the
        same positions. Returns [n, V] fp32 and advances each state's MTP position."""
        return self.run_mtp(batch, hidden, logit_rows)

    def run_mtp(self, batch: ForwardBatch, hidden: torch.Tensor,
                logit_rows: torch.Tensor | None = None) -> torch.Tensor:
        """``mtp_forward`` without inference mode (training)."""
        if not self.mtp:
            raise RuntimeError("this checkpoint has no MTP block")
        block = self.mtp[0]
        embedded = self.embed(batch.token_ids.to(self.device), self.compute.dtype)
        y = block.draft_hidden(embedded, hidden.to(self.compute.dtype), batch, 0)
        rows = (batch.last_token_rows() if logit_rows is None else logit_rows).to(self.device)
        logits = self.compute.ops.lm_head(self.head, y[rows])
        batch.commit()
        return logits
