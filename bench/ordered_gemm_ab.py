"""A/B of the ordered fp32 GEMM kernels (csrc/ordered_gemm.c) of this tree against those of a git revision, in one
process on the CPU clock (1 thread by default, alternating rounds, medians), on the GEMM shapes the real-shape
checkpoint's prefill and decode give them (mHC mixes, router, compressor projections, head) and a few decode-sized
ones. Both are built with the fast table's flags (-march=native), so on a CPU without AVX-512 this compares the
AVX2 kernels with whatever the revision had there. It also checks that both give the same values.

    PYTHONPATH=. .venv/bin/python bench/ordered_gemm_ab.py [--baseline main] [--rounds 5]
"""

from __future__ import annotations

import argparse
import ctypes
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import torch

from v4stack.ops.fast import ordered_gemm
from v4stack.ops.fast.kernels import CFLAGS, compile_library
from v4stack.ops.reference import blas_order

CSRC = "v4stack/ops/fast/csrc"
# (name, rows, N, K, weight dtype): real-shape prefill (2,048 tokens, D = 512, hc = 4), the 16-stream decode step
# and the 64-row head of bench/prefill_profile.py's checkpoint; rows < BLOCKED_MIN_ROWS take the small-row kernel
SHAPES = [
    ("mHC mixes 2048 x 2048 -> 24", 2048, 24, 2048, torch.float32),
    ("compressor 2048 x 512 -> 1024", 2048, 1024, 512, torch.float32),
    ("router 2048 x 512 -> 16", 2048, 16, 512, torch.float32),
    ("head 64 x 512 -> 129280 bf16", 64, 129280, 512, torch.bfloat16),
    ("mHC mixes 16 x 2048 -> 24", 16, 24, 2048, torch.float32),
    ("compressor 16 x 512 -> 1024", 16, 1024, 512, torch.float32),
    ("mHC mixes 1 x 2048 -> 24", 1, 24, 2048, torch.float32),
    ("compressor 1 x 512 -> 1024", 1, 1024, 512, torch.float32),
    ("compressor 7 x 512 -> 1024", 7, 1024, 512, torch.float32),
]


def _baseline_library(rev: str, tmp: Path) -> ctypes.CDLL:
    """csrc/ordered_gemm.c (and its headers) of git revision ``rev`` built with ordered_gemm's flags (OpenMP too:
    its parallel region costs a few microseconds even on one thread)."""
    names = subprocess.run(["git", "ls-tree", "--name-only", f"{rev}:{CSRC}"], capture_output=True, text=True,
                           check=True).stdout.split()
    for name in names:
        if name.startswith("ordered_gemm"):
            blob = subprocess.run(["git", "show", f"{rev}:{CSRC}/{name}"], capture_output=True, check=True).stdout
            (tmp / name).write_bytes(blob)
    lib = compile_library(tmp / "ordered_gemm.c", (*CFLAGS, *ordered_gemm.ORDER_CFLAGS, ordered_gemm.OPENMP_CFLAG),
                          "ordered_gemm_ab")
    if lib is None:
        raise SystemExit("the baseline did not compile")
    return lib


def _call(lib: ctypes.CDLL, x: torch.Tensor, w: torch.Tensor, y: torch.Tensor, plan) -> None:
    m, k = x.shape
    n = w.shape[0]
    bf16 = int(w.dtype == torch.bfloat16)
    if plan is None:
        lib.ordered_gemm(ctypes.c_void_p(x.data_ptr()), ctypes.c_int64(m), ctypes.c_int64(k),
                         ctypes.c_void_p(w.data_ptr()), bf16, ctypes.c_int64(n),
                         ctypes.c_int64(blas_order.k_block(n, k)), ctypes.c_void_p(y.data_ptr()), 1)
    else:
        orders, first_left_over = plan
        lib.ordered_small_gemm(ctypes.c_void_p(x.data_ptr()), ctypes.c_int64(m), ctypes.c_int64(k),
                               ctypes.c_void_p(w.data_ptr()), bf16, ctypes.c_int64(n),
                               ctypes.c_int64(first_left_over), ctypes.c_void_p(orders.data_ptr()),
                               ctypes.c_void_p(y.data_ptr()), 1)


def _seconds(lib, x, w, y, plan, calls: int) -> float:
    t0 = time.process_time()
    for _ in range(calls):
        _call(lib, x, w, y, plan)
    return (time.process_time() - t0) / calls


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--baseline", default="main")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(1)
    new = ordered_gemm._library()
    with tempfile.TemporaryDirectory() as tmp:
        old = _baseline_library(args.baseline, Path(tmp))
    print(f"ordered GEMM, this tree vs {args.baseline}: 1 thread, CPU clock, median of {args.rounds} alternating "
          f"rounds")
    print("| GEMM | before ms | after ms | speedup | after GFLOP/s |\n|---|---|---|---|---|")
    for name, m, n, k, dtype in SHAPES:
        g = torch.Generator().manual_seed(m + n + k)
        x, w = torch.randn(m, k, generator=g), torch.randn(n, k, generator=g).to(dtype)
        plan = ordered_gemm._small_orders(m, n, k) if m < blas_order.BLOCKED_MIN_ROWS else None
        ys = [torch.empty(m, n), torch.empty(m, n)]
        _call(old, x, w, ys[0], plan)
        _call(new, x, w, ys[1], plan)
        if not torch.equal(ys[0], ys[1]):
            raise SystemExit(f"{name}: the two builds differ")
        calls = max(1, int(2e7 // (m * n * k)))  # ~20M fmas a timing: a few ms, well above the clock's tick
        times = {0: [], 1: []}
        for _ in range(args.rounds):
            for i, lib in ((0, old), (1, new)):
                times[i].append(_seconds(lib, x, w, ys[i], plan, calls))
        before, after = statistics.median(times[0]), statistics.median(times[1])
        print(f"| {name} | {before * 1e3:.3f} | {after * 1e3:.3f} | {before / after:.2f}x | "
              f"{2 * m * n * k / after / 1e9:.1f} |")


if __name__ == "__main__":
    main()
