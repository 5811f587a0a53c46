"""The small C kernels of ``csrc/fast_kernels.c``, compiled on first use into the user's cache
(``$XDG_CACHE_HOME/v4stack/kernels``, default ``~/.cache``) and called through ctypes on contiguous CPU tensors.

When no C compiler is present (or compilation fails, or the tensors are not on the CPU) ``available()`` is False and
the callers use their torch formulation; nothing else changes. ``V4STACK_NO_C_KERNELS=1`` forces that fallback.
"""

from __future__ import annotations

import ctypes
import hashlib
import math
import os
import shutil
import subprocess
import tempfile
import threading
from functools import lru_cache
from pathlib import Path

import torch

SOURCE = Path(__file__).with_name("csrc") / "fast_kernels.c"
CFLAGS = ("-O3", "-march=native", "-shared", "-fPIC", "-std=c11")
MAX_ACT_BLOCK = 1024  # the C act_quant's per-block buffer
MAX_HC = 16
MAX_HADAMARD = 4096  # csrc's MAX_HADAMARD: the largest rotation the C pass takes


def _cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "v4stack" / "kernels"


def compile_library(source_path: Path, cflags: tuple[str, ...], stem: str) -> ctypes.CDLL | None:
    """``source_path`` compiled with ``cflags`` into the cache (keyed by source and flags) and loaded, or None when
    no C compiler is present, compilation fails, or ``V4STACK_NO_C_KERNELS=1``."""
    if os.environ.get("V4STACK_NO_C_KERNELS") == "1":
        return None
    compiler = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
    if compiler is None:
        return None
    # every C file and header beside the source enters the key: a source may #include its siblings
    siblings = sorted([*source_path.parent.glob("*.c"), *source_path.parent.glob("*.h")])
    source = b"".join(p.read_bytes() for p in [source_path, *siblings])
    tag = hashlib.sha256(source + " ".join(cflags).encode()).hexdigest()[:16]
    target = _cache_dir() / f"{stem}_{tag}.so"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
            built = Path(tmp) / target.name
            done = subprocess.run([compiler, *cflags, str(source_path), "-o", str(built), "-lm"], capture_output=True)
            if done.returncode != 0:
                return None
            os.replace(built, target)  # atomic: concurrent processes never load a half-written file
    try:
        return ctypes.CDLL(str(target))
    except OSError:
        return None


@lru_cache(maxsize=3)
def _library(cflags: tuple[str, ...] = CFLAGS) -> ctypes.CDLL | None:
    """The kernels built with ``cflags`` (default the native build; tests also build the portable AVX2 and the
    plain x86-64 ones and compare their bits)."""
    lib = compile_library(SOURCE, cflags, "fast_kernels")
    if lib is None:
        return None
    i64, ptr = ctypes.c_int64, ctypes.c_void_p
    lib.act_quant.argtypes = [ptr, ptr, i64, i64, i64, ctypes.c_int]
    lib.hadamard_rows.argtypes = [ptr, ptr, i64, i64, ctypes.c_float, ctypes.c_int]
    lib.fp4_quant.argtypes = [ptr, ptr, i64, i64, i64, ctypes.c_int]
    lib.rope_apply.argtypes = [ptr, ptr, ptr, i64, i64, i64, i64, ctypes.c_int, ctypes.c_int]
    lib.hc_collapse.argtypes = [ptr, ptr, ptr, i64, i64, i64, ctypes.c_int]
    lib.hc_post_apply.argtypes = [ptr, ptr, ptr, ptr, ptr, i64, i64, i64, ctypes.c_int, ptr]
    lib.hc_split_prepare.argtypes = [ptr, ptr, ptr, i64, i64, ptr, ptr, ptr]
    lib.hc_split_finish.argtypes = [ptr, ptr, i64, ctypes.c_float]
    lib.hc_sinkhorn_normalise.argtypes = [ptr, i64, i64, i64, ctypes.c_float]
    lib.decode_attention_blocked.argtypes = [ptr, ptr, ptr, ptr, ctypes.c_float, i64, i64, i64, i64, ptr, ptr,
                                             ptr]
    lib.decode_attention_pooled.argtypes = [ptr, ptr, ptr, i64, ptr, ptr, i64, ptr, ptr, ctypes.c_float, i64, i64,
                                            i64, ptr, ptr, ptr]
    return lib


def available() -> bool:
    return _library() is not None


class _Scratch(threading.local):
    """Each thread's work buffers, one per dtype (see ``scratch``)."""

    def __init__(self) -> None:
        self.buffers: dict[torch.dtype, torch.Tensor] = {}


_SCRATCH = _Scratch()


def scratch(numel: int, dtype: torch.dtype) -> torch.Tensor:
    """A work buffer of at least ``numel`` elements of ``dtype`` for one C call, its contents undefined (as
    torch.empty's): one per thread and dtype, grown when a call needs more, so a decode step does not allocate one
    per call (~1.2 us each). Only for buffers the kernel writes before it reads them and that no caller keeps (a
    second call of the thread reuses them)."""
    held = _SCRATCH.buffers.get(dtype)
    if held is None or held.numel() < numel:
        held = _SCRATCH.buffers[dtype] = torch.empty(numel, dtype=dtype)
    return held


def act_quant(x: torch.Tensor, block: int) -> torch.Tensor | None:
    """FP8 quant-dequant of x [..., K] (bf16 or fp32, CPU) in blocks of ``block`` -> bf16, or None when the kernel
    cannot take it (the caller falls back to torch)."""
    lib = _library()
    k = x.shape[-1]
    if (lib is None or not x.is_cpu or x.dtype not in (torch.bfloat16, torch.float32) or k % block
            or block > MAX_ACT_BLOCK):
        return None
    x = x.contiguous()
    out = torch.empty(x.shape, dtype=torch.bfloat16)
    lib.act_quant(x.data_ptr(), out.data_ptr(), x.numel() // k, k, block, int(x.dtype == torch.bfloat16))
    return out


def hadamard_rotate(x: torch.Tensor) -> torch.Tensor | None:
    """``ops.reference.hadamard.hadamard_rotate`` of x [..., n] (bf16 or fp32, CPU, n a power of two up to
    ``MAX_HADAMARD``) by butterflies in fp64, or None when the kernel cannot take it."""
    lib = _library()
    n = x.shape[-1]
    if (lib is None or not x.is_cpu or x.dtype not in (torch.bfloat16, torch.float32) or n < 1
            or n & (n - 1) or n > MAX_HADAMARD or x.requires_grad):
        return None
    x = x.contiguous()
    out = torch.empty_like(x)
    lib.hadamard_rows(x.data_ptr(), out.data_ptr(), x.numel() // n, n, math.sqrt(1.0 / n),
                      int(x.dtype == torch.bfloat16))
    return out


def fp4_quant(x: torch.Tensor, block: int) -> torch.Tensor | None:
    """FP4 e2m1 quant-dequant of x [..., K] (bf16 or fp32, CPU) in blocks of ``block`` -> fp32 (the reference's
    ``quant_dequant_fp4``), or None when the kernel cannot take it."""
    lib = _library()
    k = x.shape[-1]
    if lib is None or not x.is_cpu or x.dtype not in (torch.bfloat16, torch.float32) or k % block:
        return None
    x = x.contiguous()
    out = torch.empty(x.shape, dtype=torch.float32)
    lib.fp4_quant(x.data_ptr(), out.data_ptr(), x.numel() // k, k, block, int(x.dtype == torch.bfloat16))
    return out


def hc_split(mixes: torch.Tensor, scale: torch.Tensor, base: torch.Tensor, hc: int, iters: int,
             eps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """``ops.reference.mixing.hc_split_sinkhorn`` bit-identically: the affine parts, the +eps / x2 and the Sinkhorn
    normalisations in C, torch's sigmoid and exp on fresh contiguous [T, hc] / [T, hc, hc] tensors as in the
    reference (torch may round a transcendental differently on another layout); None when the kernel cannot take
    it."""
    lib = _library()
    if (lib is None or hc > MAX_HC or any(not t.is_cpu or t.dtype != torch.float32
                                          for t in (mixes, scale, base))):
        return None
    mixes, scale, base = mixes.contiguous(), scale.contiguous(), base.contiguous()
    t = mixes.shape[0]
    z = torch.empty(t * hc * (2 + hc), dtype=torch.float32)
    zpre, zpost, zcomb = z[:t * hc].view(t, hc), z[t * hc:2 * t * hc].view(t, hc), z[2 * t * hc:].view(t, hc, hc)
    lib.hc_split_prepare(mixes.data_ptr(), scale.data_ptr(), base.data_ptr(), t, hc, zpre.data_ptr(),
                         zpost.data_ptr(), zcomb.data_ptr())
    pre, post, comb = torch.sigmoid(zpre), torch.sigmoid(zpost), torch.exp(zcomb)
    lib.hc_split_finish(pre.data_ptr(), post.data_ptr(), t * hc, eps)
    lib.hc_sinkhorn_normalise(comb.data_ptr(), t, hc, iters, eps)
    return pre, post, comb


def decode_attention_blocked(q: torch.Tensor, keys: torch.Tensor, valid: torch.Tensor, sink: torch.Tensor,
                             scale: float) -> torch.Tensor | None:
    """``ops.fast.attention.decode_attention`` with ``round_probs`` in one C call: q [B, H, d] bf16, keys [B, K, d]
    bf16, valid [B, K] bool, sink [H] -> o [B, H, d] bf16; None when the kernel cannot take it."""
    lib = _library()
    if (lib is None or not q.is_cpu or not keys.is_cpu or q.dtype != torch.bfloat16
            or keys.dtype != torch.bfloat16):
        return None
    q, keys = q.contiguous(), keys.contiguous()
    valid = valid.contiguous().view(torch.uint8)
    sink = sink.float().contiguous()
    batch, heads, d = q.shape
    slots = keys.shape[1]
    out = torch.empty_like(q)
    work = scratch(heads * (slots + d) + d, torch.float32)
    qd = scratch(heads * d + 2 * slots, torch.float64)  # q as doubles, then the valid rows' index
    lib.decode_attention_blocked(q.data_ptr(), keys.data_ptr(), valid.data_ptr(), sink.data_ptr(), scale, batch,
                                 heads, slots, d, out.data_ptr(), work.data_ptr(), qd.data_ptr())
    return out


POOLED_MAX_PARTS = 2  # window rows + compressed entries: the kernel's row lookup takes two pools


def decode_attention_pooled(q: torch.Tensor, parts: list[tuple[torch.Tensor, torch.Tensor]], valid: torch.Tensor,
                            sink: torch.Tensor, scale: float) -> torch.Tensor | None:
    """``decode_attention_blocked`` with the keys read in place: parts (1 or 2) of (pool [P, d] bf16, slots [B, n]
    int64), valid [B, sum n] -> o [B, H, d] bf16; None when the kernel cannot take it. Slots must name rows of
    their pool wherever valid is True (the kernel reads no other row)."""
    lib = _library()
    if lib is None or not q.is_cpu or q.dtype != torch.bfloat16 or not 1 <= len(parts) <= POOLED_MAX_PARTS:
        return None
    batch, heads, d = q.shape
    flat = []
    for pool, slots in parts:
        if (pool.dtype != torch.bfloat16 or not pool.is_cpu or pool.dim() != 2 or pool.shape[1] != d
                or slots.shape[0] != batch or not slots.is_cpu):
            return None
        flat.append((pool.contiguous(), (slots if slots.dtype == torch.int64 else slots.to(torch.int64)).contiguous()))
    (p0, s0), (p1, s1) = flat if len(flat) == 2 else (flat[0], flat[0])  # one part: the second is read 0 wide
    n1 = s1.shape[1] if len(flat) == 2 else 0
    q = q.contiguous()
    valid = valid.contiguous()  # bool: one byte per slot, what the kernel's uint8 mask reads
    if valid.dtype != torch.bool:
        return None
    sink = (sink if sink.dtype == torch.float32 else sink.float()).contiguous()
    slots_total = s0.shape[1] + n1
    out = torch.empty_like(q)
    work = scratch(heads * (slots_total + d) + d, torch.float32)
    qd = scratch(heads * d + 2 * slots_total, torch.float64)  # q as doubles, then the valid rows' index
    lib.decode_attention_pooled(q.data_ptr(), p0.data_ptr(), s0.data_ptr(), s0.shape[1], p1.data_ptr(),
                                s1.data_ptr(), n1, valid.data_ptr(), sink.data_ptr(), scale, batch, heads, d,
                                out.data_ptr(), work.data_ptr(), qd.data_ptr())
    return out


_FLOATS = (torch.bfloat16, torch.float32)  # the activation dtypes the elementwise kernels read and write


def _cpu_floats(*tensors: torch.Tensor) -> bool:
    for t in tensors:  # a loop, not all() over a generator: this runs on every decode call
        if not t.is_cpu or t.dtype not in _FLOATS:
            return False
    return True


def rope_apply(x: torch.Tensor, pairs: torch.Tensor, inverse: bool) -> torch.Tensor | None:
    """``ops.reference.rope.rope`` on x [N, ..., D] (bf16 or fp32) with the phases as pairs [N, d/2, 2] fp32
    (cos, sin; ``Rotary.phase_pairs``) -> a rotated copy, bit-identical; None when the kernel cannot take it."""
    lib = _library()
    if (lib is None or not _cpu_floats(x) or pairs.dtype != torch.float32 or not pairs.is_cpu
            or not pairs.is_contiguous()):
        return None
    x = x.contiguous()
    n, d = x.shape[0], 2 * pairs.shape[-2]
    out = torch.empty_like(x)
    inner = x.numel() // (n * x.shape[-1]) if n else 0
    lib.rope_apply(x.data_ptr(), out.data_ptr(), pairs.data_ptr(), n, inner, x.shape[-1], d, int(inverse),
                   int(x.dtype == torch.bfloat16))
    return out


def hc_collapse(x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor | None:
    """``ops.reference.mixing.hc_collapse``: x [T, hc, D], weights [T, hc] fp32 -> fp32 [T, D], bit-identical."""
    lib = _library()
    if lib is None or not _cpu_floats(x) or weights.dtype != torch.float32 or not weights.is_cpu:
        return None
    x, weights = x.contiguous(), weights.contiguous()
    t, hc, d = x.shape
    out = torch.empty(t, d, dtype=torch.float32)
    lib.hc_collapse(x.data_ptr(), weights.data_ptr(), out.data_ptr(), t, hc, d, int(x.dtype == torch.bfloat16))
    return out


def hc_post(out: torch.Tensor, residual: torch.Tensor, post: torch.Tensor, comb: torch.Tensor) -> torch.Tensor | None:
    """``ops.reference.mixing.hc_post``: out [T, D], residual [T, hc, D] (one dtype), post [T, hc], comb [T, hc, hc]
    fp32 -> new streams [T, hc, D] in out.dtype, bit-identical."""
    lib = _library()
    if (lib is None or not _cpu_floats(out, residual) or out.dtype != residual.dtype
            or post.dtype != torch.float32 or comb.dtype != torch.float32 or not post.is_cpu):
        return None
    out, residual, post, comb = out.contiguous(), residual.contiguous(), post.contiguous(), comb.contiguous()
    t, hc, d = residual.shape
    streams = torch.empty_like(residual)
    work = scratch(d, torch.float32)
    lib.hc_post_apply(out.data_ptr(), residual.data_ptr(), post.data_ptr(), comb.data_ptr(), streams.data_ptr(), t,
                      hc, d, int(out.dtype == torch.bfloat16), work.data_ptr())
    return streams
