"""Block-scaled low-precision GEMMs (reference path of the official fp8_gemm / fp4_gemm kernels).

Contract of both: ``x [..., K]`` (compute dtype) -> ``[..., N]`` in ``out_dtype``.
* ``act_block`` set (QAT simulation on): the activation is FP8-quantised with one UE8M0 scale per
  ``act_block`` along K, and the product follows the kernels' order of operations: for each K block the
  exact dot product of the e4m3 (or e2m1) values, rounded to fp32, times a_scale * w_scale, accumulated in
  fp32 in K order. Exact block sums make the result independent of how many rows are batched together.
* ``act_block`` None (fp32 oracle mode): exact activations and one fp32 matmul with the dequantised weight.
"""

from __future__ import annotations

import torch

from v4stack.ops.reference.blas_order import linear_fp32
from v4stack.ops.reference.quant import quantize_fp8_blocks
from v4stack.weights.formats import FP4_BLOCK, dequant_fp4_weight, dequant_fp8_weight, ue8m0_to_float, unpack_fp4


def _blocked_product(a_vals: torch.Tensor, a_scale: torch.Tensor, act_block: int, w_vals: torch.Tensor,
                     w_scale_cols: torch.Tensor, k_block: int) -> torch.Tensor:
    """sum over K blocks of fp32(exact a_blk . w_blk) * a_s * w_s.

    a_vals [M, K] fp64 codes, a_scale [M, K/act_block]; w_vals [N, K] fp64 codes;
    w_scale_cols [N, K/k_block] fp32 weight scale per (row, K block). Returns fp32 [M, N].
    """
    m, k = a_vals.shape
    acc = torch.zeros(m, w_vals.shape[0], dtype=torch.float32, device=a_vals.device)
    for j, start in enumerate(range(0, k, k_block)):
        stop = min(start + k_block, k)
        part = (a_vals[:, start:stop] @ w_vals[:, start:stop].T).float()  # exact in fp64, then one rounding
        acc += part * (a_scale[:, start // act_block, None] * w_scale_cols[None, :, j])
    return acc


def linear_fp8(x: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor, weight_block: int,
               act_block: int | None, out_dtype: torch.dtype) -> torch.Tensor:
    """y = act(x) @ dequant(W)^T; W e4m3 [N, K] with UE8M0 [ceil(N/b), ceil(K/b)]."""
    if act_block is None:
        return (x.float() @ dequant_fp8_weight(weight, scale, weight_block).T).to(out_dtype)
    lead, k = x.shape[:-1], x.shape[-1]
    a_vals, a_scale = quantize_fp8_blocks(x.reshape(-1, k), act_block)
    w_scale = ue8m0_to_float(scale).repeat_interleave(weight_block, dim=0)[: weight.shape[0]]  # [N, K/b]
    y = _blocked_product(a_vals.double(), a_scale, act_block, weight.double(), w_scale, weight_block)
    return y.to(out_dtype).reshape(*lead, weight.shape[0])


def linear_fp4(x: torch.Tensor, packed: torch.Tensor, scale: torch.Tensor, act_block: int | None,
               out_dtype: torch.dtype) -> torch.Tensor:
    """y = act(x) @ dequant(W)^T; W e2m1 packed int8 [N, K/2] with UE8M0 [N, K/32]."""
    if act_block is None:
        return (x.float() @ dequant_fp4_weight(packed, scale).T).to(out_dtype)
    lead, k = x.shape[:-1], x.shape[-1]
    a_vals, a_scale = quantize_fp8_blocks(x.reshape(-1, k), act_block)
    y = _blocked_product(a_vals.double(), a_scale, act_block, unpack_fp4(packed).double(), ue8m0_to_float(scale),
                         FP4_BLOCK)
    return y.to(out_dtype).reshape(*lead, packed.shape[0])


def linear_dense(x: torch.Tensor, weight: torch.Tensor, out_dtype: torch.dtype) -> torch.Tensor:
    """Plain linear for bf16/fp32 weights, computed in ``out_dtype`` (the reference's F.linear; fp32 in the
    golden summation order of ``blas_order``)."""
    if out_dtype == torch.float32:
        return linear_fp32(x.float(), weight.float())
    return torch.nn.functional.linear(x.to(out_dtype), weight.to(out_dtype))
