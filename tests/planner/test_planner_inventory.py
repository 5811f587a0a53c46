"""The planner's aggregated tensor list (``ModelShape.tensors()``) and the model's checkpoint inventory
(``modelio.inventory.checkpoint_spec``: the module tree's state_dict on the meta device, which the loader and the
writer use) name the same tensors with the same shapes and bytes, for a tiny V4 and a tiny V4.1 config.

The planner keeps its own list because building the released models' module trees takes 12-23 s; this test is
what stops the two from drifting. One known difference, asserted as such: the planner counts the released V4.1
checkpoints' image-token routing bias (``gate.bias_vl``, a second bias per MoE layer) that the text model does not
load.
"""

from __future__ import annotations

import math
import re

import pytest

from v4stack.config.family import parse_config
from v4stack.modelio.inventory import checkpoint_spec
from v4stack.modelio.writer import tiny_config, tiny_v41_config
from v4stack.planner import memory as mem
from v4stack.planner.model_shape import ModelShape

BIAS_VL = re.compile(r"\.ffn\.gate\.bias$")  # V4.1: the planner's count=2 (bias + bias_vl)


def _expand(name: str) -> list[str]:
    """Planner name patterns -> official names: ``{a,b}`` and a trailing ``a|b`` are alternatives."""
    brace = re.search(r"\{([^}]*)\}", name)
    if brace:
        return [n for alt in brace.group(1).split(",") for n in _expand(name[:brace.start()] + alt + name[brace.end():])]
    head, _, last = name.rpartition(".")
    if "|" in last:
        return [n for alt in last.split("|") for n in _expand(f"{head}.{alt}" if head else alt)]
    return [name]


def _planner_key(name: str, n_layers: int) -> str:
    """A planner name as the inventory's logical name: no ``.weight``, DSpark/MTP stages numbered from 0."""
    name = name[:-len(".weight")] if name.endswith(".weight") else name
    return re.sub(r"^mtp\.(\d+)\.", lambda g: f"mtp.{int(g.group(1)) - n_layers}.", name)


def _inventory_key(name: str, spec: dict) -> str:
    """An inventory entry's logical tensor: a weight and its ``.scale`` are one tensor, experts are ``*``."""
    if name.endswith(".scale") and name[:-len(".scale")] + ".weight" in spec:
        name = name[:-len(".scale")]
    name = name[:-len(".weight")] if name.endswith(".weight") else name
    return re.sub(r"\.experts\.\d+\.", ".experts.*.", name)


@pytest.mark.parametrize("family", ["v4", "v41"])
def test_planner_tensors_match_the_model_inventory(family):
    raw = tiny_config().to_dict() if family == "v4" else tiny_v41_config()
    spec = checkpoint_spec(parse_config(raw))
    m = ModelShape.from_config(raw)
    inventory: dict[str, int] = {}
    for name, (shape, dtype) in spec.items():
        key = _inventory_key(name, spec)
        inventory[key] = inventory.get(key, 0) + math.prod(shape) * dtype.itemsize
    planned: dict[str, int] = {}
    for t in m.tensors():
        keys = [_planner_key(n, m.n_layers) for n in _expand(t.name)]
        for key in keys:  # the spec's bytes split evenly over the tensors it stands for
            planned[key] = planned.get(key, 0) + mem.tensor_bytes(t, "native", m.weight_block) // len(keys)
    assert sorted(planned) == sorted(inventory)
    differ = {k: (planned[k], inventory[k]) for k in planned if planned[k] != inventory[k]}
    if family == "v4":
        assert not differ
    else:
        assert differ and all(BIAS_VL.search(k) and p == 2 * i for k, (p, i) in differ.items()), differ
