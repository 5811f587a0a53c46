"""fp32 GEMMs of the reference numerics in one fixed summation order (the golden machine's), not the BLAS's.

The reference leaves its fp32 GEMMs (mHC mixes, the hc head, the router gate, the fp32 compressor projections,
the output head) to the CPU BLAS, whose summation order depends on the CPU. The golden data were made on an AMD
EPYC (Zen 4) with the MKL inside the torch 2.13 CPU wheel; on an Intel CPU with AVX-512/AMX the same MKL sums in
another order, and the 1-ulp differences grow through Sinkhorn, routing and the bf16/e4m3 roundings of this
random tiny model to 0.1-2.6 in the logits.

Order found for prefill-sized GEMMs (``rows >= BLOCKED_MIN_ROWS``): y[t, n] = sum over K blocks b (in order) of
s_b[t, n], each s_b a sequential fused-multiply-add chain over its k (acc = fma(x[t, k], w[n, k], acc) from 0),
with the block width

* ``HEAD_K_BLOCK`` = 128 for the output head ([*, 256] x [2048, 256]: 256 = two blocks of 128);
* ``WIDE_K_BLOCK`` = 192 for K > 256 (mHC mixes / hc head, K = hc * D = 768 or 1,024: blocks 192, ..., rest);
* one block (plain sequential chain) for the other K = 256 GEMMs (router gate, compressor projections).

How it was established: the K-block structure of one MKL kernel can be read off with cancelling probes
(x = 1 except +2^40 at k = i and -2^40 at k = j: the result counts the terms summed outside the smallest subtree
holding both i and j); under ``MKL_CBWR=AVX2`` the [361, 768] x [15, 768] mixes split K into blocks of 192, and
that order (with the head's 2 x 128 blocks, which reproduce every golden head logit of the first prompt rows
bit for bit from their head inputs) makes one flash_like prefill reproduce the golden prompt logits bit for bit
at positions 0-240 (pro_like: 0-129), against positions 0-2 with the BLAS order on an Intel Xeon. The same
golden machine used another kernel for GEMMs with few rows (a short prefill, decode): those still go to the
BLAS here (see docs/numerics.md, "Hardware dependence").

The fma is evaluated in fp64 (the fp32 x fp32 product is exact there) and rounded to fp32 after the add: equal
to a true fp32 fma except when the fp64 sum rounds onto an fp32 rounding midpoint (probability ~2^-29 a term).
"""

from __future__ import annotations

import torch

# Golden prefills of 1-5 tokens match another (small-matrix) kernel, those of 8, 127, 128, 361 and 390 tokens the
# blocked order; 6 and 7 are not covered by the golden data.
BLOCKED_MIN_ROWS = 8
HEAD_VOCAB_ROWS = 2048  # the head's weight rows in the golden models ([vocab, D]); its GEMM used HEAD_K_BLOCK
HEAD_K_BLOCK = 128
WIDE_K_BLOCK = 192
SINGLE_BLOCK_MAX_K = 256  # K up to this (other than the head): one sequential chain


def k_block(n_out: int, k: int) -> int:
    """The K-block width of the golden order for a GEMM with ``n_out`` output features and depth ``k``."""
    if n_out == HEAD_VOCAB_ROWS and k == 2 * HEAD_K_BLOCK:
        return HEAD_K_BLOCK
    return k if k <= SINGLE_BLOCK_MAX_K else WIDE_K_BLOCK


def blocked_fma_linear(x: torch.Tensor, w: torch.Tensor, block: int) -> torch.Tensor:
    """x [M, K] fp32, w [N, K] fp32 -> fp32 [M, N]: sum of per-block sequential fma chains (module docstring)."""
    xd, wd = x.double(), w.double()
    out = None
    for start in range(0, x.shape[1], block):
        acc = torch.zeros(x.shape[0], w.shape[0], dtype=torch.float32, device=x.device)
        for k in range(start, min(start + block, x.shape[1])):
            acc = (acc.double() + xd[:, k, None] * wd[None, :, k]).float()
        out = acc if out is None else out + acc
    return out


def linear_fp32(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """F.linear(x, w) for fp32 x [..., K] and w [N, K], in the golden order when the GEMM has prefill size."""
    if x.dtype != torch.float32 or w.dtype != torch.float32:
        raise TypeError(f"linear_fp32 takes fp32 tensors, got {x.dtype} and {w.dtype}")
    flat = x.reshape(-1, x.shape[-1])
    if flat.shape[0] < BLOCKED_MIN_ROWS:
        return torch.nn.functional.linear(x, w)
    return blocked_fma_linear(flat, w, k_block(w.shape[0], w.shape[1])).reshape(*x.shape[:-1], w.shape[0])
