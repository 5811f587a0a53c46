"""Pre-launch planner: what fits and how fast, for DeepSeek-V4 / V4.1 on Ascend, NVIDIA and CPU.

Entry point: ``make_plan(model, hardware, devices, ...) -> Plan``.  See ``docs/planner.md``.
"""

from v4stack.planner.model_shape import ModelShape, load_model
from v4stack.planner.plan import Plan, make_plan

__all__ = ["ModelShape", "Plan", "load_model", "make_plan"]
