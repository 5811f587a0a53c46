"""Platform registry: lookup by name, lazy vendor imports, clear errors, and the op table contract."""

import dataclasses

import pytest
import torch

from v4stack.ops.table import OpTable, reference_ops
from v4stack.platforms import available_platforms, get_platform


def test_cpu_platform_reports_memory_and_reference_ops():
    cpu = get_platform("cpu")
    assert cpu.device() == torch.device("cpu")
    info = cpu.memory_info()
    assert info.total_bytes > 0 and 0 < info.free_bytes <= info.total_bytes
    assert cpu.op_table() == reference_ops()
    assert "cpu" in available_platforms()


def test_unknown_or_absent_platform_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown platform 'tpu'"):
        get_platform("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="'cuda' is not available"):
            get_platform("cuda")


def test_op_table_overrides_are_checked_by_name():
    table = reference_ops()
    marker = object()
    assert table.with_overrides(hadamard_rotate=marker).hadamard_rotate is marker
    assert table.hadamard_rotate is not marker  # frozen: the original is untouched
    with pytest.raises(KeyError, match="sparse_atention"):
        table.with_overrides(sparse_atention=marker)
    assert {f.name for f in dataclasses.fields(OpTable)} >= {"linear_fp8", "linear_fp4", "sparse_attention"}


def test_model_calls_ops_through_its_table(tiny_checkpoint):
    """A platform's replacement op is what the model runs (here: a counting wrapper of the reference)."""
    from v4stack.config import Numerics
    from v4stack.model import ForwardBatch
    from v4stack.modelio.loader import load_model

    calls = {"n": 0}
    base = reference_ops()

    def counting_attention(*args, **kwargs):
        calls["n"] += 1
        return base.sparse_attention(*args, **kwargs)

    model = load_model(tiny_checkpoint, Numerics.exact_fp32(), ops=base.with_overrides(sparse_attention=counting_attention),
                       progress=False)
    model(ForwardBatch.build([model.new_state()], [torch.arange(3, 20)]))
    assert calls["n"] == len(model.layers)  # one call per layer for a single sequence
