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

from v4stack.config.engram_placement import EngramPlacement
from v4stack.config.family import load_config
from v4stack.config.numerics import Numerics
from v4stack.config.v41_config import V41Config
from v4stack.modelio.engram_tiers import EngramStore, table_tensor_names
from v4stack.modelio.inventory import TensorTable, build_model, expected_tensors
from v4stack.ops.table import OpTable
from v4stack.platforms.registry import get_platform
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
               skip: Callable[[str], bool] | None = None, engram: EngramPlacement | None = None) -> torch.nn.Module:
    """Build the model described by ``directory/config.json`` and fill it from the checkpoint files, then run the op
    table's ``prepare_weights`` once. ``ops`` None: the table of the device's platform for ``numerics``.

    ``config_overrides``: V4.1 fields replaced after parsing (golden all-top-k case). ``skip(name)``: tensors the
    caller serves itself; they are checked but not read. ``engram``: where a V4.1 model's Engram tables live
    (default: on ``device``); off the device they are not loaded into the model but served by an
    ``EngramStore`` (``model.engram_rows``). A V4.1 checkpoint with ``compressed_token_map.safetensors`` or
    ``tokenizer.json`` gets its Engram token map set."""
    cfg = load_config(directory, config_overrides)
    tiered = isinstance(cfg, V41Config) and cfg.engram is not None
    placement = engram or EngramPlacement()
    served = table_tensor_names(cfg.engram.layer_ids) if tiered and placement.tier != "device" else set()
    if ops is None:  # the device's platform picks the table for these numerics
        ops = get_platform(torch.device(device).type).op_table(numerics)
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
            if name in served or (skip is not None and skip(name)):
                continue
            try:
                tensor = ckpt.load(name)
            except Exception as exc:  # safetensors raises its own error types
                raise CheckpointError(f"tensor '{name}': could not be read ({exc})") from exc
            _place(model, name, tensor.to(device=device, dtype=dtype))
        if tiered:
            model.engram_rows = EngramStore(model, placement, ckpt)
            _set_token_map(model, Path(directory))
    finally:
        ckpt.close()
    model.eval()
    model.compute.ops.prepare_weights(model)  # the platform's one-time weight layouts (reference: none)
    return model


def _set_token_map(model: torch.nn.Module, directory: Path) -> None:
    """The Engram token map stored with the checkpoint (or built from its tokenizer.json), when there is one;
    without it the model refuses a forward with a message saying how to set it."""
    from v4stack.model.v41.engram_hash import MAP_FILE, load_compressed_token_map

    if (directory / MAP_FILE).exists() or (directory / "tokenizer.json").exists():
        model.set_token_map(load_compressed_token_map(directory))
