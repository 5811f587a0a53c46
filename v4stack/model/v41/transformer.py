"""The DeepSeek-V4.1 causal LM (model_spec.md §3.11, V4.1):

    hash ids (from the token ids, before the pass) -> embed -> hc streams
    -> for each layer: [Engram] -> [record mean_streams for DSpark] -> V41Block (single-pass mHC)
    -> collapse with the last pre_f -> norm -> fp32 head

Hand-driven: one sequence per call, any chunk length from its current position (``V41State``). The engine:
``forward(batch: ForwardBatch)`` runs each sequence of the batch on the paged cache (``PagedV41State``), one
after another through the same layers (the per-token maths is not yet batched across sequences). The module
tree's buffer names are the official checkpoint names (``modelio.inventory``); the DSpark stages live under
``mtp.{k}`` (``dspark.DSparkHead``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from v4stack.cache.specs import CacheSpecs, v41_cache_specs
from v4stack.config.numerics import Numerics
from v4stack.config.v41_config import V41Config
from v4stack.model.batch import ForwardBatch
from v4stack.model.compute import Compute
from v4stack.model.norm import RMSNorm
from v4stack.model.transformer import Embedding, Head
from v4stack.model.v41.block import V41Block, one_hot_mix
from v4stack.model.v41.dspark import DraftOutput, DSparkHead
from v4stack.model.v41.engram_hash import NgramHasher, check_table_sizes
from v4stack.model.v41.paged import PagedV41State
from v4stack.model.v41.state import CSA2Shared, V41State
from v4stack.ops.table import OpTable, reference_ops


@dataclass
class V41Output:
    """logits [n, V] fp32 of the requested rows; main_hidden [S, n_targets * D] fp32: the DSpark input (mean over
    streams of each target layer's input); the rest only when ``record`` was asked for."""

    logits: torch.Tensor
    main_hidden: torch.Tensor | None
    layer_out: list[torch.Tensor] = field(default_factory=list)  # streams after each block [S, hc, D]
    final_pre_mix: torch.Tensor | None = None  # [S, hc]
    topk: dict[int, torch.Tensor] = field(default_factory=dict)  # index source -> [S, k]
    index_scores: dict[int, torch.Tensor] = field(default_factory=dict)  # index source -> masked scores [S, N]
    hash_ids: torch.Tensor | None = None  # [n_engram_layers, S, K]


class ModuleTableRows:
    """Engram rows from the model's own table buffers (the device tier)."""

    def __init__(self, model: "DeepseekV41") -> None:
        self._tables = [model.layers[i].engram.embed for i in model.cfg.engram.layer_ids]

    def rows(self, table: int, ids: torch.Tensor) -> torch.Tensor:
        return self._tables[table].lookup(ids)

    def prefetch(self, ids: torch.Tensor) -> None:
        """Nothing to fetch: the rows are resident."""


class DeepseekV41(nn.Module):
    def __init__(self, cfg: V41Config, numerics: Numerics | None = None, ops: OpTable | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.compute = Compute(ops or reference_ops(), numerics or Numerics.reference(), cfg.weight_block,
                               cfg.weight_block)
        if cfg.engram is not None:
            check_table_sizes(cfg.engram)
        self.embed = Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(V41Block(cfg, i, self.compute) for i in range(cfg.num_hidden_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.head = Head(cfg.vocab_size, cfg.hidden_size)
        self.mtp = DSparkHead(cfg, self.compute) if cfg.dspark is not None else None
        self.hasher: NgramHasher | None = None
        self.engram_rows = None  # EngramRows; the module's own tables unless a tiered store is attached

    @property
    def device(self) -> torch.device:
        return self.embed.weight.device

    def new_state(self) -> V41State:
        return V41State()

    @property
    def history_tokens(self) -> int:
        """Token ids before a chunk that its forward reads (Engram n-grams reach N-1 positions back)."""
        return self.cfg.engram.max_ngram_size - 1 if self.cfg.engram is not None else 0

    def cache_specs(self, block_size: int | None = None, prefix_tails: bool = False,
                    with_mtp: bool = False) -> CacheSpecs:
        """The engine's pools for this model (``v41_cache_specs``). V4.1 needs no compressor tails for prefix
        hits (every group is closed at a block boundary), so ``prefix_tails`` adds nothing; the engine does not
        run the DSpark head, so ``with_mtp`` is refused (the engine refuses enable_mtp first, ``check_mtp``)."""
        if with_mtp:
            raise ValueError("with_mtp: DeepSeek-V4.1 has no MTP window in the engine's cache (its DSpark head keeps "
                             "its own windows on a hand-driven state)")
        extra = {} if block_size is None else {"block_size": block_size}
        return v41_cache_specs(self.cfg, self.compute.dtype, **extra)

    def forward_batch(self, batch: ForwardBatch, logit_rows: torch.Tensor | None = None) -> V41Output:
        """The engine's forward: every sequence of ``batch`` (its blocks allocated, ``batch.history`` holding the
        token ids before each span) advanced on the paged cache. Logits of the flat rows ``logit_rows`` (default:
        each sequence's last row), in row order; hidden streams are not returned (no MTP block here)."""
        rows = batch.last_token_rows() if logit_rows is None else logit_rows.cpu()
        ratios = {s: self.cfg.compress_ratio(s) for s in self.cfg.kv_source_layer_ids}
        logits = []
        for i, span in enumerate(batch.spans):
            mine = rows[(rows >= span.begin) & (rows < span.end)] - span.begin
            prior = torch.tensor(batch.history[i] if batch.history else [], dtype=torch.long)
            history = self.hasher.compress(prior) if self.hasher is not None else prior
            state = PagedV41State(batch.cache, i, ratios, history)
            out = self.forward(state, batch.token_ids[span.begin:span.end], logit_rows=mine)
            logits.append(out.logits)
        return V41Output(logits=torch.cat(logits), main_hidden=None)

    def set_token_map(self, cmap: torch.Tensor) -> None:
        """The Engram compressed token map of this checkpoint's tokenizer (required before a forward)."""
        self.hasher = NgramHasher(self.cfg.engram, cmap)

    def hash_ids(self, state: V41State, token_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Row ids of every Engram layer for the next chunk of ``state``, from the token ids alone ->
        (ids [n_layers, S, K], compressed ids [S]); the state is not advanced."""
        if self.hasher is None:
            raise RuntimeError("this V4.1 model has no Engram token map: call set_token_map (the loader does it "
                               "when the checkpoint has tokenizer.json or compressed_token_map.safetensors)")
        compressed = self.hasher.compress(token_ids)
        return self.hasher.hash_ids(compressed, state.engram_history), compressed

    def advance_engram_history(self, state: V41State, compressed: torch.Tensor) -> None:
        """Keep the compressed ids of the last N-1 positions (all the next chunk's n-grams can reach)."""
        keep = self.hasher.history
        state.engram_history = torch.cat([state.engram_history, compressed])[-keep:] if keep else compressed[:0]

    @torch.inference_mode()
    def dspark_seed(self, state: V41State, main_hidden: torch.Tensor) -> None:
        """Feed the DSpark rings with main_hidden [S, n_t D] of the main positions not seeded yet (a prefill's
        ``V41Output.main_hidden``); the main model's state is unchanged."""
        self._require_dspark()
        self.mtp.seed(state, main_hidden.to(self.device))

    @torch.inference_mode()
    def draft(self, state: V41State, last_token: int, main_hidden: torch.Tensor | None = None,
              forced: torch.Tensor | None = None) -> DraftOutput:
        """The draft API for speculative decoding: after a main forward whose newest token is followed by
        ``last_token`` (its argmax or sample), seed the rings with that forward's ``main_hidden`` (if given) and
        draft ``dspark_block_size`` tokens: ids [B], confidences [B], logits [B, V] (Markov bias included).
        ``forced`` [B] teacher-forces the drafted chain (golden comparisons)."""
        self._require_dspark()
        if not 0 <= int(last_token) < self.cfg.vocab_size:
            raise ValueError(f"last_token must be in 0..{self.cfg.vocab_size - 1}")
        if main_hidden is not None:
            self.dspark_seed(state, main_hidden)
        if state.num_draft_tokens != state.num_tokens:
            raise ValueError(f"DSpark rings hold {state.num_draft_tokens} main positions, the sequence has "
                             f"{state.num_tokens}: pass each forward's main_hidden")
        return self.mtp.draft(state, int(last_token), self.embed, self.head, forced)

    def _require_dspark(self) -> None:
        if self.mtp is None:
            raise RuntimeError("this checkpoint has no DSpark head (no dspark_* keys in its config)")

    @torch.inference_mode()
    def forward(self, state: V41State | PagedV41State | ForwardBatch, token_ids: torch.Tensor | None = None,
                logit_rows: torch.Tensor | None = None, record: bool = False) -> V41Output:
        """Run the next chunk of ``state`` (token ids [S] at positions state.num_tokens..) and advance it.
        Logits for ``logit_rows`` (default: the last token). ``record`` keeps per-layer outputs and top-k.
        A ``ForwardBatch`` (the engine's model runner) goes to ``forward_batch``."""
        if isinstance(state, ForwardBatch):
            return self.forward_batch(state, logit_rows)
        cfg = self.cfg
        if token_ids.dim() != 1 or token_ids.numel() == 0:
            raise ValueError("token_ids must be a non-empty 1-D tensor")
        if int(token_ids.min()) < 0 or int(token_ids.max()) >= cfg.vocab_size:
            raise ValueError(f"token ids must be in 0..{cfg.vocab_size - 1}")
        ids = token_ids.to(self.device)
        out = V41Output(logits=torch.empty(0), main_hidden=None)
        engram_ids = None
        if cfg.engram is not None:
            engram_ids, compressed = self.hash_ids(state, token_ids)
            rows_source = self.engram_rows or ModuleTableRows(self)
            rows_source.prefetch(engram_ids)
            out.hash_ids = engram_ids if record else None
        shared = CSA2Shared(trace={} if record else None, scores={} if record else None)
        x = self.embed(ids, self.compute.dtype).unsqueeze(1).repeat(1, cfg.hc_mult, 1)  # [S, hc, D]
        pre = one_hot_mix(ids.numel(), cfg.hc_mult, x.device)
        targets = () if cfg.dspark is None else cfg.dspark.target_layer_ids
        captured = []
        for i, block in enumerate(self.layers):
            if block.engram is not None:
                table = cfg.engram.layer_ids.index(i)
                x = block.engram(x, rows_source.rows(table, engram_ids[table]))
            if i in targets:
                captured.append(x.float().mean(dim=1).to(x.dtype).float())  # [S, D], rounded like the streams
            x, pre = block(x, pre, ids, lambda y, a=block.attn: a(y, state, shared))
            if record:
                out.layer_out.append(x)
        rows = torch.tensor([ids.numel() - 1]) if logit_rows is None else logit_rows
        rows = rows.to(self.device)
        collapsed = self.compute.ops.hc_collapse(x[rows], pre[rows]).to(x.dtype)
        out.logits = self.head(self.norm(collapsed))
        out.main_hidden = torch.cat(captured, dim=-1) if captured else None
        if record:
            out.final_pre_mix, out.topk, out.index_scores = pre, dict(shared.trace), dict(shared.scores)
        if cfg.engram is not None:
            self.advance_engram_history(state, compressed)
        state.num_tokens += ids.numel()
        return out
