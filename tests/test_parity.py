"""The parity harness (v4stack.ops.parity): recorded model calls of every op-table entry, replayed through a table."""

from dataclasses import fields

import pytest
import torch

from v4stack.config.numerics import Numerics
from v4stack.ops.parity import Tolerance, check_parity, record_reference_calls
from v4stack.ops.reference import norm
from v4stack.ops.table import OpTable, reference_ops


@pytest.fixture(scope="module")
def recorded(tiny_checkpoint):
    return record_reference_calls(tiny_checkpoint, Numerics.reference())


def test_every_entry_is_exercised_by_a_model_run(recorded):
    _, calls = recorded
    seen = {c.op for c in calls}
    expected = {f.name for f in fields(OpTable)} - {"quant_dequant_fp4_e4m3_scale"}  # V4.1-only entry
    assert expected <= seen, sorted(expected - seen)


def test_reference_table_matches_itself_exactly(recorded):
    model, calls = recorded
    results = check_parity(reference_ops(), model, calls)
    assert results and all(r.ok and r.max_abs == 0 for r in results), [r.line() for r in results if not r.ok]


def test_a_wrong_entry_is_caught_and_a_tolerance_applies(recorded):
    model, calls = recorded

    def sloppy_norm(x, weight, eps):  # eps 1e-2 instead of 1e-6: a plausible slip
        return norm.rms_norm(x, weight, 1e-2)

    def noisy_topk(scores, topk, positions, ratio):
        out = reference_ops().index_topk(scores, topk, positions, ratio)
        return out.flip(-1)  # right set, wrong order

    table = reference_ops().with_overrides(rms_norm=sloppy_norm, index_topk=noisy_topk)
    by_op = {r.op: r for r in check_parity(table, model, calls)}
    assert not by_op["rms_norm"].ok and not by_op["index_topk"].ok
    assert by_op["linear"].ok and by_op["moe_experts"].ok
    big = check_parity(table, model, calls, tolerances={"rms_norm": Tolerance(rtol=0.5)},
                       ops=lambda name: name == "rms_norm")
    assert [r.op for r in big] == ["rms_norm"] and big[0].ok and big[0].max_abs > 0


def test_recorded_calls_do_not_alias_model_state(recorded):
    _, calls = recorded
    call = next(c for c in calls if c.op == "sparse_attention")
    assert isinstance(call.out, torch.Tensor) and call.out.dtype == torch.bfloat16
