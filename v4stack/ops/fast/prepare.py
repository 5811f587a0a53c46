"""Weights prepared once after load, in the layout the fast entries read (attributes beside the checkpoint
buffers, so ``state_dict`` and the reference path are untouched).

Memory cost, on top of the checkpoint tensors (``prepared_bytes`` states it per weight and format, for a
planner; ``attached_bytes(model)`` counts what a prepared model holds; a test ties both to ``prepare_model``):

- with the C kernels (``ops.fast.lowbit``, any machine with a C compiler): FP8, FP4 and bf16 linears, the
  experts and the head are read in their checkpoint bytes, so they cost **nothing**; what remains is the router's
  fp32 copy (4 bytes x experts x D), an fp32 copy of dense weights stored in another dtype than bf16 and applied in
  fp32 (none in the official checkpoints), and ``wo_a`` as [G, r, H/G*d] blocks in the compute dtype (2 bytes per
  weight, for the grouped output GEMM), plus per MoE layer a table of its experts' weight addresses for the
  one-call decode kernel (``ops.fast.moe_kernel``: 48 bytes per expert, not counted). Prefill (more than ``lowbit.DECODE_ROWS`` rows) dequantises one tile of
  ``lowbit.PREFILL_TILE_ROWS`` weight rows at a time (transient, 4 bytes x tile rows x K).
- without them (torch fallback): every FP8 / FP4 linear gets a dense fp32 copy (4 bytes per weight: +4x the FP8
  bytes, +8x the FP4 bytes; exact), each expert's w1 and w3 as one fused [2I, D] copy, fp32-applied dense weights
  an fp32 copy; the head keeps the fp32 copy the reference head also makes on first use.
"""

from __future__ import annotations

import torch

from v4stack.ops.fast import fused_linear, lowbit, moe_kernel
from v4stack.ops.reference.layers import DENSE, FP4, FP8
from v4stack.weights.formats import dequant_fp4_weight, dequant_fp8_weight

PREPARED = "prepared"  # attribute name of a module's prepared weight
LOWBIT = "lowbit_direct"  # attribute set True on a linear whose checkpoint bytes the C kernel reads directly
LOWBIT_RAW = "lowbit_raw"  # beside it: the byte views the kernel reads (``lowbit.raw_views``, sharing the storage)
PREPARED_DTYPE = torch.float32  # of the FP8 / FP4 weights' copies (fallback path)
FP32_BYTES = 4
# roles of ``prepared_bytes``: a plain linear, a dense linear applied in fp32, the grouped wo_a blocks, the router
LINEAR, LINEAR_FP32, GROUPED_OUTPUT, ROUTER = "linear", "linear_fp32", "grouped_output", "router"


def prepared_bytes(fmt: str, numel: int, role: str = LINEAR, *, stored: torch.dtype = torch.bfloat16,
                   compute: torch.dtype = torch.bfloat16, kernels: bool | None = None) -> int:
    """Bytes ``prepare_model`` adds for one weight of ``numel`` elements in checkpoint format ``fmt`` ("fp8",
    "fp4", "dense" with dtype ``stored``), used as ``role``, with the C kernels present or not (default: this
    machine). The planner prices the fast mode's memory with this."""
    direct = lowbit.available() if kernels is None else kernels
    if role == ROUTER:
        return numel * FP32_BYTES
    if role == GROUPED_OUTPUT:
        return numel * torch.empty((), dtype=compute).element_size()
    if fmt == DENSE:
        want = torch.float32 if role == LINEAR_FP32 else compute
        if stored == want or (direct and stored == torch.bfloat16):
            return 0
        return numel * torch.empty((), dtype=want).element_size()
    if fmt in (FP8, FP4):
        return 0 if direct else numel * FP32_BYTES
    raise ValueError(f"unknown weight format {fmt!r}")


def dense_copy(layer, dtype: torch.dtype) -> torch.Tensor:
    """The exact dense [out, in] weight of a ``model.linear.Linear`` (e4m3/e2m1 x power-of-two scales are exact
    in bf16)."""
    if layer.fmt == FP8:
        return dequant_fp8_weight(layer.weight, layer.scale, layer.compute.weight_block).to(dtype).contiguous()
    if layer.fmt == FP4:
        return dequant_fp4_weight(layer.weight, layer.scale).to(dtype).contiguous()
    return layer.weight.to(dtype).contiguous()


def _is_linear(module) -> bool:
    return hasattr(module, "fmt") and module.fmt in (FP8, FP4, DENSE) and hasattr(module, "compute")


def _prepare_linear(module) -> int:
    """Mark the linear for the direct kernel, or attach its dense copy; returns the bytes added."""
    c = module.compute
    for name in (PREPARED, LOWBIT, LOWBIT_RAW, fused_linear.FUSED_PLAN):
        if hasattr(module, name):
            delattr(module, name)
    if lowbit.supports(module.fmt, module.weight):
        setattr(module, LOWBIT, True)
        setattr(module, LOWBIT_RAW, lowbit.raw_views(module.weight, getattr(module, "scale", None)))
        fused_linear.prepare(module, getattr(module, LOWBIT_RAW))
        return 0
    if module.fmt == DENSE:
        dtype = torch.float32 if module.dense_compute_fp32 else c.dtype
        if module.weight.dtype == dtype:
            return 0  # already in the layout the kernel wants
    else:
        dtype = PREPARED_DTYPE
    setattr(module, PREPARED, dense_copy(module, dtype))
    return getattr(module, PREPARED).nbytes


def prepare_model(model: torch.nn.Module) -> int:
    """Attach prepared weights to every linear, expert, gate and grouped projection of ``model``; returns the
    bytes added. Idempotent (a second call rebuilds the same state)."""
    added = sum(_prepare_linear(m) for m in model.modules() if _is_linear(m))
    for module in model.modules():
        if hasattr(module, "w1") and hasattr(module, "w3") and hasattr(module, "limit"):  # an Expert
            if hasattr(module.w1, PREPARED) and hasattr(module.w3, PREPARED):
                fused = torch.cat([module.w1.prepared, module.w3.prepared])  # [2I, D]: one GEMM for gate and up
                module.prepared_w13 = fused
                added += fused.nbytes - module.w1.prepared.nbytes - module.w3.prepared.nbytes
                del module.w1.prepared, module.w3.prepared
            elif hasattr(module, "prepared_w13"):
                del module.prepared_w13
        if hasattr(module, "wo_a") and hasattr(module, "cfg"):  # an Attention: wo_a as [G, r, H/G*d] blocks
            wo_a, cfg = module.wo_a, module.cfg  # in the compute dtype, so the batched GEMM rounds like the reference
            wo_a.prepared_grouped = dense_copy(wo_a, wo_a.compute.dtype).view(cfg.o_groups, cfg.o_lora_rank, -1)
            added += wo_a.prepared_grouped.nbytes
        if hasattr(module, "shared_experts") and hasattr(module, "experts"):  # a MoE: the decode kernel's table
            moe_kernel.prepare(module)
        if hasattr(module, "route_scale") and hasattr(module, "weight"):  # a Gate
            module.prepared = module.weight.float().contiguous()
            added += module.prepared.nbytes
    return added


def attached_bytes(model: torch.nn.Module) -> int:
    """Bytes of the prepared weights attached to ``model`` (measured; ``prepared_bytes`` predicts them per weight;
    0 before :func:`prepare_model` or in the exact modes)."""
    return sum(value.nbytes for module in model.modules() for name, value in vars(module).items()
               if name.startswith(PREPARED) and isinstance(value, torch.Tensor))
