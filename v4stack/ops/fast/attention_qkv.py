"""Fast ``attention_qkv``: a decode step's attention input path (wq_a -> q_norm -> wq_b -> per-head RMS -> RoPE;
wkv -> kv_norm -> RoPE -> FP8 KV) in one C call (``csrc/attention_qkv.c``) instead of ~45 torch ops and ~20 Python
frames per layer, with the values of the fast table's narrow entries (the one-call linears, the C rms_norm, RoPE
and act quant, and torch's bf16 rsqrt rounding); only the per-head mean of squares is summed in another fp32
order than torch's bf16 ``mean``.

Taken when every piece has its C form: at most ``lowbit.DECODE_ROWS`` rows, bf16 compute with FP8 QAT, the three
linears prepared for the one-call path (``fused_linear.FUSED_PLAN``), bf16 norm weights and x; otherwise the
reference composition (``ops.reference.attention_input``) over the table's narrow entries.

The layer's constants (the three linears' plans, the norms' addresses, the shapes) are checked once and kept on
the layer as one int64 table (``LAYER_CALL``), so a call checks one weight address, allocates its three outputs and
passes 9 arguments (``attention_qkv_layer``): ~30-40 us less Python and torch work a call than rebuilding them.
"""

from __future__ import annotations

import ctypes
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

import torch

from v4stack.ops.fast import lowbit
from v4stack.ops.fast.fused_linear import ACT_QUANT_FP8, FUSED_PLAN, weight_address
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
# layer attribute: a LayerCall once the layer's constants were checked, or None where the kernel does not apply
LAYER_CALL = "fast_qkv_layer_call"
QKV_FIELDS = 8  # csrc/attention_qkv.c's QKV_LINEARS: D, H, d, rd, kv block, rsqrt chunk, the two norms' addresses


class LayerCall(NamedTuple):
    """One layer's constants for ``attention_qkv_layer`` (csrc/attention_qkv.c's QKV_* table)."""

    params: torch.Tensor  # int64 [QKV_FIELDS + 3 * 7]
    hidden: int  # D, the width of x
    q_lora: int
    heads: int
    head_dim: int
    rope_dim: int
    wq_b_address: int  # wq_b's weight address when made: the table is void once it moved (all weights move together)


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
    lib.attention_qkv_layer.argtypes = [ptr, i64, ptr, ctypes.c_float, ptr, ptr, ptr, ptr, cint]
    lib.attention_qkv_layer.restype = cint
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


def _layer_call(attn) -> LayerCall | None:
    """The layer's constants when every piece has its C form (quantised compute, a measured rsqrt chunk, the three
    linears' one-call plans on unmoved weights, bf16 norm weights, whole KV quant blocks), else None."""
    chunk = RSQRT_CHUNK.get(torch.backends.cpu.get_cpu_capability())
    plans = _plans(attn) if chunk and attn.compute.quant else None
    d, rd, heads = attn.head_dim, attn.rope_dim, attn.n_heads
    norms = (attn.q_norm.weight, attn.kv_norm.weight)
    if (plans is None or _library() is None or (d - rd) % KV_QUANT_BLOCK or plans[1].n != heads * d
            or plans[2].n != d or any(w.dtype != torch.bfloat16 or not w.is_contiguous() for w in norms)):
        return None
    head = [attn.cfg.hidden_size, heads, d, rd, KV_QUANT_BLOCK, chunk, norms[0].data_ptr(), norms[1].data_ptr()]
    assert len(head) == QKV_FIELDS
    params = torch.tensor([*head, *(v for plan in plans for v in plan.fixed)], dtype=torch.int64)
    return LayerCall(params, head[0], plans[0].n, heads, d, rd, _wq_b_address(attn))


def _wq_b_address(attn) -> int:
    """wq_b's weight address now, read from the module tables (nn.Module's attribute fallback costs ~1 us a read)."""
    return weight_address(attn._modules["wq_b"])


def _fused(attn, x: torch.Tensor, positions: torch.Tensor):
    t = x.shape[0] if x.dim() == 2 else 0
    if t == 0 or t > lowbit.DECODE_ROWS or x.dtype != torch.bfloat16 or not x.is_cpu:
        return None
    call = attn.__dict__.get(LAYER_CALL, False)
    if call is not None and (call is False or call.wq_b_address != _wq_b_address(attn)):
        call = _layer_call(attn)  # first call, or the weights moved
        attn.__dict__[LAYER_CALL] = call
    if call is None or x.shape[1] != call.hidden:
        return None
    ph = attn.rotary.phase_pairs(positions)  # [T, rd/2, 2] (cos, sin) fp32 (the step's, see Rotary.begin_step)
    if ph.dtype != torch.float32 or ph.shape != (t, call.rope_dim // 2, 2):
        return None
    x = x.contiguous()
    qr = torch.empty(t, call.q_lora, dtype=torch.bfloat16)
    q = torch.empty(t, call.heads, call.head_dim, dtype=torch.bfloat16)
    kv = torch.empty(t, call.head_dim, dtype=torch.bfloat16)
    done = _library().attention_qkv_layer(x.data_ptr(), t, call.params.data_ptr(), attn.eps, ph.data_ptr(),
                                          qr.data_ptr(), q.data_ptr(), kv.data_ptr(), torch.get_num_threads())
    return (q, kv, qr) if done == 0 else None


def attention_qkv(attn, x: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``ops.reference.attention_input.attention_qkv``'s contract."""
    fused = _fused(attn, x, positions)
    return attention_input.attention_qkv(attn, x, positions) if fused is None else fused
