"""The op table: the small set of hot ops a platform may replace, bundled as one frozen object.

The model receives an ``OpTable`` when it is built and calls ops only through it, so a CUDA (Triton) or
Ascend (torch_npu) backend plugs in by returning a table with some entries replaced; the model
definition never changes. ``reference_ops()`` is the plain-PyTorch table every fast entry is tested against.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Callable

from v4stack.ops.reference import (attention, attention_input, blas_order, compress, gemm, hadamard, indexer, layers,
                                   mixing, moe, norm, pooled_attention, quant, rope, sampling)


@dataclass(frozen=True)
class OpTable:
    """Each field is a callable with the contract of the reference function named in its default.

    Narrow entries (GEMMs, quantisation, attention) come first; the wider ones below take whole layers (the
    ``model`` module holding the checkpoint tensors, so a platform can read weights it prepared itself in
    ``prepare_weights``) and by default compose the narrow ones of the same table.
    """

    linear_fp8: Callable = gemm.linear_fp8
    linear_fp4: Callable = gemm.linear_fp4
    linear_dense: Callable = gemm.linear_dense
    fp32_linear: Callable = blas_order.linear_fp32  # the mHC mixes' fp32 GEMM (golden summation order)
    quant_dequant_fp8: Callable = quant.quant_dequant_fp8
    quant_dequant_fp4: Callable = quant.quant_dequant_fp4
    quant_dequant_fp4_e4m3_scale: Callable = quant.quant_dequant_fp4_e4m3_scale  # V4.1 compressed KV
    hadamard_rotate: Callable = hadamard.hadamard_rotate
    sparse_attention: Callable = attention.sparse_attention
    decode_attention: Callable = attention.decode_attention  # every decode row of a step in one call
    decode_attention_pooled: Callable = pooled_attention.decode_attention_pooled  # its keys named in the pools
    hc_split_sinkhorn: Callable = mixing.hc_split_sinkhorn
    hc_collapse: Callable = mixing.hc_collapse
    hc_expand: Callable = mixing.hc_expand
    hc_pre: Callable = mixing.hc_pre
    hc_post: Callable = mixing.hc_post
    hc_head: Callable = mixing.hc_head
    rms_norm: Callable = norm.rms_norm
    rope: Callable = rope.rope
    compress_pool: Callable = compress.compress_pool
    index_scores: Callable = indexer.index_scores
    index_topk: Callable = indexer.index_topk
    decode_index_scores: Callable = indexer.decode_index_scores
    route: Callable = moe.route
    moe_experts: Callable = moe.moe_experts
    linear: Callable = layers.linear
    grouped_output: Callable = layers.grouped_output
    attention_qkv: Callable = attention_input.attention_qkv  # a V4 attention layer's q / kv / qr input path
    lm_head: Callable = layers.lm_head
    argmax: Callable = sampling.argmax  # greedy choice over a step's logits [R, V] -> [R]
    prepare_weights: Callable = layers.prepare_weights  # once after load: model -> None (may attach layouts)

    def with_overrides(self, **ops: Callable) -> "OpTable":
        """A copy with some ops replaced; unknown names raise (a typo must not silently fall back)."""
        known = {f.name for f in fields(self)}
        unknown = sorted(set(ops) - known)
        if unknown:
            raise KeyError(f"unknown ops {unknown}; known: {sorted(known)}")
        return replace(self, **ops)


def reference_ops() -> OpTable:
    return OpTable()
