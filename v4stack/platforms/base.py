"""The platform interface: what the model and engine may ask of a piece of hardware."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch

from v4stack.config.numerics import Numerics
from v4stack.ops.table import OpTable, reference_ops


@dataclass(frozen=True)
class MemoryInfo:
    total_bytes: int
    free_bytes: int


class Platform(ABC):
    """One kind of device. Subclasses override ``op_table`` to plug in fast ops; every override must be
    tested for parity with the reference op of the same name (``v4stack.ops.reference``)."""

    name: str = "abstract"

    @abstractmethod
    def is_available(self) -> bool:
        """Whether this process can use the platform (driver and runtime present)."""

    @abstractmethod
    def device(self, index: int = 0) -> torch.device: ...

    @abstractmethod
    def memory_info(self, index: int = 0) -> MemoryInfo: ...

    def op_table(self, numerics: Numerics | None = None) -> OpTable:
        """The ops this platform runs under ``numerics``; default: the plain PyTorch references (which compute
        every mode, the fast one included, only slowly)."""
        return reference_ops()
