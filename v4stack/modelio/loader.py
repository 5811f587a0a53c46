"""Load an official DeepSeek-V4 / V4.1 checkpoint into its model (architecture chosen from config.json), unchanged.

The table of expected tensors is the model's own ``state_dict`` built on the meta device (``inventory``): buffer names
are the official names (no ``model.`` prefix), shapes follow the config, dtypes are the checkpoint
formats (FP8 e4m3 + UE8M0 scales, FP4 experts as int8 pairs, bf16/fp32 dense tensors). Every expected
tensor is checked (presence, shape, dtype) before any data is read; then each is read once and placed
directly into the model (no second copy of the weights).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

import torch
from tqdm import tqdm

from v4stack.config.family import load_config
from v4stack.config.numerics import Numerics
from v4stack.modelio.inventory import TensorTable, build_model, expected_tensors
from v4stack.ops.table import OpTable
from v4stack.weights.checkpoint import Checkpoint, CheckpointError

log = logging.getLogger(__name__)

# Stored dtypes accepted besides the expected one (loaded, then cast): the reference declares tid2eid int32
# while released checkpoints store int64.
ALTERNATIVE_DTYPES = {torch.int64: (torch.int32,)}


def check_checkpoint(ckpt: Checkpoint, expected: TensorTable) -> list[str]:
    """Raise CheckpointError for the first missing / mis-shaped / mis-typed tensor; return unexpected names."""
    for name, (shape, dtype) in expected.items():
        entry = ckpt.entries.get(name)
        if entry is None:
            raise CheckpointError(f"tensor '{name}': missing from the checkpoint (expected shape {list(shape)}, "
                                  f"dtype {dtype})")
        if entry.shape != shape:
            raise CheckpointError(f"tensor '{name}' in {entry.file.name}: expected shape {list(shape)}, "
                                  f"found {list(entry.shape)}")
        if entry.dtype != dtype and entry.dtype not in ALTERNATIVE_DTYPES.get(dtype, ()):
            raise CheckpointError(f"tensor '{name}' in {entry.file.name}: expected dtype {dtype}, found {entry.dtype}")
    return sorted(set(ckpt.entries) - set(expected))


def _place(model: torch.nn.Module, name: str, tensor: torch.Tensor) -> None:
    module_name, _, buffer_name = name.rpartition(".")
    module = model.get_submodule(module_name) if module_name else model
    module._buffers[buffer_name] = tensor  # replaces the meta placeholder without another copy


def load_model(directory: str | Path, numerics: Numerics | None = None, ops: OpTable | None = None,
               device: str | torch.device = "cpu", progress: bool = True, config_overrides: dict | None = None,
               skip: Callable[[str], bool] | None = None) -> torch.nn.Module:
    """Build the model described by ``directory/config.json`` and fill it from the checkpoint files.

    ``config_overrides``: V4.1 fields replaced after parsing (golden all-top-k case). ``skip(name)``: tensors the
    caller serves itself (e.g. Engram tables on the host or disk tier); they are checked but not read."""
    cfg = load_config(directory, config_overrides)
    with torch.device("meta"):
        model = build_model(cfg, numerics, ops)
    expected = expected_tensors(model)
    ckpt = Checkpoint(directory)
    unexpected = check_checkpoint(ckpt, expected)
    if unexpected:
        log.warning("ignoring %d checkpoint tensors this model does not use, e.g. %s", len(unexpected),
                    unexpected[:3])
    try:
        for name, (_, dtype) in tqdm(expected.items(), desc="loading weights", unit="tensor", disable=not progress):
            if skip is not None and skip(name):
                continue
            try:
                tensor = ckpt.load(name)
            except Exception as exc:  # safetensors raises its own error types
                raise CheckpointError(f"tensor '{name}': could not be read ({exc})") from exc
            _place(model, name, tensor.to(device=device, dtype=dtype))
    finally:
        ckpt.close()
    model.eval()
    model.compute.ops.prepare_weights(model)  # the platform's one-time weight layouts (reference: none)
    return model
