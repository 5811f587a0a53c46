"""Fast ``attention_qkv``: a decode step's attention input path (wq_a -> q_norm -> wq_b -> per-head RMS -> RoPE;
wkv -> kv_norm -> RoPE -> FP8 KV) in one C call (``csrc/attention_qkv.c``) instead of ~45 torch ops and ~20 Python
frames per layer, with the values of the fast table's narrow entries (the one-call linears, the C rms_norm, RoPE
and act quant, and torch's bf16 rsqrt rounding); only the per-head mean of squares is summed in another fp32
order than torch's bf16 ``mean``.

Taken when every piece has its C form: at most ``lowbit.DECODE_ROWS`` rows, bf16 compute with FP8 QAT, the three
linears prepared for the one-call path (``fused_linear.FUSED_PLAN``), bf16 norm weights and x; otherwise the
reference composition (``ops.reference.attention_input``) over the table's narrow entries.
"""

from __future__ import annotations

import ctypes
from functools import lru_cache
from pathlib import Path

import torch

from v4stack.ops.fast import lowbit
from v4stack.ops.fast.fused_linear import ACT_QUANT_FP8, FUSED_PLAN
from v4stack.ops.fast.kernels import CFLAGS, compile_library
from v4stack.ops.reference import attention_input
from v4stack.ops.reference.quant import KV_QUANT_BLOCK

SOURCE = Path(__file__).with_name("csrc") / "attention_qkv.c"
# Elements per pass of torch 2.13's vectorised bf16 unary loop by CPU capability (measured: elements past the last
# multiple of 32 round like the scalar loop, on AVX-512 (Intel Xeon) and on AVX2 (AMD EPYC Zen 3, where torch's loop
# also takes 32 bf16 a pass; tests/test_attention_qkv.py checks the bits against the composition): its rsqrt rounds
# once in the vector loop and twice (sqrt, then 1 / sqrt) in the scalar loop over the remainder; the kernel
# reproduces both. Other capabilities (not measured): the composition, the kernel is not taken.
RSQRT_CHUNK = {"AVX512": 32, "AVX2": 32}


@lru_cache(maxsize=1)
def _library() -> ctypes.CDLL | None:
    lib = compile_library(SOURCE, (*CFLAGS, lowbit.OPENMP_CFLAG), "attention_qkv") or compile_library(
        SOURCE, CFLAGS, "attention_qkv")
    if lib is None:
        return None
    i64, ptr, cint = ctypes.c_int64, ctypes.c_void_p, ctypes.c_int
    lib.attention_qkv.argtypes = [ptr, i64, i64, ptr, ptr, ptr, ptr, ptr, ctypes.c_float, i64, i64, i64, ptr, i64,
                                  ptr, ptr, ptr, ptr, i64, cint]
    lib.attention_qkv.restype = cint
    return lib


def _plans(attn) -> list | None:
    """The three linears' one-call plans when all are FP8-quantised bf16 linears on unmoved weights."""
    plans = []
    for layer in (attn.wq_a, attn.wq_b, attn.wkv):
        plan = getattr(layer, FUSED_PLAN, None)
        if plan is None or plan.dtype != torch.bfloat16 or plan.fixed[0] != ACT_QUANT_FP8:
            return None
        if plan.weight.data_ptr() != layer.weight.data_ptr():
            return None
        plans.append(plan)
    return plans


def _fused(attn, x: torch.Tensor, positions: torch.Tensor):
    c = attn.compute
    t = x.shape[0] if x.dim() == 2 else 0
    if t == 0 or t > lowbit.DECODE_ROWS or x.dtype != torch.bfloat16 or x.device.type != "cpu" or not c.quant:
        return None
    chunk = RSQRT_CHUNK.get(torch.backends.cpu.get_cpu_capability())
    plans = _plans(attn) if chunk else None
    lib = _library()
    d, rd, heads = attn.head_dim, attn.rope_dim, attn.n_heads
    norms = (attn.q_norm.weight, attn.kv_norm.weight)
    if (plans is None or lib is None or (d - rd) % KV_QUANT_BLOCK or plans[1].n != heads * d
            or plans[2].n != d or any(w.dtype != torch.bfloat16 for w in norms)):
        return None
    ph = attn.rotary.phase_pairs(positions)  # [T, rd/2, 2] (cos, sin) fp32 (the step's, see Rotary.begin_step)
    if ph.dtype != torch.float32 or ph.shape != (t, rd // 2, 2):
        return None
    x = x.contiguous()
    q_lora = plans[0].n
    qr = torch.empty(t, q_lora, dtype=torch.bfloat16)
    q = torch.empty(t, heads, d, dtype=torch.bfloat16)
    kv = torch.empty(t, d, dtype=torch.bfloat16)
    scratch = torch.empty(t, max(q_lora, d), dtype=torch.bfloat16)
    fixed = [plan.fixed_tensor.data_ptr() for plan in plans]  # wq_a, wq_b, wkv
    done = lib.attention_qkv(x.data_ptr(), t, x.shape[1], *fixed, norms[0].data_ptr(), norms[1].data_ptr(), attn.eps,
                             heads, d, rd, ph.data_ptr(), KV_QUANT_BLOCK, qr.data_ptr(), q.data_ptr(), kv.data_ptr(),
                             scratch.data_ptr(), chunk, torch.get_num_threads())
    return (q, kv, qr) if done == 0 else None


def attention_qkv(attn, x: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``ops.reference.attention_input.attention_qkv``'s contract."""
    fused = _fused(attn, x, positions)
    return attention_input.attention_qkv(attn, x, positions) if fused is None else fused
