"""The CPU platform: reference ops on host memory."""

from __future__ import annotations

import os

import torch

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
