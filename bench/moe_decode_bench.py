"""CPU time of one MoE layer's decode call (``ops.fast.moe_kernel``, ``csrc/moe_decode.c``) at a checkpoint's real
shapes and routing, one thread (``time.process_time``), and of its low-bit GEMMs alone (``ops.fast.lowbit``) at the
row counts an expert sees. ``--baseline DIR``: also build ``DIR/moe_decode.c`` (another revision's csrc folder,
e.g. from ``git archive``) and time it in the same process, rounds alternating, and check its output is
bit-identical.

    PYTHONPATH=. .venv/bin/python bench/moe_decode_bench.py --model models/v4-demo-shakespeare [--rows 16]
        [--baseline DIR/csrc]
"""

from __future__ import annotations

import argparse
import ctypes
import statistics
import time
from pathlib import Path

import torch

from v4stack.config.numerics import Numerics
from v4stack.modelio.loader import load_model
from v4stack.ops.fast import lowbit, moe_kernel
from v4stack.ops.fast import moe as fast_moe
from v4stack.ops.fast.kernels import CFLAGS, compile_library

CALLS = 50  # calls per timed round: a round is ~50 ms at the demo's shapes
ROUNDS = 7  # alternating rounds (median reported)
GEMM_ROWS = (1, 2, 4, 5, 8, 16)  # rows an expert's GEMMs see in a 16-row decode step (top-2 of 8: ~4 a routed one)


def cpu_ms(fn, calls: int = CALLS) -> float:
    t0 = time.process_time()
    for _ in range(calls):
        fn()
    return (time.process_time() - t0) / calls * 1e3


def _baseline_library(csrc: Path) -> ctypes.CDLL:
    lib = compile_library(csrc / "moe_decode.c", (*CFLAGS, lowbit.OPENMP_CFLAG), "moe_decode_baseline")
    if lib is None:
        raise SystemExit(f"cannot build {csrc / 'moe_decode.c'}")
    lib.moe_decode.argtypes = moe_kernel._library().moe_decode.argtypes
    lib.moe_decode.restype = ctypes.c_int
    return lib


def _call(lib, moe, x, weights, experts, y) -> None:
    table, fmts, _, _ = getattr(moe, moe_kernel.EXPERT_TABLE)
    shared, c = moe.shared_experts, moe.compute
    assert lib.moe_decode(x.data_ptr(), x.shape[0], x.shape[1], shared.w1.out_features, experts.data_ptr(),
                          weights.data_ptr(), experts.shape[1], len(moe.experts), table.data_ptr(), fmts.data_ptr(),
                          c.weight_block, shared.limit, c.act_block, y.data_ptr(), 1) == 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--rows", type=int, default=16)
    parser.add_argument("--layer", type=int, default=1)
    parser.add_argument("--baseline", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = load_model(args.model, Numerics.fast_kernels(), progress=False)
    moe = model.layers[args.layer].ffn
    g = torch.Generator().manual_seed(0)
    d = moe.shared_experts.w1.in_features
    xb = (torch.randn(args.rows, d, generator=g) * 2).bfloat16()
    weights, experts = moe.gate(xb, torch.randint(0, model.cfg.vocab_size, (args.rows,), generator=g))
    x = fast_moe.act_quant(xb, moe.compute.act_block, torch.bfloat16).float().contiguous()
    weights, experts = weights.float().contiguous(), experts.contiguous()
    counts = torch.bincount(experts.flatten(), minlength=len(moe.experts)).tolist()
    print(f"{args.model}: D {d}, I {moe.shared_experts.w1.out_features}, {args.rows} rows, layer {args.layer}, "
          f"rows per routed expert {counts}, formats {[e.w1.fmt for e in (moe.experts[0], moe.shared_experts)]}")
    libs = {"this tree": moe_kernel._library()}
    if args.baseline is not None:
        libs["baseline"] = _baseline_library(args.baseline)
    outs = {name: torch.empty(args.rows, d, dtype=torch.bfloat16) for name in libs}
    for name, lib in libs.items():
        _call(lib, moe, x, weights, experts, outs[name])
    if "baseline" in outs:
        print("bit-identical to the baseline:", torch.equal(outs["baseline"], outs["this tree"]))
    times = {name: [] for name in libs}
    for _ in range(ROUNDS):
        for name, lib in libs.items():
            times[name].append(cpu_ms(lambda: _call(lib, moe, x, weights, experts, outs[name])))
    for name, ts in times.items():
        print(f"moe_decode {name:<10} median {statistics.median(ts):.3f} ms/call  (rounds {[round(t, 3) for t in ts]})")
    for label, layer in (("routed w1", moe.experts[0].w1), ("shared w1", moe.shared_experts.w1),
                         ("routed w2", moe.experts[0].w2)):
        for m in GEMM_ROWS:
            xm = torch.randn(m, layer.in_features, generator=g)
            ms = statistics.median(cpu_ms(lambda: lowbit.matmul(xm, layer.fmt, layer.weight, layer.scale,
                                                                moe.compute.weight_block)) for _ in range(3))
            print(f"lowbit {label} {layer.fmt} {layer.out_features}x{layer.in_features} rows {m:>2}: {ms:.4f} ms")


if __name__ == "__main__":
    main()
