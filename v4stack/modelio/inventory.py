"""The checkpoint inventory: official tensor name -> (shape, dtype) of every tensor a model of a config holds.

It is the ``state_dict`` of the architecture's module tree built on the meta device (buffer names are the
official names), so the loader, the checkpoint writer and the planner read one table that cannot drift from
the model code.
"""

from __future__ import annotations

import torch
from torch import nn

from v4stack.config.family import AnyConfig
from v4stack.config.numerics import Numerics
from v4stack.config.v41_config import V41Config
from v4stack.model.transformer import DeepseekV4
from v4stack.model.v41.transformer import DeepseekV41
from v4stack.ops.table import OpTable

TensorTable = dict[str, tuple[tuple[int, ...], torch.dtype]]


def build_model(cfg: AnyConfig, numerics: Numerics | None = None, ops: OpTable | None = None) -> nn.Module:
    """The module tree of ``cfg``'s architecture (on the current default device)."""
    if isinstance(cfg, V41Config):
        return DeepseekV41(cfg, numerics, ops)
    return DeepseekV4(cfg, numerics, ops)


def expected_tensors(model: nn.Module) -> TensorTable:
    """Official name -> (shape, dtype) for every tensor the model needs."""
    return {name: (tuple(t.shape), t.dtype) for name, t in model.state_dict().items()}


def checkpoint_spec(cfg: AnyConfig) -> TensorTable:
    """Official name -> (shape, dtype) of every tensor a checkpoint of ``cfg`` holds (no memory allocated)."""
    with torch.device("meta"):
        return expected_tensors(build_model(cfg))
