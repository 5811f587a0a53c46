"""GEMMs that read weights in their checkpoint format (``csrc/lowbit_gemm.c``): bf16, FP8 e4m3 + ue8m0 block
scales (1 byte per weight), FP4 e2m1 nibbles + ue8m0 1x32 scales (half a byte), so the fast mode keeps no dense
copy of them. ``matmul(x, fmt, weight, scale, block)`` -> x @ W^T in fp32 (fp32 accumulation):

- up to ``DECODE_ROWS`` rows of x (decode, bandwidth-bound): the C kernel, which dequantises each weight once per
  call into a small per-thread fp32 panel and streams the checkpoint bytes once; bf16 weights at up to
  ``BF16_DIRECT_ROWS`` rows (the decode head), and FP8 / FP4 weights at up to ``LOWBIT_DIRECT_ROWS`` rows (decode's
  linears and experts; AVX-512 and AVX2 builds), skip the panel: converted in registers, prefetched ahead, the same
  FMA chain per output (bit-identical). Every build (AVX-512, AVX2 + FMA + F16C, plain C) gives the same bits: each
  output is one 16-lane fp32 FMA chain over K and one fixed summation tree (docs/numerics.md);
- more rows (prefill, compute-bound): tiles of ``PREFILL_TILE_ROWS`` weight rows dequantised to fp32 by the C
  kernel and multiplied by torch's GEMM (transient memory: one tile, 4 bytes x tile rows x K).

Returns None when the kernel cannot take the call (no C compiler, a non-CPU tensor, an FP4 K not a multiple of
32); callers then use their torch formulation. Threads: torch's intra-op count (``platforms.threads`` sets it).
"""

from __future__ import annotations

import ctypes
from functools import lru_cache
from pathlib import Path

import torch

from v4stack.ops.fast.kernels import CFLAGS, compile_library
from v4stack.ops.reference.layers import DENSE, FP4, FP8
from v4stack.weights.formats import FP4_BLOCK

SOURCE = Path(__file__).with_name("csrc") / "lowbit_gemm.c"
OPENMP_CFLAG = "-fopenmp"  # torch's wheel ships libgomp.so.1: the same soname, so one thread pool in the process
FORMAT_CODE = {DENSE: 0, FP8: 1, FP4: 2}  # the C enum
BF16_DIRECT_ROWS = 16  # csrc's BF16_DIRECT_ROWS: up to here (all of DECODE_ROWS) a bf16 weight skips the fp32 panel
LOWBIT_DIRECT_ROWS = 4  # csrc's LOWBIT_DIRECT_ROWS: the same for FP8 / FP4 weights (AVX-512 and AVX2 builds)
DECODE_ROWS = 16  # measured (bench/lowbit_bench.py, 1 thread): the C kernel wins up to here, torch's tiled GEMM above
PREFILL_TILE_ROWS = 2048  # weight rows per dequantised tile: 8 MiB of fp32 at K = 1024


@lru_cache(maxsize=4)
def _library(cflags: tuple[str, ...] = CFLAGS) -> ctypes.CDLL | None:
    """The kernel built with ``cflags`` (default the native build; tests also build the AVX2 and plain-C ones)."""
    lib = compile_library(SOURCE, (*cflags, OPENMP_CFLAG), "lowbit_gemm") or compile_library(
        SOURCE, cflags, "lowbit_gemm")  # no OpenMP: the pragmas are ignored, one thread
    if lib is None:
        return None
    i64, ptr, cint = ctypes.c_int64, ctypes.c_void_p, ctypes.c_int
    lib.lowbit_gemm.argtypes = [ptr, i64, i64, ptr, ptr, cint, i64, i64, i64, ptr, cint]
    lib.lowbit_gemm.restype = cint
    lib.lowbit_dequant.argtypes = [ptr, ptr, cint, i64, i64, i64, i64, ptr, cint]
    lib.lowbit_isa.restype = cint
    return lib


ISA_NAMES = ("plain C", "AVX2", "AVX-512")  # csrc's lowbit_isa codes 0, 1, 2


def isa(cflags: tuple[str, ...] = CFLAGS) -> str | None:
    """Which kernels the build with ``cflags`` runs (one of ``ISA_NAMES``; every one gives the same bits), or None
    when it cannot be built."""
    lib = _library(cflags)
    return None if lib is None else ISA_NAMES[lib.lowbit_isa()]


def available() -> bool:
    return _library() is not None


def _raw(t: torch.Tensor | None) -> torch.Tensor | None:
    """A checkpoint tensor as its contiguous bytes (bf16 as int16, FP8/FP4/ue8m0 as uint8)."""
    if t is None:
        return None
    t = t.contiguous()
    return t.view(torch.int16) if t.dtype == torch.bfloat16 else t.view(torch.uint8)


def supports(fmt: str, weight: torch.Tensor) -> bool:
    """Whether ``matmul`` takes this weight (format, dtype, device, FP4 K a multiple of its scale block)."""
    if fmt not in FORMAT_CODE or weight.device.type != "cpu" or not available():
        return False
    if fmt == DENSE:
        return weight.dtype == torch.bfloat16
    if fmt == FP4:
        return (2 * weight.shape[-1]) % FP4_BLOCK == 0
    return weight.dtype == torch.float8_e4m3fn


def dequant(fmt: str, weight: torch.Tensor, scale: torch.Tensor | None, block: int, row0: int, rows: int,
            k: int, cflags: tuple[str, ...] = CFLAGS) -> torch.Tensor:
    """Rows [row0, row0 + rows) of the weight as fp32 [rows, k] (exact); ``cflags``: which build runs."""
    lib = _library(cflags)
    w, s = _raw(weight), _raw(scale)
    out = torch.empty(rows, k, dtype=torch.float32)
    lib.lowbit_dequant(w.data_ptr(), 0 if s is None else s.data_ptr(), FORMAT_CODE[fmt], k, block, row0, rows,
                       out.data_ptr(), torch.get_num_threads())
    return out


def raw_views(weight: torch.Tensor, scale: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The byte views ``matmul`` reads, made once at load (``ops.fast.prepare``) so a call converts nothing; they
    share the checkpoint tensors' storage (no copy)."""
    return _raw(weight), _raw(scale)


def matmul(x: torch.Tensor, fmt: str, weight: torch.Tensor, scale: torch.Tensor | None, block: int,
           row0: int = 0, rows: int | None = None,
           raw: tuple[torch.Tensor, torch.Tensor | None] | None = None,
           cflags: tuple[str, ...] = CFLAGS) -> torch.Tensor | None:
    """x [M, K] (any float dtype) @ W[row0 : row0 + rows]^T -> fp32 [M, rows]; W [N, K] (FP4: [N, K/2] packed) in
    ``fmt`` with its ue8m0 ``scale`` (FP8: [ceil(N/block), ceil(K/block)], FP4: [N, K/32]); ``raw``: the weight's
    ``raw_views`` (used while they still alias ``weight``); ``cflags``: which build of the kernel runs (tests). None
    when the kernel cannot take it."""
    if raw is None or raw[0].data_ptr() != weight.data_ptr():
        if not supports(fmt, weight):
            return None
        raw = None
    if x.device.type != "cpu" or x.dim() != 2:
        return None
    n = weight.shape[0] - row0 if rows is None else rows
    k = x.shape[1]
    if k != (2 * weight.shape[1] if fmt == FP4 else weight.shape[1]):
        raise ValueError(f"x has {k} columns, the {fmt} weight {tuple(weight.shape)} wants another K")
    x = x.float().contiguous()
    m = x.shape[0]
    if m > DECODE_ROWS:
        y = torch.empty(m, n, dtype=torch.float32)
        for t0 in range(0, n, PREFILL_TILE_ROWS):
            t = min(PREFILL_TILE_ROWS, n - t0)
            y[:, t0:t0 + t] = x @ dequant(fmt, weight, scale, block, row0 + t0, t, k, cflags).t()
        return y
    w, s = raw or raw_views(weight, scale)
    y = torch.empty(m, n, dtype=torch.float32)
    if m == 0 or n == 0:
        return y
    lib = _library(cflags)
    if lib is None:
        return None
    done = lib.lowbit_gemm(x.data_ptr(), m, k, w.data_ptr(), 0 if s is None else s.data_ptr(),
                           FORMAT_CODE[fmt], n, block, row0, y.data_ptr(), torch.get_num_threads())
    return y if done == 0 else None
