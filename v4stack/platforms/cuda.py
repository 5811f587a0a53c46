"""The CUDA platform. No fused kernels yet: it runs the reference ops on the GPU; Triton kernels will
replace entries of ``op_table`` here, each with a parity test against the reference."""

from __future__ import annotations

import torch

from v4stack.platforms.base import MemoryInfo, Platform


class CudaPlatform(Platform):
    name = "cuda"

    def is_available(self) -> bool:
        return torch.cuda.is_available()

    def device(self, index: int = 0) -> torch.device:
        return torch.device("cuda", index)

    def memory_info(self, index: int = 0) -> MemoryInfo:
        free, total = torch.cuda.mem_get_info(index)
        return MemoryInfo(total, free)
