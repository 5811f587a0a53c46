"""Batched decode attention: every 1-token span of a forward attended in one op, not a Python loop per sequence.

For the B decode rows of a step (``cache.decode_view.DecodeView``), one V4 attention layer:
  1. the compressors take one raw row per sequence at once (``Compressor.advance_decode``); the sequences whose
     token closes a group write their new entry;
  2. CSA: the indexer scores each query against its own visible index keys, gathered into [B, N, d_I]
     (``ops.decode_index_scores``), and picks its top-k (``ops.index_topk``);
  3. each query's keys are named through the block tables as pool slots [B, W + K] in the reference's index-list
     order (window positions oldest first, then the compressed entries: HCA all visible, CSA the top-k), with a
     validity mask, and attended with the sink (``ops.decode_attention_pooled``: the gathered keys through
     ``ops.decode_attention``, or read in place).
Same values as ``Attention._attend`` per sequence (same inputs to every op; only the batching differs), which
stays in use for prefill chunks (and for every row of training's ``ProbedAttention``).
"""

from __future__ import annotations

import torch

from v4stack.cache.decode_view import DecodeRings, DecodeView
from v4stack.cache.tensors import stored
from v4stack.model.batch import ForwardBatch


def attend_decode(attn, q: torch.Tensor, extras: dict, batch: ForwardBatch, layer: int) -> torch.Tensor:
    """``attn`` (a V4 ``Attention``): q [B, H, d] of the decode rows (their kv rows already in the window pool);
    extras: the layer's per-token compressor/indexer projections over all T rows -> o [B, H, d]."""
    view, decode, c = batch.cache, batch.cache.decode, attn.compute
    rows = None if decode.every_row else decode.rows
    pick = (lambda t: t) if rows is None else (lambda t: t.index_select(0, rows))
    window = view.tensors.pool(view.window_group, "kv", attn.layer_id)
    slots, valid = decode.window(attn.window)
    parts, masks = [(window, slots)], [valid]  # keys named in their pools: window rows [B, W]
    if attn.compressor is not None:
        r, group = attn.ratio, f"c{attn.ratio}"
        ckv, cscore = extras["comp"]
        pool = _advance(attn.compressor, pick(ckv), pick(cscore), decode, group, "kv", "", attn.layer_id)
        if attn.indexer is not None:
            ikv, iscore = extras["icomp"]
            index_pool = _advance(attn.indexer.compressor, pick(ikv), pick(iscore), decode, "c4_index",
                                  "index_keys", "index_", attn.layer_id, pool_group=group)
            entry_slots, _ = decode.visible_entries(group, r)
            scores = c.ops.decode_index_scores(pick(extras["iq"]), pick(extras["iw"]), index_pool[entry_slots],
                                               decode.positions, r)
            chosen = c.ops.index_topk(scores, attn.indexer.topk, decode.positions, r)  # [B, k], -1 empty
            if batch.trace is not None:
                _trace(batch.trace, layer, decode, chosen, r)
            parts.append((pool, decode.chosen_entry_slots(group, r, chosen)))  # the top-k entries [B, k]
            masks.append(chosen >= 0)
        else:
            entry_slots, entry_valid = decode.visible_entries(group, r)
            parts.append((pool, entry_slots))  # every visible entry [B, N]
            masks.append(entry_valid)
    valid = torch.cat(masks, 1) if len(masks) > 1 else masks[0]
    # slots where valid is False may name unwritten rows (NaN): the op keeps them out of P.V (K = V)
    return c.ops.decode_attention_pooled(q, parts, valid, attn.attn_sink, attn.scale, c.quant, c.ops)


def _advance(compressor, kv: torch.Tensor, score: torch.Tensor, decode: DecodeView, state: str, name: str,
             tail_prefix: str, layer_id: int, pool_group: str | None = None) -> torch.Tensor:
    """Feed one row per decode sequence to ``compressor`` (ring ``state``), write the entries closed now into
    pool tensor ``name`` of ``pool_group`` (default c{ratio}); -> that pool tensor."""
    group = pool_group or f"c{compressor.ratio}"
    pool = decode.view.tensors.pool(group, name, layer_id)
    closed = compressor.advance_decode(kv, score, DecodeRings(decode, state, layer_id, tail_prefix))
    if closed is not None:
        pool.index_copy_(0, decode.new_entry_slots(group, compressor.ratio), stored(closed[0]))
    return pool


def _trace(trace: dict, layer: int, decode: DecodeView, chosen: torch.Tensor, ratio: int) -> None:
    """Record each sequence's top-k as the per-sequence path does: [1, min(topk, visible entries)]."""
    for b, seq in enumerate(decode.seqs):
        trace[layer, seq] = chosen[b:b + 1, :min(chosen.shape[1], (decode.pos_list[b] + 1) // ratio)]
