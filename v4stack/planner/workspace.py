"""Activation workspace of one prefill chunk: what v4stack's engine allocates beyond the weights and cache pools.

The engine prefills a prompt in chunks of T tokens (``max_num_batched_tokens``). Inside one layer a chunk's
activations are

* tensors proportional to T that live through the layer (queries, compressor rows, index queries, mHC streams,
  index lists);
* the largest temporary phase of the layer, each bounded by a slice budget of the code, not by the prompt: the
  FP4 simulation of the index queries (``QUANT_BUDGET`` elements at a time), the indexer's scoring
  (``SCORE_BUDGET`` elements of [queries, H_I, entries], ``INDEX_QUERY_CHUNK`` queries scored at once), the
  compressor's projections, the fast sparse attention (its C kernel: the output and the lists; its torch form:
  ``SCORE_ELEMENTS`` scores of [queries, H, ``KEY_SLICE``] at a time), the routed experts;
* one CSA layer's index keys joined out of the pool for the indexer (``INDEX_KEY_COPIES``, bf16): the only term
  that grows with the context, d_I x 2 B per entry. The compressed entries themselves are not copied: the
  attention reads them from the cache pool one key slice at a time (``ops/key_rows.py``).

Figures are bytes on one device for the bf16 numerics (the engine's default ``fast``), one sequence in prefill.
``tests/planner/test_planner_workspace.py`` ties the formula to the code: it is at least the activation peak
``engine/activation_probe.py`` measures on a small config at two contexts, and at most 1.5x of it, and the slice
budgets below equal the code's. That test is on V4 layers; V4.1's layers (ratio 1 and 2, candidate re-indexing)
are priced with the same terms by analogy, not probed. Not counted: the Python/torch runtime and allocator
retention (the plan's reserve), weights prepared for the fast kernels (``ops/fast/prepare.py``).
"""

from __future__ import annotations

from v4stack.planner.model_shape import ModelShape

BF16, FP32, FP64, I64 = 2, 4, 8, 8

# The code's slice budgets (tests/planner/test_planner_workspace.py asserts they equal the code's constants).
INDEX_QUANT_BUDGET = 1 << 20   # model/indexer.py QUANT_BUDGET: index-query elements FP4-simulated at once
INDEX_SCORE_BUDGET = 1 << 24   # model/indexer.py SCORE_BUDGET: [queries, H_I, entries] elements scored at once
QUERY_CHUNK = 512              # ops/fast/attention.py QUERY_CHUNK: queries per GEMM at most
INDEX_QUERY_CHUNK = 128        # ops/fast/attention.py INDEX_QUERY_CHUNK: queries the fast indexer scores at once
ATTN_SCORE_ELEMENTS = 1 << 21  # ops/fast/attention.py SCORE_ELEMENTS: [queries, H, key slice] scores at once
ATTN_KEY_SLICE = 2048          # ops/fast/attention.py KEY_SLICE: key rows upcast and scored at once

# Bytes per element of each phase's temporaries (counted from the probe's live tensors at each phase's peak).
# FP4 simulation of the index queries: the C Hadamard butterflies' output in the input dtype (bf16) and the C FP4
# quant-dequant's fp32 output of every element of its slice (ops/fast/quant.py; the torch forms, run without a C
# compiler, make about seven fp32 temporaries and two bool masks more).
QUANT_BYTES = BF16 + FP32
# The compressor's prefill: its fp32 projections a, g [T, coff*d] (coff = 2 for the overlapping ratio-4 pools),
# their gated, softmaxed and grouped copies and the pooled entries: about this many [T, coff*d] fp32 arrays alive at
# the pool's peak (probe: 15 MiB above the chunk's live tensors at T = 512, d = 512, coff = 2).
COMPRESSOR_COPIES = 8
# Indexer scoring: ReLU(q k^T) [rows, H_I, N] and its head-weighted copy, both bf16 while they are summed.
INDEX_SCORE_BYTES = 2 * BF16
# Per [query, entry] of the scored slice: the head sum (bf16), its fp32 copy, the masked copy, and the stable
# sort's values (fp32) and indices (int64).
TOPK_BYTES = BF16 + 3 * FP32 + I64
# Per score of one [rows, H, key slice] block of the fast attention: the fp64 GEMM output, its scaled fp32 copy,
# the dense fp32 weights scattered back for P.V (and the boolean slot masks, below one byte per score).
ATTN_SCORE_BYTES = FP64 + 2 * FP32
# Per list slot of a query slice: scores gathered in list order, the running maxima, numerators, rescale factors
# and weights, fp32 [rows, H, slots].
ATTN_SLOT_BYTES = 5 * FP32
# Copies of one CSA layer's index keys alive during its attention: the pool rows and the chunk's fresh keys joined
# once (model/attention.py ``_attend``: the indexer scores all of them for every query slice). The compressed
# entries are read in place (ops/key_rows.py): no copy of them is counted.
INDEX_KEY_COPIES = 1
# Index lists [chunk, window + entries] int64 of a layer that lists all its entries (HCA), alive at once while they
# are built (model/attention.py: the entry ids, their offset copy, the joined list); counted where they are wider
# than the indexer layers' lists (which ``live_per_token`` holds).
HCA_LIST_COPIES = 3
# Logits rows of the sampled positions (fp32) and the sampler's softmax of them.
LOGIT_COPIES = 2


def _csa_ratio(m: ModelShape) -> int | None:
    """The smallest ratio of the layers with an indexer (4 for V4), None without indexer layers."""
    ratios = [l.ratio for l in m.main_layers if l.index_scores]
    return min(ratios) if ratios else None


def _entries(m: ModelShape, context: int) -> int:
    """Compressed entries of the densest compressed layer at ``context`` tokens (0 without compression)."""
    ratio = _csa_ratio(m) or min([l.ratio for l in m.main_layers if l.ratio > 1] or [0])
    return context // ratio if ratio else 0


def live_per_token(m: ModelShape, heads: int) -> float:
    """Bytes per chunk token alive through a layer: queries and attention output [T, H, d] bf16, the mHC streams
    (the block input and its mixed copy, [T, hc x D] bf16), and on indexer layers the ratio-4 compressor's kv and
    gate rows [T, 2 x 2d] and the indexer compressor's [T, 2 x 2 d_I] (fp32 GEMM outputs), the index queries
    [T, H_I, d_I] bf16 and the index lists [T, window + topk] int64."""
    b = 2 * heads * m.head_dim * BF16 + 2 * m.hc_mult * m.hidden * BF16
    if _csa_ratio(m) is not None:
        overlap = 2  # the ratio-4 compressors pool 2r rows of width 2d (model_spec s3.4)
        b += (2 * overlap * (m.head_dim + m.index_head_dim) * FP32 + m.index_heads * m.index_head_dim * BF16
              + (m.window + m.index_topk) * I64)
    else:
        b += m.window * I64
    return b


def phases(m: ModelShape, heads: int, context: int, chunk: int, fused_attention: bool = True) -> dict[str, float]:
    """The temporary phases of one layer for a chunk of ``chunk`` tokens ending at ``context`` (bytes each).
    ``fused_attention``: the fast sparse attention runs its C kernel over the listed rows (the fast numerics with
    a C compiler); False prices the torch form ``ops.fast.attention.sliced_attention`` instead."""
    ratio, entries = _csa_ratio(m), _entries(m, context)
    out: dict[str, float] = {}
    if ratio is not None:
        n_i = max(1, entries)
        out["index query FP4"] = chunk * m.index_heads * m.index_head_dim * BF16 + INDEX_QUANT_BUDGET * QUANT_BYTES
        select_rows = min(chunk, max(1, INDEX_SCORE_BUDGET // (m.index_heads * n_i)))
        score_rows = min(select_rows, INDEX_QUERY_CHUNK)
        out["index scores"] = (score_rows * m.index_heads * n_i * INDEX_SCORE_BYTES
                               + select_rows * n_i * TOPK_BYTES)
    keys = m.window + chunk + entries  # window + chunk rows + compressed entries of one layer
    cols = min(ATTN_KEY_SLICE, keys)
    rows = min(chunk, QUERY_CHUNK, max(1, ATTN_SCORE_ELEMENTS // (heads * cols)))
    # index-list slots: window + top-k on indexer layers; a layer without indexer lists every visible entry
    # (HCA: context / 128, more than top-512 beyond 64K tokens) in lists [chunk, slots] int64 it builds in
    # ``HCA_LIST_COPIES`` copies (the entry ids, their offset copy, the joined window + entries list)
    hca = max([context // l.ratio for l in m.main_layers if l.ratio > 1 and not l.index_scores] or [0])
    slots = m.window + max(m.index_topk if ratio else 0, hca)
    hca_lists = HCA_LIST_COPIES * chunk * (m.window + hca) * I64 if hca > m.index_topk else 0
    if fused_attention:  # the output [T, H, d] bf16 and the lists as int64 (ops/fast/prefill_attention.py)
        out["attention"] = chunk * heads * m.head_dim * BF16 + chunk * slots * I64 + hca_lists
    else:  # one key slice gathered from the pool (bf16), its fp64 / fp32 upcasts, scores, query slice, P.V sums
        out["attention"] = (rows * heads * cols * ATTN_SCORE_BYTES + cols * m.head_dim * (BF16 + FP64 + FP32)
                            + rows * heads * (m.head_dim * (FP64 + FP32) + slots * ATTN_SLOT_BYTES)
                            + hca_lists)
    coff = max([2 if l.overlap else 1 for l in m.main_layers if l.ratio > 1] or [0])
    if coff:
        out["compressor"] = COMPRESSOR_COPIES * chunk * coff * m.head_dim * FP32
    # routed experts: gathered inputs and outputs [T x k, D] bf16, the fp32 sum [T, D]; the shared expert's
    # gate/up [T, 2I] fp32 and activation [T, I] fp32
    out["experts"] = (chunk * m.topk * m.hidden * 2 * BF16 + chunk * m.hidden * FP32
                      + chunk * 3 * m.moe_inter * FP32)
    return out


def index_key_bytes(m: ModelShape, context: int) -> float:
    """One CSA layer's index keys joined for its indexer (bf16, ``INDEX_KEY_COPIES``); 0 without indexer layers."""
    if _csa_ratio(m) is None:
        return 0.0
    return INDEX_KEY_COPIES * _entries(m, context) * m.index_head_dim * BF16


def workspace_terms(m: ModelShape, tp: int, context: int, chunk: int, sequences: int = 1) -> dict[str, float]:
    """Named terms (bytes) of :func:`workspace`: the chunk's live tensors, the largest phase, the index keys copy
    at ``context`` and the logits of ``sequences`` sampled rows."""
    heads = max(1, m.n_heads // tp)
    ph = phases(m, heads, context, chunk)
    name = max(ph, key=ph.get)
    return {"chunk tensors": chunk * live_per_token(m, heads), f"largest phase ({name})": ph[name],
            "index keys copy": index_key_bytes(m, context), "logits": sequences * LOGIT_COPIES * (m.vocab / tp) * FP32}


def workspace(m: ModelShape, tp: int, context: int, chunk: int, sequences: int = 1) -> float:
    """Activation bytes of one prefill chunk of ``chunk`` tokens at ``context`` tokens (see the module doc)."""
    return sum(workspace_terms(m, tp, context, chunk, sequences).values())
