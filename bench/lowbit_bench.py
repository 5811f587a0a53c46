"""CPU time per call of the direct low-bit GEMMs (ops.fast.lowbit) against torch's fp32 GEMM on a dense fp32 copy,
at decode and prefill row counts, one thread (``time.process_time``, so other load on the machine does not count).
It is how ``lowbit.DECODE_ROWS`` was chosen: the row count up to which the C kernel beats the tiled torch GEMM. For
the head it also times the ordered fp32 GEMM (ops.fast.ordered_gemm), which ``ops.fast.linear.lm_head`` takes from
``head_ordered_min_rows()`` rows.

    PYTHONPATH=. .venv/bin/python bench/lowbit_bench.py [--rows 1,4,16,32,64,256]
"""

from __future__ import annotations

import argparse
import time

import torch

from v4stack.ops.fast import lowbit, ordered_gemm
from v4stack.weights.formats import dequant_fp4_weight, dequant_fp8_weight, quantize_fp4_weight, quantize_fp8_weight

HEAD = (129280, 512)  # the real-shape bench checkpoint's head [V, D] (bench/decode_bench.py)
EXPERT = (4096, 512)  # an FP8 / FP4 linear of the same width
REPEATS = 5


def cpu_ms(fn) -> float:
    fn()
    t0 = time.process_time()
    for _ in range(REPEATS):
        fn()
    return (time.process_time() - t0) / REPEATS * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="1,4,16,32,64,256")
    rows = [int(r) for r in parser.parse_args().rows.split(",")]
    if not lowbit.available():
        raise SystemExit("the C kernels are not available here (no C compiler?)")
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    head = torch.randn(*HEAD, generator=g).bfloat16()
    w = torch.randn(*EXPERT, generator=g)
    q8, s8 = quantize_fp8_weight(w, 128)
    q4, s4 = quantize_fp4_weight(w)
    cases = [("head bf16", ("dense", head, None, 0), head.float()),
             ("fp8 4096x512", ("fp8", q8, s8, 128), dequant_fp8_weight(q8, s8, 128)),
             ("fp4 4096x512", ("fp4", q4, s4, 0), dequant_fp4_weight(q4, s4))]
    print(f"{'weight':<14} {'rows':>5} {'torch fp32 copy ms':>19} {'lowbit ms':>10} {'ordered ms':>11}"
          f"  (DECODE_ROWS = {lowbit.DECODE_ROWS})")
    for name, (fmt, weight, scale, block), dense in cases:
        for m in rows:
            x = torch.randn(m, dense.shape[1], generator=g)
            ref = cpu_ms(lambda: x @ dense.t())
            got = cpu_ms(lambda: lowbit.matmul(x, fmt, weight, scale, block))
            ordered = f"{cpu_ms(lambda: ordered_gemm.linear(x, weight)):>11.2f}" if fmt == "dense" else ""
            print(f"{name:<14} {m:>5} {ref:>19.2f} {got:>10.2f} {ordered}")


if __name__ == "__main__":
    main()
