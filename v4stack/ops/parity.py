"""Parity harness: every entry of a platform's op table against the reference, on the inputs a real model run
hands to each op.

A small model is run once with a *recording* reference table, which keeps (a clone of) the arguments and the
result of the first few calls of every entry - layers, caches and mixing included, so the wide entries (which
take modules) are exercised on real modules. ``check_parity`` then calls the candidate table's
``prepare_weights`` on that model and replays each recorded call through the candidate's entry of the same name,
comparing the results: floats by max |d| <= atol + rtol * max |reference|, integers exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Callable

import torch

from v4stack.config.numerics import Numerics
from v4stack.ops.table import OpTable, reference_ops

CALLS_PER_OP = 3  # recorded calls per entry: enough to cover prefill, decode and several layer kinds
MTP_ROWS = 8  # rows of the recorded MTP step


@dataclass(frozen=True)
class Call:
    op: str
    args: tuple
    kwargs: dict
    out: Any


@dataclass(frozen=True)
class Tolerance:
    atol: float = 0.0
    rtol: float = 0.0


@dataclass(frozen=True)
class ParityResult:
    op: str
    error: float  # max |d| minus the allowed part: <= 0 passes
    max_abs: float
    ok: bool

    def line(self) -> str:
        return f"{'ok  ' if self.ok else 'FAIL'} {self.op:<28} max |d| {self.max_abs:.3g}"


def _clone(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, tuple):
        return tuple(_clone(v) for v in value)
    if isinstance(value, list):
        return [_clone(v) for v in value]
    return value


def recording_table(base: OpTable, calls: list[Call], per_op: int = CALLS_PER_OP) -> OpTable:
    """``base`` with every entry wrapped: the first ``per_op`` calls of each are appended to ``calls``."""
    wrapped = {}
    for f in fields(base):
        op = getattr(base, f.name)

        def record(*args, _op=op, _name=f.name, **kwargs):
            snapshot = _clone(args), _clone(kwargs)
            out = _op(*args, **kwargs)
            if sum(c.op == _name for c in calls) < per_op:
                calls.append(Call(_name, *snapshot, _clone(out)))
            return out

        wrapped[f.name] = record
    return base.with_overrides(**wrapped)


def record_reference_calls(checkpoint: str | Path, numerics: Numerics, prompt_len: int = 70,
                           decode_steps: int = 2, seed: int = 0,
                           per_op: int = CALLS_PER_OP) -> tuple[torch.nn.Module, list[Call]]:
    """Load ``checkpoint`` with a recording reference table and run two sequences (a ``prompt_len`` prefill and a
    shorter one) plus ``decode_steps`` batched decode steps and one MTP step when the model has one."""
    from v4stack.model import ForwardBatch
    from v4stack.modelio.loader import load_model

    calls: list[Call] = []
    model = load_model(checkpoint, numerics, ops=recording_table(reference_ops(), calls, per_op), progress=False)
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, model.cfg.vocab_size, (prompt_len,), generator=gen)
    states = [model.new_state(), model.new_state()]
    out = model(ForwardBatch.build(states, [ids, ids[: prompt_len // 3]]))
    for _ in range(decode_steps):
        out = model(ForwardBatch.build(states, list(model.compute.ops.argmax(out.logits)[:, None])))
    if getattr(model, "mtp", None):
        n = min(MTP_ROWS, prompt_len - 1)
        model.mtp_forward(ForwardBatch.build([model.new_state()], [ids[1:n + 1]], is_mtp=True),
                          model(ForwardBatch.build([model.new_state()], [ids[:n]])).hidden)
    return model, calls


def _swap_tables(value: Any, table: OpTable) -> Any:
    """Recorded arguments that are op tables (the ``ops`` of composite entries) become the candidate table."""
    if isinstance(value, OpTable):
        return table
    if isinstance(value, tuple):
        return tuple(_swap_tables(v, table) for v in value)
    return value


def _flat(value: Any) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (tuple, list)):
        return [t for v in value for t in _flat(v)]
    return []


def _compare(op: str, got: Any, want: Any, tol: Tolerance) -> ParityResult:
    worst_err, worst_abs = float("-inf"), 0.0
    got_t, want_t = _flat(got), _flat(want)
    if len(got_t) != len(want_t):
        return ParityResult(op, float("inf"), float("inf"), False)
    for g, w in zip(got_t, want_t):
        if g.shape != w.shape:
            return ParityResult(op, float("inf"), float("inf"), False)
        if not w.is_floating_point():
            diff = float((g != w).sum())
            err = diff
        else:
            diff = (g.double() - w.double()).abs().nan_to_num(0.0).max().item() if w.numel() else 0.0
            same_inf = torch.equal(torch.isinf(g), torch.isinf(w)) and torch.equal(torch.isnan(g), torch.isnan(w))
            scale = w.double().nan_to_num(0.0, 0.0, 0.0).abs().max().item() if w.numel() else 0.0
            err = diff - (tol.atol + tol.rtol * scale) if same_inf else float("inf")
        worst_err, worst_abs = max(worst_err, err), max(worst_abs, diff)
    return ParityResult(op, worst_err, worst_abs, worst_err <= 0)


def check_parity(table: OpTable, model: torch.nn.Module, calls: list[Call],
                 tolerances: dict[str, Tolerance] | None = None, default: Tolerance = Tolerance(),
                 ops: Callable[[str], bool] = lambda name: True) -> list[ParityResult]:
    """Replay ``calls`` through ``table`` (after ``table.prepare_weights(model)``); one result per entry, the
    worst over its calls. Entries without a tolerance must match exactly (``default``)."""
    tolerances = tolerances or {}
    table.prepare_weights(model)
    worst: dict[str, ParityResult] = {}
    for call in calls:
        if call.op == "prepare_weights" or not ops(call.op):
            continue
        got = getattr(table, call.op)(*_swap_tables(call.args, table), **call.kwargs)
        res = _compare(call.op, got, call.out, tolerances.get(call.op, default))
        if call.op not in worst or res.error > worst[call.op].error:
            worst[call.op] = res
    return list(worst.values())
