"""Engram tables served from the device, host memory or the checkpoint file (``EngramPlacement``), behind the
model's one lookup interface (``model.v41.engram.EngramRows``: ``prefetch(ids)`` then ``rows(table, ids)``).

Engram row ids depend on the input token ids alone, so the model hashes a forward's tokens before the pass and
calls ``prefetch``; a background thread then gathers each table's distinct rows (host tier: from the host copy,
into a pinned staging buffer when the device is CUDA/NPU; disk tier: from a bounded LRU row cache, reading
misses by byte offset from the safetensors file itself) while the first layers compute. ``rows`` waits for that
table's gather, copies the FP8 bytes to the device and dequantises there with the device tier's function, so
every tier returns bit-identical bf16 rows. Without prefetch (``placement.prefetch=False``) the same gather
runs on demand inside the Engram layer.

Per table the stored row is ``hd`` FP8 bytes (``<prefix>.weight``) and ``hd/32`` E8M0 bytes (``<prefix>.scale``);
both tensors are row-major in the file, so row r of each sits at ``data_offset + r * row_width``.
"""

from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch

from v4stack.config.engram_placement import EngramPlacement, row_bytes
from v4stack.model.v41.engram import dequant_rows
from v4stack.weights.checkpoint import Checkpoint, TensorEntry

PINNED_DEVICE_TYPES = ("cuda", "npu")  # devices whose host->device copies want page-locked staging


def table_prefix(layer_id: int) -> str:
    """Checkpoint name prefix of the Engram table before block ``layer_id`` (official layout)."""
    return f"layers.{layer_id}.engram.embed"


def table_tensor_names(layer_ids: tuple[int, ...]) -> set[str]:
    return {f"{table_prefix(i)}.{leaf}" for i in layer_ids for leaf in ("weight", "scale")}


@dataclass
class TierStats:
    """Counters of one store since its creation (or ``reset``)."""

    forwards: int = 0
    tokens: int = 0
    lookups: int = 0  # row ids asked for (tokens x ids per token x tables)
    distinct_rows: int = 0  # distinct ids per forward and table, summed
    rows_fetched: int = 0  # rows read from the tier's backing store (disk tier: cache misses read from the file)
    cache_hits: int = 0  # disk tier: distinct rows found in the row cache
    fetch_seconds: float = 0.0  # time spent gathering (on the background thread when prefetching)
    wait_seconds: float = 0.0  # time the forward spent blocked on a gather

    def reset(self) -> None:
        self.__init__()


# ---- backing stores: distinct row ids [m] -> (FP8 bytes [m, hd], E8M0 bytes [m, hd/32]) as uint8 ------------
class _DeviceSource:
    """The model's own table buffers (device tier)."""

    def __init__(self, model) -> None:
        self._tables = [model.layers[i].engram.embed for i in model.cfg.engram.layer_ids]

    def gather(self, table: int, ids: torch.Tensor, stats: TierStats) -> tuple[torch.Tensor, torch.Tensor]:
        t = self._tables[table]
        ids = ids.to(t.weight.device)
        stats.rows_fetched += ids.numel()
        return t.weight[ids].view(torch.uint8), t.scale[ids].view(torch.uint8)


class _HostSource:
    """A copy of every table in host memory, read from the checkpoint once."""

    def __init__(self, ckpt: Checkpoint, layer_ids: tuple[int, ...], pin: bool) -> None:
        self._tables = []
        for i in layer_ids:
            w, s = (ckpt.load(f"{table_prefix(i)}.{leaf}").view(torch.uint8) for leaf in ("weight", "scale"))
            self._tables.append((w.pin_memory(), s.pin_memory()) if pin else (w, s))

    def gather(self, table: int, ids: torch.Tensor, stats: TierStats) -> tuple[torch.Tensor, torch.Tensor]:
        w, s = self._tables[table]
        stats.rows_fetched += ids.numel()
        return w[ids], s[ids]

    @property
    def nbytes(self) -> int:
        return sum(w.numel() + s.numel() for w, s in self._tables)


class _DiskSource:
    """Rows read by byte offset from the checkpoint file into a bounded LRU cache (one for all tables)."""

    def __init__(self, ckpt: Checkpoint, layer_ids: tuple[int, ...], head_dim: int, cache_rows: int) -> None:
        self.hd, self.sd = head_dim, row_bytes(head_dim) - head_dim
        self._tables: list[tuple[TensorEntry, TensorEntry]] = [
            (ckpt.entries[f"{table_prefix(i)}.weight"], ckpt.entries[f"{table_prefix(i)}.scale"]) for i in layer_ids]
        self._fds: dict[Path, int] = {}
        for w, s in self._tables:
            for e in (w, s):
                if e.file not in self._fds:
                    self._fds[e.file] = os.open(e.file, os.O_RDONLY)
        self.capacity = cache_rows
        self._store = torch.empty(cache_rows, self.hd + self.sd, dtype=torch.uint8)  # [C, hd + hd/32]
        self._slots: OrderedDict[tuple[int, int], int] = OrderedDict()  # (table, row) -> slot, LRU first
        self._lock = threading.Lock()

    def _read(self, entry: TensorEntry, width: int, row: int) -> bytes:
        data = os.pread(self._fds[entry.file], width, entry.offset + row * width)
        if len(data) != width:
            raise OSError(f"{entry.file}: short read of tensor '{entry.name}' row {row}")
        return data

    def _slot(self, table: int, row: int, stats: TierStats) -> int:
        key = (table, row)
        slot = self._slots.get(key)
        if slot is not None:
            self._slots.move_to_end(key)
            stats.cache_hits += 1
            return slot
        if len(self._slots) < self.capacity:
            slot = len(self._slots)
        else:
            _, slot = self._slots.popitem(last=False)  # least recently used
        w, s = self._tables[table]
        buf = self._read(w, self.hd, row) + self._read(s, self.sd, row)
        self._store[slot] = torch.frombuffer(bytearray(buf), dtype=torch.uint8)
        self._slots[key] = slot
        stats.rows_fetched += 1
        return slot

    def gather(self, table: int, ids: torch.Tensor, stats: TierStats) -> tuple[torch.Tensor, torch.Tensor]:
        out = torch.empty(ids.numel(), self.hd + self.sd, dtype=torch.uint8)
        rows = ids.tolist()
        with self._lock:
            # passes of at most `capacity` rows: a pass's rows are the most recently used, so inserting one of
            # them never evicts another of the same pass (out is filled before the next pass evicts anything)
            for begin in range(0, len(rows), self.capacity):
                part = rows[begin:begin + self.capacity]
                slots = torch.tensor([self._slot(table, r, stats) for r in part], dtype=torch.long)
                out[begin:begin + len(part)] = self._store[slots]
        return out[:, :self.hd], out[:, self.hd:]

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

    @property
    def cache_nbytes(self) -> int:
        return self._store.numel()


class EngramStore:
    """The EngramRows of a loaded V4.1 model under a placement. ``prefetch(ids [L, S, K])`` starts the gathers;
    ``rows(table, ids [S, K])`` returns bf16 [S, K, hd] on the model's device."""

    def __init__(self, model, placement: EngramPlacement, ckpt: Checkpoint | None = None) -> None:
        cfg = model.cfg.engram
        self.placement, self.engram_cfg, self.device = placement, cfg, model.device
        self.stats = TierStats()
        self._pin = self.device.type in PINNED_DEVICE_TYPES
        if placement.tier == "device":
            self._source = _DeviceSource(model)
        elif ckpt is None:
            raise ValueError(f"the {placement.tier} Engram tier needs the checkpoint")
        elif placement.tier == "host":
            self._source = _HostSource(ckpt, cfg.layer_ids, self._pin)
        else:
            self._source = _DiskSource(ckpt, cfg.layer_ids, cfg.head_dim, placement.cache_rows(cfg))
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="engram-prefetch")
        self._pending: dict[int, tuple[torch.Tensor, Future]] = {}

    def table_bytes(self) -> dict[str, int]:
        """Bytes of the tables resident per tier, as loaded (rows x row bytes; compare EngramPlacement)."""
        return self.placement.table_bytes(self.engram_cfg)

    # ---- the EngramRows interface ----
    def prefetch(self, ids: torch.Tensor) -> None:
        """ids [L, S, K] of the coming forward (all tables): queue each table's gather on the worker thread."""
        self.stats.forwards += 1
        self.stats.tokens += ids.shape[1]
        if not self.placement.prefetch:
            return
        for table in range(ids.shape[0]):
            self._pending[table] = (ids[table].cpu(), self._pool.submit(self._gather, table, ids[table]))

    def rows(self, table: int, ids: torch.Tensor) -> torch.Tensor:
        pending = self._pending.pop(table, None)
        if pending is not None and torch.equal(pending[0], ids.cpu()):
            t0 = time.perf_counter()
            gathered = pending[1].result()
            self.stats.wait_seconds += time.perf_counter() - t0
        else:
            t0 = time.perf_counter()
            gathered = self._gather(table, ids)
            self.stats.wait_seconds += time.perf_counter() - t0
        values, scales, inverse = gathered
        values = values.to(self.device, non_blocking=self._pin).view(torch.float8_e4m3fn)
        scales = scales.to(self.device, non_blocking=self._pin).view(torch.float8_e8m0fnu)
        return dequant_rows(values, scales)[inverse.to(self.device)]  # [S, K, hd] bf16

    def _gather(self, table: int, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Distinct rows of ``ids`` [S, K] from the backing store -> (FP8 bytes [m, hd], E8M0 bytes [m, hd/32],
        inverse [S, K] into them); on CUDA/NPU the host bytes land in freshly pinned staging."""
        t0 = time.perf_counter()
        distinct, inverse = torch.unique(ids.cpu(), return_inverse=True)
        self.stats.lookups += ids.numel()
        self.stats.distinct_rows += distinct.numel()
        values, scales = self._source.gather(table, distinct, self.stats)
        if self._pin and values.device.type == "cpu":
            values, scales = values.pin_memory(), scales.pin_memory()
        self.stats.fetch_seconds += time.perf_counter() - t0
        return values, scales, inverse

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self._pending.clear()
        if isinstance(self._source, _DiskSource):
            self._source.close()
