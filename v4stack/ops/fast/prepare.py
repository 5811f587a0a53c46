"""Weights prepared once after load, in the layout the fast entries read (attributes beside the checkpoint
buffers, so ``state_dict`` and the reference path are untouched).

Memory cost, on top of the checkpoint tensors: every FP8 / FP4 linear gets a dense fp32 copy (4 bytes per weight,
i.e. +4x the FP8 bytes and +8x the FP4 bytes; e4m3/e2m1 x power-of-two scales are exact in fp32), each expert's w1
and w3 as one fused [2I, D] copy; the compressors' dense weights and the router get fp32 copies (they are applied in
fp32); the head gets the fp32 copy the reference head also keeps. fp32 rather than bf16 because CPU GEMMs with
few rows (decode) run about twice as fast in fp32 as in bf16 here (no AMX), and the activations are exact in both.
"""

from __future__ import annotations

import torch

from v4stack.ops.reference.layers import DENSE, FP4, FP8
from v4stack.weights.formats import dequant_fp4_weight, dequant_fp8_weight

PREPARED = "prepared"  # attribute name of a module's prepared weight
PREPARED_DTYPE = torch.float32  # of the FP8 / FP4 weights' copies


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


def prepare_model(model: torch.nn.Module) -> int:
    """Attach prepared weights to every linear, expert, gate and grouped projection of ``model``; returns the
    bytes added. Idempotent (a second call rebuilds the same copies)."""
    added = 0
    for module in model.modules():
        if _is_linear(module):
            c = module.compute
            if module.fmt == DENSE:
                dtype = torch.float32 if module.dense_compute_fp32 else c.dtype
                if module.weight.dtype == dtype:
                    continue  # already in the layout the kernel wants
            else:
                dtype = PREPARED_DTYPE
            setattr(module, PREPARED, dense_copy(module, dtype))
            added += getattr(module, PREPARED).nbytes
    for module in model.modules():
        if hasattr(module, "w1") and hasattr(module, "w3") and hasattr(module, "limit"):  # an Expert
            fused = torch.cat([module.w1.prepared, module.w3.prepared])  # [2I, D]: one GEMM for gate and up
            module.prepared_w13 = fused
            added += fused.nbytes - module.w1.prepared.nbytes - module.w3.prepared.nbytes
            del module.w1.prepared, module.w3.prepared
        if hasattr(module, "wo_a") and hasattr(module, "cfg"):  # an Attention: wo_a as [G, r, H/G*d] blocks
            wo_a, cfg = module.wo_a, module.cfg  # in the compute dtype, so the batched GEMM rounds like the reference
            wo_a.prepared_grouped = dense_copy(wo_a, wo_a.compute.dtype).view(cfg.o_groups, cfg.o_lora_rank, -1)
            added += wo_a.prepared_grouped.nbytes
        if hasattr(module, "route_scale") and hasattr(module, "weight"):  # a Gate
            module.prepared = module.weight.float().contiguous()
            added += module.prepared.nbytes
    return added


def prepared_bytes(model: torch.nn.Module) -> int:
    """Bytes of the prepared weights attached to ``model`` (0 before :func:`prepare_model` or in the exact modes)."""
    return sum(value.nbytes for module in model.modules() for name, value in vars(module).items()
               if name.startswith(PREPARED) and isinstance(value, torch.Tensor))
