"""A checkpoint directory on disk: its safetensors files (single or sharded), read lazily.

Knows the safetensors container format and ``model.safetensors.index.json``; does not know which tensors
a model needs. Headers are parsed directly (8-byte length + JSON) so that truncated files and bad indexes
are reported per tensor before any data is read; tensor data is then memory-mapped through
``safetensors.safe_open`` and copied once into its final tensor.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"
HEADER_LEN_BYTES = 8  # safetensors: little-endian u64 header length, then the JSON header

# safetensors dtype tag -> torch dtype (only the formats DeepSeek-V4 checkpoints use, plus common ones)
DTYPES = {
    "F8_E4M3": torch.float8_e4m3fn, "F8_E8M0": torch.float8_e8m0fnu, "I8": torch.int8, "U8": torch.uint8,
    "BF16": torch.bfloat16, "F16": torch.float16, "F32": torch.float32, "I32": torch.int32, "I64": torch.int64,
}


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded; the message names the tensor (or file) and what was expected."""


@dataclass(frozen=True)
class TensorEntry:
    """Where one tensor lives and what its header says."""

    name: str
    file: Path
    dtype: torch.dtype
    shape: tuple[int, ...]
    offset: int = 0  # absolute byte offset of the tensor's data in ``file`` (rows can be read in place)


def read_header(path: Path) -> dict[str, TensorEntry]:
    """Parse one safetensors header; verify every tensor's bytes lie inside the file."""
    try:
        size = path.stat().st_size
        with path.open("rb") as fh:
            raw_len = fh.read(HEADER_LEN_BYTES)
            if len(raw_len) < HEADER_LEN_BYTES:
                raise CheckpointError(f"{path.name}: truncated (no safetensors header)")
            (header_len,) = struct.unpack("<Q", raw_len)
            if HEADER_LEN_BYTES + header_len > size:
                raise CheckpointError(f"{path.name}: truncated inside the header ({size} bytes on disk, header "
                                      f"claims {header_len})")
            header = json.loads(fh.read(header_len))
    except FileNotFoundError as exc:
        raise CheckpointError(f"{path}: file not found") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path.name}: corrupt safetensors header ({exc})") from exc
    if not isinstance(header, dict):
        raise CheckpointError(f"{path.name}: corrupt safetensors header (a JSON {type(header).__name__}, not an object)")
    data_start = HEADER_LEN_BYTES + header_len
    entries = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        tag = info.get("dtype") if isinstance(info, dict) else None
        if tag not in DTYPES:
            raise CheckpointError(f"tensor '{name}' in {path.name}: unsupported dtype {tag!r}")
        offsets, shape = info.get("data_offsets"), info.get("shape")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)
                and isinstance(shape, list) and all(isinstance(d, int) for d in shape)):
            raise CheckpointError(f"tensor '{name}' in {path.name}: corrupt header entry (data_offsets "
                                  f"{offsets!r}, shape {shape!r})")
        begin, end = offsets
        if data_start + end > size:
            raise CheckpointError(f"tensor '{name}' in {path.name}: file truncated (tensor needs bytes up to "
                                  f"{data_start + end}, file has {size})")
        entries[name] = TensorEntry(name, path, DTYPES[tag], tuple(info["shape"]), data_start + begin)
    return entries


class Checkpoint:
    """All tensors of a checkpoint directory: ``entries`` maps official name -> TensorEntry."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        if not self.directory.is_dir():
            raise CheckpointError(f"{self.directory}: not a directory")
        self.entries = self._collect()
        self._handles: dict[Path, object] = {}

    def _collect(self) -> dict[str, TensorEntry]:
        index = self.directory / INDEX_FILE
        if index.exists():
            return self._collect_sharded(index)
        single = self.directory / SINGLE_FILE
        if single.exists():
            return read_header(single)
        files = sorted(self.directory.glob("*.safetensors"))
        if not files:
            raise CheckpointError(f"{self.directory}: no {SINGLE_FILE}, {INDEX_FILE} or *.safetensors files")
        entries: dict[str, TensorEntry] = {}
        for f in files:
            entries.update(read_header(f))
        return entries

    def _collect_sharded(self, index: Path) -> dict[str, TensorEntry]:
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
            if not isinstance(weight_map, dict):
                raise TypeError("weight_map is not an object")
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise CheckpointError(f"{index.name}: not a valid index (expects {{'weight_map': {{name: file}}}}): "
                                  f"{exc}") from exc
        headers: dict[str, dict[str, TensorEntry]] = {}
        entries = {}
        for name, shard in weight_map.items():
            path = self.directory / shard
            if shard not in headers:
                if not path.exists():
                    raise CheckpointError(f"tensor '{name}': {index.name} maps it to {shard}, which does not exist")
                headers[shard] = read_header(path)
            if name not in headers[shard]:
                raise CheckpointError(f"tensor '{name}': {index.name} maps it to {shard}, which does not contain it")
            entries[name] = headers[shard][name]
        return entries

    def load(self, name: str) -> torch.Tensor:
        """Read one tensor (memory-mapped file, one copy into a fresh CPU tensor)."""
        entry = self.entries[name]
        handle = self._handles.get(entry.file)
        if handle is None:
            handle = self._handles[entry.file] = safe_open(str(entry.file), framework="pt")
        return handle.get_tensor(name)

    def close(self) -> None:
        self._handles.clear()
