"""The CPU platform: host memory; the fast op table (``ops.fast``) under fast numerics, else the references.

Its process-level library settings (oneDNN's primitive cache off, MKL's memory manager off) are
``envs.LIBRARY_DEFAULTS``, set by ``import v4stack`` because they must precede torch's first oneDNN/MKL call.
"""

from __future__ import annotations

import os

import torch

from v4stack.config.numerics import Numerics
from v4stack.ops.fast import fast_ops
from v4stack.ops.table import OpTable, reference_ops
from v4stack.platforms.base import MemoryInfo, Platform

MEMINFO = "/proc/meminfo"
KIB = 1024


class CpuPlatform(Platform):
    name = "cpu"

    def is_available(self) -> bool:
        return True

    def device(self, index: int = 0) -> torch.device:
        return torch.device("cpu")

    def memory_info(self, index: int = 0) -> MemoryInfo:
        fields = {}
        if os.path.exists(MEMINFO):
            with open(MEMINFO) as fh:
                for line in fh:
                    key, _, rest = line.partition(":")
                    fields[key] = int(rest.split()[0]) * KIB
        total = fields.get("MemTotal", 0)
        return MemoryInfo(total, fields.get("MemAvailable", total))

    def op_table(self, numerics: Numerics | None = None) -> OpTable:
        return fast_ops() if numerics is not None and numerics.fast else reference_ops()
