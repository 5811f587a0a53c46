"""Starting training from an official-layout checkpoint: read it back to fp32 logical tensors and fill a
trainable twin with them.

Every FP8 / FP4 weight is dequantised exactly (its values lie on the grid its fake quantiser maps to,
so re-exporting the untouched model reproduces the checkpoint); bf16 tensors widen to fp32; the noaux gate
bias and the hash table are copied as buffers.

Knows: checkpoint formats and the trainable twin's parameter names. Does not know: what is trained.
"""

from __future__ import annotations

from pathlib import Path

import torch

from v4stack.config.model_config import ModelConfig
from v4stack.config.numerics import Numerics
from v4stack.model.transformer import DeepseekV4
from v4stack.ops.batched import batched_ops
from v4stack.training.trainable import logical_name, make_trainable
from v4stack.weights.checkpoint import Checkpoint
from v4stack.weights.formats import dequant_fp4_weight, dequant_fp8_weight
from v4stack.modelio.inventory import checkpoint_spec
from v4stack.modelio.loader import check_checkpoint

SCALE_SUFFIX = "scale"


def read_logical(directory: str | Path) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    """(config, official name -> dequantised tensor) for every weight of the checkpoint in ``directory``:
    fp32 for floating tensors, integer tables as stored; UE8M0 scales are folded into their weights."""
    cfg = ModelConfig.from_file(directory)
    spec = checkpoint_spec(cfg)
    ckpt = Checkpoint(directory)
    out: dict[str, torch.Tensor] = {}
    try:
        check_checkpoint(ckpt, spec)
        for name, (_, dtype) in spec.items():
            if dtype == torch.float8_e8m0fnu:
                continue  # read with its weight
            value = ckpt.load(name)
            scale_name = name[: -len("weight")] + SCALE_SUFFIX
            if dtype == torch.float8_e4m3fn:
                value = dequant_fp8_weight(value, ckpt.load(scale_name), cfg.weight_block)
            elif dtype == torch.int8:
                value = dequant_fp4_weight(value, ckpt.load(scale_name))
            elif value.is_floating_point():
                value = value.float()
            out[name] = value
    finally:
        ckpt.close()
    return cfg, out


@torch.no_grad()
def trainable_from(cfg: ModelConfig, tensors: dict[str, torch.Tensor]) -> DeepseekV4:
    """A ``make_trainable`` model of ``cfg`` whose parameters and trained buffers are ``tensors`` (official
    names, logical values as :func:`read_logical` gives them). Raises KeyError naming a missing tensor."""
    model = make_trainable(DeepseekV4(cfg, Numerics.exact_fp32(), batched_ops()))
    targets = {logical_name(n): p for n, p in model.named_parameters()}
    targets.update({n: b for n, b in model.named_buffers() if n in tensors})
    for name, target in targets.items():
        if name not in tensors:
            raise KeyError(f"warm start: the checkpoint has no tensor {name!r}")
        value = tensors[name]
        if tuple(value.shape) != tuple(target.shape):
            raise ValueError(f"warm start: {name} has shape {tuple(value.shape)}, the model {tuple(target.shape)}")
        target.copy_(value.to(target.dtype))
    return model
