"""Ops: plain-PyTorch references (``reference/``) and the ``OpTable`` through which the model calls them."""

from v4stack.ops.table import OpTable, reference_ops

__all__ = ["OpTable", "reference_ops"]
