"""bf16 GEMMs on CPUs without a native bf16 GEMM: the product in fp32, rounded once to bf16.

torch's bf16 ``matmul`` / ``bmm`` accumulate in fp32 and round each output to bf16 once. With AVX-512 (oneDNN's
bf16 kernels, AMX) that is fast; on an AVX2-only CPU (e.g. AMD Zen 3) torch falls back to a generic loop that is
~12x slower than its fp32 GEMM (one [8192, 128] x [128, 512] product, 1 thread: 240 ms bf16 vs 16-20 ms fp32 with
the conversions). There this module converts both operands to fp32 (exact), multiplies with torch's fp32 GEMM and
rounds the result to bf16: the same contract (fp32 accumulation, one rounding), only the summation order of the
fp32 GEMM differs, which moves ~6e-5 of the outputs by one bf16 ulp (torch's bf16 and fp32 GEMMs differ from the
exact product in about as many). Elsewhere it is torch's bf16 GEMM unchanged.
"""

from __future__ import annotations

from functools import lru_cache

import torch

NATIVE_CAPABILITIES = ("AVX512",)  # torch CPU capabilities whose bf16 GEMM is a vector kernel (oneDNN / AMX)
# the fp32 product is taken in row pieces of at most this many bytes, so the route's extra memory is bounded (the
# prefill indexer's [128 x 64 heads, N] scores at N = 768 would otherwise hold a 25 MB fp32 copy beside the bf16
# output the planner's workspace prices); 4 MiB pieces keep each GEMM at >= ~1,000 rows for N <= 1,024
FP32_PIECE_BYTES = 4 << 20


@lru_cache(maxsize=1)
def native() -> bool:
    """Whether torch's CPU bf16 GEMM is a vector kernel on this machine (its reported ATen CPU capability)."""
    return torch.backends.cpu.get_cpu_capability() in NATIVE_CAPABILITIES


def _via_fp32(a: torch.Tensor, b: torch.Tensor, op) -> torch.Tensor | None:
    """op(a, b) for bf16 CPU operands off the native route: b converted once, a and the fp32 product in pieces of
    rows (dim -2), each rounded into the bf16 output; None where torch's bf16 GEMM is to be used."""
    if a.dtype != torch.bfloat16 or b.dtype != torch.bfloat16 or not a.is_cpu or native():
        return None
    bf = b.float()
    batch = a.shape[:-2].numel()  # the leading (bmm) dimensions
    out = torch.empty(*a.shape[:-1], b.shape[-1], dtype=torch.bfloat16)
    rows = a.shape[-2]
    piece = max(1, FP32_PIECE_BYTES // (4 * b.shape[-1] * batch))
    for r0 in range(0, rows, piece):
        out[..., r0:r0 + piece, :] = op(a[..., r0:r0 + piece, :].float(), bf)
    return out


def matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b`` for 2-D operands: bf16 operands give bf16 (fp32 accumulation, one rounding); others as torch."""
    out = _via_fp32(a, b, torch.matmul)
    return a @ b if out is None else out


def bmm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``torch.bmm(a, b)`` with the same contract as ``matmul``."""
    out = _via_fp32(a, b, torch.bmm)
    return torch.bmm(a, b) if out is None else out
