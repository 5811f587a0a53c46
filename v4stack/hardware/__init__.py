"""Hardware registry shared by the planner and (later) the engine's platforms."""

from v4stack.hardware.registry import ChipSpec, Figure, get_chip, list_chips, probe_cpu

__all__ = ["ChipSpec", "Figure", "get_chip", "list_chips", "probe_cpu"]
