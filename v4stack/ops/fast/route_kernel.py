"""MoE routing of decode-sized calls in one C call (``csrc/moe_route.c``): after the gate GEMM, the score function
(sqrtsoftplus, sigmoid or softmax), the selection bias, top-k or the hash layers' ``tid2eid`` row, the gather, the
renormalisation and ``route_scale``, in place of ~10 torch ops (their dispatch was most of a decode step's
``route``: docs/benchmarks.md).

Numerics (docs/numerics.md, fast numerics): the experts are the reference's choice (descending, the lower expert id
first on ties) given the scores; the scores round where torch rounds them, the transcendentals are libm's (double
``exp`` / ``log1p`` rounded once to fp32) instead of torch's vectorised ones, so a weight may differ from
``ops.reference.moe.route``'s by a few fp32 ulps (``tests/test_route_kernel.py`` bounds it).

``route_rows`` returns None where the kernel does not apply (more than ``MAX_ROWS`` rows or ``MAX_SCORES`` scores,
more than ``MAX_EXPERTS`` experts, a tensor off the CPU or of another dtype, no C compiler or
``V4STACK_NO_C_KERNELS=1``, a token or expert id out of range); the caller then takes its torch path.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch

from v4stack.ops.fast.kernels import CFLAGS, compile_library

SOURCE = Path(__file__).with_name("csrc") / "moe_route.c"
SCORE_CODES = {"sqrtsoftplus": 0, "sigmoid": 1, "softmax": 2}  # csrc's SCORE_*
MAX_EXPERTS = 1024  # csrc's ROUTE_MAX_EXPERTS: the kernel's per-row scratch (V4 has 256 routed experts)
# decode-sized calls: a decode step of up to the engine's default --max-num-seqs rows (prefills keep torch's path)
MAX_ROWS = 64
# and at most this many scores (rows x experts): the kernel's scalar libm calls cost ~20 ns a score against ~2-5 ns
# for torch's vectorised ones, which pay ~30 us of dispatch; measured (1 thread) the C call wins up to ~1,500-2,000
# scores (8 / 16 / 256 experts), so V4-Flash's 256 experts route in C up to 4 rows
MAX_SCORES = 1024
ROUTE_OK = 0  # csrc's ROUTE_OK


@lru_cache(maxsize=3)
def _library(cflags: tuple[str, ...] = CFLAGS) -> ctypes.CDLL | None:
    """The kernel built with ``cflags`` (default the native build; tests also build the portable ones)."""
    lib = compile_library(SOURCE, cflags, "moe_route")
    if lib is None:
        return None
    i64, ptr = ctypes.c_int64, ctypes.c_void_p
    lib.moe_route.argtypes = [ptr, i64, i64, ctypes.c_int, ptr, ptr, i64, ptr, i64, ctypes.c_float, ptr, ptr]
    lib.moe_route.restype = ctypes.c_int
    return lib


def available() -> bool:
    return _library() is not None


@dataclass(frozen=True)
class _Plan:
    """A gate's constant arguments of the C call, made once per gate (``PLAN``): ``source`` is the buffer whose
    address it holds (``bias`` or ``tid2eid``), so a replaced buffer makes a new plan."""
    source: torch.Tensor
    call: Callable
    n_experts: int
    code: int
    bias: int | None  # address of bias [E] fp32 (score-routed layers)
    table: int | None  # address of tid2eid [vocab, k] int64 (hash layers)
    vocab: int
    topk: int
    route_scale: ctypes.c_float


PLAN = "route_kernel_plan"  # gate attribute: its _Plan, or False where the kernel cannot take the gate


def _make_plan(gate, source: torch.Tensor) -> _Plan | bool:
    lib = _library()
    code = SCORE_CODES.get(gate.score_func)
    n_experts = gate.weight.shape[0]
    if (lib is None or code is None or n_experts > MAX_EXPERTS or not source.is_cpu
            or not source.is_contiguous()):
        return False
    if gate.hashed:
        if source.dtype != torch.int64 or source.dim() != 2 or source.shape[1] != gate.topk:
            return False
        bias, table, vocab = None, source.data_ptr(), source.shape[0]
    else:
        if source.dtype != torch.float32 or source.shape != (n_experts,):
            return False
        bias, table, vocab = source.data_ptr(), None, 0
    return _Plan(source, lib.moe_route, n_experts, code, bias, table, vocab, gate.topk,
                 ctypes.c_float(gate.route_scale))


def _plan(gate) -> _Plan | bool:
    """The gate's plan, made on its first call (and again when its bias / tid2eid buffer was replaced)."""
    source = gate._buffers["tid2eid" if gate.hashed else "bias"]
    plan = gate.__dict__.get(PLAN)
    if plan is None or (plan is not False and plan.source is not source):
        plan = _make_plan(gate, source)
        gate.__dict__[PLAN] = plan
    return plan


def route_rows(gate, logits: torch.Tensor, token_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``gate`` (``model.moe.Gate``), logits [T, E] fp32 (its GEMM's output), token_ids [T] -> (weights [T, k] fp32,
    expert ids [T, k] int64) as ``ops.reference.moe.route`` computes them from those logits; None where the kernel
    does not apply."""
    rows = logits.shape[0]
    if not 0 < rows <= MAX_ROWS or logits.dtype != torch.float32 or not logits.is_cpu:
        return None
    plan = _plan(gate)
    if plan is False or logits.shape[1] != plan.n_experts or rows * plan.n_experts > MAX_SCORES:
        return None
    ids = None  # held until the call: a converted copy must outlive its address
    if plan.table is not None:
        if not token_ids.is_cpu or token_ids.numel() != rows:
            return None
        ids = token_ids
        if ids.dtype != torch.int64 or ids.dim() != 1 or not ids.is_contiguous():  # (three ops: only when needed)
            ids = ids.reshape(rows).to(torch.int64).contiguous()
    logits = logits.contiguous()
    weights = torch.empty(rows, plan.topk, dtype=torch.float32)
    experts = torch.empty(rows, plan.topk, dtype=torch.int64)
    done = plan.call(logits.data_ptr(), rows, plan.n_experts, plan.code, plan.bias, plan.table, plan.vocab,
                     None if ids is None else ids.data_ptr(), plan.topk,
                     plan.route_scale, weights.data_ptr(), experts.data_ptr())
    return (weights, experts) if done == ROUTE_OK else None
