"""The fast op table: the reference table with the fast entries of ``ops.fast`` swapped in."""

from __future__ import annotations

from v4stack.ops.fast import (argmax, attention, attention_qkv, indexer, linear, mixing, moe, norm, ordered_gemm,
                              pooled_attention, quant, rope)
from v4stack.ops.fast.prepare import prepare_model
from v4stack.ops.table import OpTable, reference_ops


def prepare_weights(model) -> None:
    """The fast table's ``prepare_weights``: checkpoint bytes read directly where the C kernels are, dense copies
    otherwise (see ``ops.fast.prepare`` for the memory cost)."""
    prepare_model(model)


def fast_ops(base: OpTable | None = None) -> OpTable:
    """``base`` (default: the reference table) with the fast entries; the narrow exact GEMMs stay reachable for
    any layer that was not prepared."""
    return (base or reference_ops()).with_overrides(
        attention_qkv=attention_qkv.attention_qkv, linear=linear.linear, lm_head=linear.lm_head,
        grouped_output=linear.grouped_output, route=moe.route,
        moe_experts=moe.moe_experts, sparse_attention=attention.sparse_attention,
        index_scores=attention.index_scores, decode_attention=attention.decode_attention,
        decode_attention_pooled=pooled_attention.decode_attention_pooled,
        decode_index_scores=indexer.decode_index_scores,
        index_topk=indexer.index_topk, rms_norm=norm.rms_norm,
        hc_split_sinkhorn=mixing.hc_split_sinkhorn, hc_collapse=mixing.hc_collapse, hc_post=mixing.hc_post,
        hc_pre=mixing.hc_pre, hc_head=mixing.hc_head,
        rope=rope.rope, quant_dequant_fp8=quant.quant_dequant_fp8,
        quant_dequant_fp4=quant.quant_dequant_fp4, hadamard_rotate=quant.hadamard_rotate,
        prepare_weights=prepare_weights, fp32_linear=ordered_gemm.linear_fp32, argmax=argmax.argmax)
