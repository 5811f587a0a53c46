"""A/B of the ordered fp32 GEMM kernels (csrc/ordered_gemm.c) and of the fused mHC pre that includes them
(csrc/mhc_pre.c) of this tree against those of a git revision, in one process on the CPU clock (1 thread,
alternating rounds, medians), on the GEMM shapes the real-shape checkpoint's prefill and decode give them (mHC
mixes, router, compressor projections, head), a few decode-sized ones, and the fused mHC pre of decode batches of
the real-shape (D = 512) and demo (D = 256) models. Both are built with the fast table's flags (-march=native), so on
a CPU without AVX-512 this compares the AVX2 kernels with whatever the revision had there. It also checks that both
give the same values.

    PYTHONPATH=. .venv/bin/python bench/ordered_gemm_ab.py [--baseline main] [--rounds 5] [--decode] [--cold]
"""

from __future__ import annotations

import argparse
import ctypes
import itertools
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import torch

from v4stack.model.mhc import HcShape
from v4stack.ops.fast import mhc_fused, ordered_gemm
from v4stack.ops.fast.kernels import CFLAGS, compile_library
from v4stack.ops.reference import blas_order

CSRC = "v4stack/ops/fast/csrc"
CALL_FMAS = 2e7  # fmas per timing of a GEMM: a few ms, well above the clock's tick
HC_PRE_CALLS = 200  # fused mHC pre calls per timing (10-300 us each)
# (name, rows, N, K, weight dtype): real-shape prefill (2,048 tokens, D = 512, hc = 4), the 16-stream decode step
# and the 8 / 16 / 64-row head of bench/prefill_profile.py's checkpoint; rows < BLOCKED_MIN_ROWS take the small-row kernel
SHAPES = [
    ("mHC mixes 2048 x 2048 -> 24", 2048, 24, 2048, torch.float32),
    ("compressor 2048 x 512 -> 1024", 2048, 1024, 512, torch.float32),
    ("router 2048 x 512 -> 16", 2048, 16, 512, torch.float32),
    ("head 64 x 512 -> 129280 bf16", 64, 129280, 512, torch.bfloat16),
    ("head 16 x 512 -> 129280 bf16", 16, 129280, 512, torch.bfloat16),
    ("head 8 x 512 -> 129280 bf16", 8, 129280, 512, torch.bfloat16),
    ("mHC mixes 16 x 2048 -> 24", 16, 24, 2048, torch.float32),
    ("compressor 16 x 512 -> 1024", 16, 1024, 512, torch.float32),
    ("mHC mixes 1 x 2048 -> 24", 1, 24, 2048, torch.float32),
    ("compressor 1 x 512 -> 1024", 1, 1024, 512, torch.float32),
    ("compressor 7 x 512 -> 1024", 7, 1024, 512, torch.float32),
]
# --decode: the small-row GEMMs of the real-shape checkpoint's decode steps at 1, 2, 4 and 7 rows (fp32 compressor
# projections with bf16 weights, the router gate with fp32 ones) and the demo model's bf16 projections
DECODE_ROWS = (1, 2, 4, 7)
DECODE_SHAPES = [(f"{m} x {k} -> {n} {str(dtype)[6:]}", m, n, k, dtype) for m in DECODE_ROWS
                 for n, k, dtype in ((1024, 512, torch.bfloat16), (512, 512, torch.bfloat16),
                                     (256, 512, torch.bfloat16), (16, 512, torch.float32),
                                     (256, 256, torch.bfloat16), (128, 256, torch.bfloat16))]
COLD_BYTES = 96 << 20  # --cold: copies of the weight, 3x this EPYC's 32 MiB L3, read in turn (a decode step
                       # streams the 132 MB head through the L3, so its GEMMs find their weights in DRAM)


# (D, rows) of the fused mHC pre: the real-shape and demo models' streams, hc = 4, 20 Sinkhorn iterations
HC_PRE_SHAPES = [(512, 1), (512, 16), (512, 64), (256, 1), (256, 16)]
HC_SHAPE = HcShape(4, 20, 1e-6, 1e-6)


def _baseline_libraries(rev: str, tmp: Path) -> tuple[ctypes.CDLL, ctypes.CDLL]:
    """csrc/ordered_gemm.c and csrc/mhc_pre.c (and their headers) of git revision ``rev`` built with their modules'
    flags (OpenMP too: its parallel region costs a few microseconds even on one thread)."""
    names = subprocess.run(["git", "ls-tree", "--name-only", f"{rev}:{CSRC}"], capture_output=True, text=True,
                           check=True).stdout.split()
    for name in names:
        if name.startswith(("ordered_gemm", "mhc_pre")):
            blob = subprocess.run(["git", "show", f"{rev}:{CSRC}/{name}"], capture_output=True, check=True).stdout
            (tmp / name).write_bytes(blob)
    flags = (*CFLAGS, *ordered_gemm.ORDER_CFLAGS, ordered_gemm.OPENMP_CFLAG)
    libs = compile_library(tmp / "ordered_gemm.c", flags, "ordered_gemm_ab"), compile_library(
        tmp / "mhc_pre.c", flags, "mhc_pre_ab")
    if None in libs:
        raise SystemExit("the baseline did not compile")
    return libs


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


def _hc_pre_call(lib: ctypes.CDLL, x: torch.Tensor, fn: torch.Tensor, scale: torch.Tensor, base: torch.Tensor,
                 outs: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> None:
    """hc_pre_fused as ops.fast.mhc_fused calls it (bf16 streams x [T, hc, D]) into outs (y, post, comb)."""
    t, hc, d = x.shape
    n, k = fn.shape
    orders, first_left_over = ordered_gemm._small_orders(t, n, k) if t < blas_order.BLOCKED_MIN_ROWS else (None, 0)
    i64, f32 = ctypes.c_int64, ctypes.c_float
    lib.hc_pre_fused(ctypes.c_void_p(x.data_ptr()), 1, i64(t), i64(hc), i64(d), ctypes.c_void_p(fn.data_ptr()), i64(n),
                     None if orders is None else ctypes.c_void_p(orders.data_ptr()), i64(first_left_over),
                     i64(blas_order.k_block(n, k)), ctypes.c_void_p(scale.data_ptr()), ctypes.c_void_p(base.data_ptr()),
                     i64(HC_SHAPE.iters), f32(HC_SHAPE.norm_eps), f32(HC_SHAPE.hc_eps), 0,
                     *(ctypes.c_void_p(o.data_ptr()) for o in outs), 1)


def _weights(w: torch.Tensor, cold: bool):
    """A function giving the weight for each call: w itself (cache-hot), or copies of it in turn (--cold)."""
    if not cold:
        return lambda: w
    copies = itertools.cycle([w.clone() for _ in range(max(1, COLD_BYTES // (w.numel() * w.element_size())))])
    return lambda: next(copies)


def _seconds(call, calls: int) -> float:
    t0 = time.process_time()
    for _ in range(calls):
        call()
    return (time.process_time() - t0) / calls


def _ab(old, new, rounds: int, calls: int) -> tuple[float, float]:
    """Median seconds of one call of old() and new(), alternating rounds."""
    times = {0: [], 1: []}
    for _ in range(rounds):
        for i, call in ((0, old), (1, new)):
            times[i].append(_seconds(call, calls))
    return statistics.median(times[0]), statistics.median(times[1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--baseline", default="main")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--decode", action="store_true", help="the decode GEMMs at 1, 2, 4, 7 rows only (DECODE_SHAPES)")
    ap.add_argument("--cold", action="store_true", help="read a different copy of the weight each call (COLD_BYTES)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    new, new_mhc = ordered_gemm._library(), mhc_fused._library()
    with tempfile.TemporaryDirectory() as tmp:
        old, old_mhc = _baseline_libraries(args.baseline, Path(tmp))
    print(f"ordered GEMM, this tree vs {args.baseline}: 1 thread, CPU clock, median of {args.rounds} alternating "
          f"rounds, {'cold' if args.cold else 'cache-hot'} weights; load average {os.getloadavg()[0]:.1f}")
    unit, scale, digits = ("us", 1e6, 1) if args.decode else ("ms", 1e3, 3)
    print(f"| GEMM | before {unit} | after {unit} | speedup | after GFLOP/s |\n|---|---|---|---|---|")
    for name, m, n, k, dtype in DECODE_SHAPES if args.decode else SHAPES:
        g = torch.Generator().manual_seed(m + n + k)
        x, w = torch.randn(m, k, generator=g), torch.randn(n, k, generator=g).to(dtype)
        plan = ordered_gemm._small_orders(m, n, k) if m < blas_order.BLOCKED_MIN_ROWS else None
        ys = [torch.empty(m, n), torch.empty(m, n)]
        _call(old, x, w, ys[0], plan)
        _call(new, x, w, ys[1], plan)
        if not torch.equal(ys[0], ys[1]):
            raise SystemExit(f"{name}: the two builds differ")
        calls = max(1, int(CALL_FMAS // (m * n * k)))
        weight = _weights(w, args.cold)
        before, after = _ab(lambda: _call(old, x, weight(), ys[0], plan), lambda: _call(new, x, weight(), ys[1], plan),
                            args.rounds, calls)
        print(f"| {name} | {before * scale:.{digits}f} | {after * scale:.{digits}f} | {before / after:.2f}x | "
              f"{2 * m * n * k / after / 1e9:.1f} |")
    print("\n| fused mHC pre (hc_pre_fused, bf16 streams) | before us | after us | speedup |\n|---|---|---|---|")
    for d, t in HC_PRE_SHAPES:
        g = torch.Generator().manual_seed(d + t)
        x = (torch.randn(t, HC_SHAPE.hc, d, generator=g) * 3).bfloat16()
        n = (2 + HC_SHAPE.hc) * HC_SHAPE.hc
        fn, scale, base = torch.randn(n, HC_SHAPE.hc * d, generator=g) * 0.05, torch.rand(3) + 0.5, torch.randn(n)
        outs = [(torch.empty(t, d, dtype=torch.bfloat16), torch.empty(t, HC_SHAPE.hc),
                 torch.empty(t, HC_SHAPE.hc, HC_SHAPE.hc)) for _ in range(2)]
        _hc_pre_call(old_mhc, x, fn, scale, base, outs[0])
        _hc_pre_call(new_mhc, x, fn, scale, base, outs[1])
        if not all(torch.equal(a, b) for a, b in zip(*outs)):
            raise SystemExit(f"hc_pre D={d} T={t}: the two builds differ")
        before, after = _ab(lambda: _hc_pre_call(old_mhc, x, fn, scale, base, outs[0]),
                            lambda: _hc_pre_call(new_mhc, x, fn, scale, base, outs[1]), args.rounds, HC_PRE_CALLS)
        print(f"| D {d}, {t} rows | {before * 1e6:.1f} | {after * 1e6:.1f} | {before / after:.2f}x |")

if __name__ == "__main__":
    main()
