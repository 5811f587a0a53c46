"""A decode-sized linear in one C call (``csrc/fused_linear.c``): act quant (or rounding to the compute dtype),
the GEMM on the checkpoint bytes (``lowbit_gemm``) and the rounding of the fp32 result, bit-identical to the
chain ``ops.fast.linear.linear`` runs otherwise (``act_quant`` -> ``lowbit.matmul`` -> ``.to(dtype)``).

``prepare(layer)`` (at load) stores the call's fixed arguments on the layer; ``linear(layer, x)`` returns None
where the one-call path does not apply (not a direct low-bit layer, more than
``lowbit.DECODE_ROWS`` rows, a compute dtype or activation block the C act quant does not take, no compiler);
the caller then runs its chain. Threads: torch's intra-op count, as ``lowbit.matmul``.
"""

from __future__ import annotations

import ctypes
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

import torch

from v4stack.ops.fast import kernels, lowbit
from v4stack.ops.fast.kernels import CFLAGS, compile_library
from v4stack.ops.reference.layers import DENSE, FP4

SOURCE = Path(__file__).with_name("csrc") / "fused_linear.c"
ACT_QUANT_FP8, ACT_ROUND_BF16, ACT_AS_IS = 0, 1, 2  # the C enum: what happens to x before the GEMM
_IN_DTYPES = (torch.bfloat16, torch.float32)
FUSED_PLAN = "lowbit_fused_plan"  # layer attribute set by ``prepare``: a FusedPlan


class FusedPlan(NamedTuple):
    """The fixed arguments of one layer's C call, from load (no weight copy)."""

    weight: torch.Tensor  # the layer's weight when planned (the plan is void once the layer's weight moved)
    k: int  # in features
    n: int  # out features
    dtype: torch.dtype  # output dtype
    fixed: tuple  # (act code, act block, weight address, scale address, format code, n, weight block)
    fixed_tensor: torch.Tensor  # ``fixed`` as int64 [7], for kernels running several linears (csrc/attention_qkv.c)


@lru_cache(maxsize=1)
def _library() -> ctypes.CDLL | None:
    lib = compile_library(SOURCE, (*CFLAGS, lowbit.OPENMP_CFLAG), "fused_linear") or compile_library(
        SOURCE, CFLAGS, "fused_linear")
    if lib is None:
        return None
    i64, ptr, cint = ctypes.c_int64, ctypes.c_void_p, ctypes.c_int
    lib.fused_linear.argtypes = [ptr, cint, i64, i64, cint, i64, ptr, ptr, cint, i64, i64, ptr, cint, cint]
    lib.fused_linear.restype = cint
    return lib


def _plan(layer) -> tuple[int, torch.dtype] | None:
    """(act code, output dtype) as ``ops.fast.linear.linear`` computes this layer, or None if C cannot."""
    c = layer.compute
    if layer.fmt == DENSE and layer.dense_compute_fp32:
        return None  # fp32 GEMMs (compressor projections) keep the reference's order: ops.fast.ordered_gemm
    dtype = c.dtype
    if layer.fmt != DENSE and c.quant:
        if dtype != torch.bfloat16 or layer.in_features % c.act_block or c.act_block > kernels.MAX_ACT_BLOCK:
            return None  # the torch act_quant paths
        act = ACT_QUANT_FP8
    else:
        act = ACT_ROUND_BF16 if dtype == torch.bfloat16 else ACT_AS_IS
    return (act, dtype) if dtype in _IN_DTYPES else None


def prepare(layer, raw: tuple[torch.Tensor, torch.Tensor | None]) -> None:
    """At load (``ops.fast.prepare``, with the layer's byte views ``raw``): store the call's fixed arguments on the
    layer (``FUSED_PLAN``: addresses, shapes, codes; no weight copy), or remove them where the one-call path
    cannot run."""
    if hasattr(layer, FUSED_PLAN):
        delattr(layer, FUSED_PLAN)
    plan = _plan(layer)
    if plan is None or _library() is None:
        return
    k = 2 * layer.weight.shape[1] if layer.fmt == FP4 else layer.weight.shape[1]
    if k != layer.in_features:
        return
    act, dtype = plan
    w, s = raw
    n = layer.weight.shape[0]
    c = layer.compute
    fixed = (act, c.act_block, w.data_ptr(), 0 if s is None else s.data_ptr(), lowbit.FORMAT_CODE[layer.fmt], n,
             c.weight_block)
    setattr(layer, FUSED_PLAN, FusedPlan(w, k, n, dtype, fixed, torch.tensor(fixed, dtype=torch.int64)))


def current_weight(layer) -> torch.Tensor | None:
    """The layer's weight as it is now, for the guards against weights moved since ``prepare``: read from the module's
    buffer table (nn.Module's attribute fallback costs ~1 us a read, and the guards run on every decode call); None
    where the weight is no buffer (a trainable twin's parameter: no plan applies)."""
    return layer._buffers.get("weight")


def weight_address(layer) -> int:
    """The address of the layer's weight as it is now (``current_weight``, else its parameter): what the per-layer
    tables made at load compare against to see that the weights have not moved."""
    weight = current_weight(layer)
    return (layer.weight if weight is None else weight).data_ptr()


def planned(layer) -> FusedPlan | None:
    """The layer's plan while its weight is the one it was made for, else None."""
    plan = vars(layer).get(FUSED_PLAN)
    if plan is None:
        return None
    weight = current_weight(layer)
    return plan if weight is not None and weight.data_ptr() == plan.weight.data_ptr() else None


def linear(layer, x: torch.Tensor) -> torch.Tensor | None:
    """``ops.fast.linear.linear(layer, x)``'s values in one call: x [..., in] -> [..., out]; None if not taken."""
    plan = planned(layer)  # None as well when the weights moved since load: the chain
    if plan is None or not x.is_cpu or x.dtype not in _IN_DTYPES or x.dim() == 0:
        return None
    _, k, n, dtype, fixed, _ = plan  # a FusedPlan
    if x.shape[-1] != k:
        return None
    m = x.numel() // k
    if m == 0 or m > lowbit.DECODE_ROWS:
        return None
    x = x.contiguous()
    y = torch.empty(*x.shape[:-1], n, dtype=dtype)
    done = _library().fused_linear(x.data_ptr(), int(x.dtype == torch.bfloat16), m, k, *fixed, y.data_ptr(),
                                   int(dtype == torch.bfloat16), torch.get_num_threads())
    return y if done == 0 else None
