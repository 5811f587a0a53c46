"""A whole MoE layer of a decode step in one C call (``csrc/moe_decode.c``): routed and shared experts on their
checkpoint bytes, with the rounding points and the fp32 summation order of ``ops.fast.moe.moe_experts``.

``prepare(moe)`` (at load, from ``ops.fast.prepare``) stores the experts' weight addresses as a small int64 table
[E + 1, 6] on the module (``EXPERT_TABLE``; 48 bytes per expert, not a weight copy), so a call converts no
tensors, and the layer's fixed arguments as ``LAYER_PARAMS``. ``run_layer`` takes the layer's input before its
FP8 quant-dequant and does that in the same call (``csrc/moe_decode.c``'s ``moe_decode_layer``: the C
``act_quant`` of ``ops.fast.kernels``, the same values; ~45 us less Python and torch work a call than
``act_quant`` + ``run`` on this machine); ``run`` takes it already quantised. Both return None where the kernel
does not apply (more than ``lowbit.DECODE_ROWS`` tokens, another compute dtype, no compiler, weights moved since
``prepare``); the caller then takes its torch path.
"""

from __future__ import annotations

import ctypes
from functools import lru_cache
from pathlib import Path

import torch

from v4stack.ops.fast import kernels, lowbit
from v4stack.ops.fast.fused_linear import weight_address
from v4stack.ops.fast.kernels import CFLAGS, compile_library
from v4stack.ops.reference.layers import DENSE

SOURCE = Path(__file__).with_name("csrc") / "moe_decode.c"
# module attribute: (pointer table [E+1, 6] int64, formats [E+1] int32, the tensors owning the addresses, the
# address of the shared expert's w2 bytes when the table was made)
EXPERT_TABLE = "lowbit_expert_table"
# module attribute: int64 [LAYER_FIELDS] (moe_decode.c's LAYER_* order: D, I, E, table address, formats address,
# weight block, act block), only where moe_decode_layer's act_quant takes D (D % act block == 0)
LAYER_PARAMS = "lowbit_layer_params"
LAYER_FIELDS = 7


@lru_cache(maxsize=1)
def _library() -> ctypes.CDLL | None:
    lib = compile_library(SOURCE, (*CFLAGS, lowbit.OPENMP_CFLAG), "moe_decode") or compile_library(
        SOURCE, CFLAGS, "moe_decode")
    if lib is None:
        return None
    i64, ptr, cint = ctypes.c_int64, ctypes.c_void_p, ctypes.c_int
    lib.moe_decode.argtypes = [ptr, i64, i64, i64, ptr, ptr, i64, i64, ptr, ptr, i64, ctypes.c_float, i64, ptr,
                               cint]
    lib.moe_decode.restype = cint
    lib.moe_decode_layer.argtypes = [ptr, cint, i64, ptr, ptr, i64, ptr, ctypes.c_float, ptr, cint]
    lib.moe_decode_layer.restype = cint
    return lib


def _expert_pointers(expert) -> tuple[list[int], list[torch.Tensor]] | None:
    """(w1, s1, w3, s3, w2, s2) addresses of an expert read directly by the kernel, and the tensors that own them."""
    pins, ptrs = [], []
    for layer in (expert.w1, expert.w3, expert.w2):
        if layer.fmt == DENSE or not lowbit.supports(layer.fmt, layer.weight):
            return None
        for t in (lowbit._raw(layer.weight), lowbit._raw(layer.scale)):
            pins.append(t)
            ptrs.append(t.data_ptr())
    return ptrs, pins


def prepare(moe) -> None:
    """Attach the pointer table to ``moe`` (a ``model.moe.MoE``), or remove it where the kernel cannot read every
    expert (then ``run`` returns None)."""
    for name in (EXPERT_TABLE, LAYER_PARAMS):
        if hasattr(moe, name):
            delattr(moe, name)
    experts = [*moe.experts, moe.shared_experts]
    c = moe.compute
    if _library() is None or c.dtype != torch.bfloat16 or not c.quant:
        return
    if c.act_block > kernels.MAX_ACT_BLOCK or moe.shared_experts.w2.in_features % c.act_block:
        return
    rows = [_expert_pointers(e) for e in experts]
    if any(r is None for r in rows):
        return
    table = torch.tensor([r[0] for r in rows], dtype=torch.int64)
    fmts = torch.tensor([lowbit.FORMAT_CODE[e.w1.fmt] for e in experts], dtype=torch.int32)
    setattr(moe, EXPERT_TABLE, (table, fmts, [p for r in rows for p in r[1]], moe.shared_experts.w2.weight.data_ptr()))
    d = moe.shared_experts.w1.in_features
    if d % c.act_block == 0:
        params = [d, moe.shared_experts.w1.out_features, len(moe.experts), table.data_ptr(), fmts.data_ptr(),
                  c.weight_block, c.act_block]
        assert len(params) == LAYER_FIELDS
        setattr(moe, LAYER_PARAMS, torch.tensor(params, dtype=torch.int64))


def run(moe, xq: torch.Tensor, weights: torch.Tensor, experts: torch.Tensor) -> torch.Tensor | None:
    """xq [T, D] (FP8 quant-dequantised, bf16), weights [T, k] fp32, experts [T, k] -> routed + shared [T, D]
    bf16, or None where the kernel does not apply."""
    prepared = getattr(moe, EXPERT_TABLE, None)
    t = xq.shape[0]
    if prepared is None or t > lowbit.DECODE_ROWS or xq.device.type != "cpu" or experts.dtype != torch.int64:
        return None
    table, fmts, _, w2_address = prepared
    if moe.shared_experts.w2.weight.data_ptr() != w2_address:
        return None  # the weights were replaced after prepare (e.g. moved): the addresses are stale
    shared = moe.shared_experts
    x = xq.float().contiguous()
    experts = experts.contiguous()
    weights = (weights if weights.dtype == torch.float32 else weights.float()).contiguous()
    y = torch.empty(t, x.shape[1], dtype=torch.bfloat16)
    c = moe.compute
    done = _library().moe_decode(x.data_ptr(), t, x.shape[1], shared.w1.out_features, experts.data_ptr(),
                                 weights.data_ptr(), experts.shape[1], len(moe.experts), table.data_ptr(),
                                 fmts.data_ptr(), c.weight_block, shared.limit, c.act_block, y.data_ptr(),
                                 torch.get_num_threads())
    return y if done == 0 else None


def run_layer(moe, x: torch.Tensor, weights: torch.Tensor, experts: torch.Tensor) -> torch.Tensor | None:
    """x [T, D] (the layer's input, bf16 or fp32, before its FP8 quant-dequant), weights [T, k] fp32, experts [T, k]
    int64 -> routed + shared [T, D] bf16 (``run`` of ``act_quant(x)``'s bits), or None where the kernel does not
    apply."""
    state = vars(moe)  # the module's own attributes and tables: nn.Module's attribute fallback costs ~1 us a read
    params, prepared = state.get(LAYER_PARAMS), state.get(EXPERT_TABLE)
    t = x.shape[0]
    if (params is None or prepared is None or t > lowbit.DECODE_ROWS or x.dim() != 2 or not x.is_cpu
            or x.dtype not in (torch.bfloat16, torch.float32) or experts.dtype != torch.int64):
        return None
    shared = state["_modules"]["shared_experts"]
    if weight_address(shared._modules["w2"]) != prepared[3]:
        return None  # the weights were replaced after prepare (e.g. moved): the addresses are stale
    x = x.contiguous()
    experts = experts.contiguous()
    if weights.dtype != torch.float32:
        weights = weights.float()
    weights = weights.contiguous()
    y = torch.empty(t, x.shape[1], dtype=torch.bfloat16)
    done = _library().moe_decode_layer(x.data_ptr(), x.dtype == torch.bfloat16, t, experts.data_ptr(),
                                       weights.data_ptr(), experts.shape[1], params.data_ptr(), shared.limit,
                                       y.data_ptr(), torch.get_num_threads())
    return y if done == 0 else None
