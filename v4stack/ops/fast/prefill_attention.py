"""Prefill sparse attention in C (``csrc/prefill_attention.c``): each query scores only the key rows its index list
names, read in place from the key segments, instead of the dense torch form's every-row GEMM plus gather.

Why: on a CSA layer's 2K prompt chunk each query lists its 128 window rows and its top-k (512) compressed entries,
but the dense form (``ops.fast.attention.sliced_attention``) scores all ~2,600 rows of the context for every query
in an fp64 GEMM, then gathers, and scatters the weights back for P.V: ~44-52 % of a real-shape 2K prefill. The
kernel's scores and weights are the C decode kernel's (``kernels.decode_attention_blocked``) per query: exact fp64
q.k rounded to fp32, the official kernel's blocked bf16 weights; P.V sums in double in list order and rounds once to
fp32 (the decode kernel sums in fp32: here the lists are ~640 slots long).

Memory per call: O(H * K + H * d) scratch and the output; nothing grows with the context (the key segments are
read where they lie, as ``ops.key_rows.KeyRows`` promises). Returns None when the kernel cannot take the call (no C
compiler, a tensor off the CPU, another dtype than bf16, more segments than ``MAX_SEGMENTS``); the caller then runs
the torch form.
"""

from __future__ import annotations

import ctypes
from functools import lru_cache
from pathlib import Path

import torch

from v4stack.ops.fast.kernels import CFLAGS, compile_library
from v4stack.ops.key_rows import KeyRows

SOURCE = Path(__file__).with_name("csrc") / "prefill_attention.c"
MAX_SEGMENTS = 8  # window + chunk rows, the pool's cached entries, the fresh entries: 3 in the model
BF16_BYTES = 2
HEAD_BLOCK = 4  # csrc's HEAD_BLOCK: the AVX2 P.V keeps HEAD_BLOCK weights per slot as doubles in the qd scratch


@lru_cache(maxsize=2)
def _library(cflags: tuple[str, ...] = CFLAGS) -> ctypes.CDLL | None:
    """The kernel built with ``cflags`` (default the native build; tests also build the portable AVX2 one)."""
    lib = compile_library(SOURCE, cflags, "prefill_attention")
    if lib is None:
        return None
    i64, ptr = ctypes.c_int64, ctypes.c_void_p
    lib.prefill_sparse_attention.argtypes = [ptr, i64, i64, i64, ptr, ptr, ptr, ptr, i64, ptr, i64, ptr,
                                             ctypes.c_float, ptr, ptr, ptr, ptr]
    return lib


def available() -> bool:
    return _library() is not None


def _segments(kv: torch.Tensor | KeyRows, d: int):
    """kv's segments as (tensor, slots or None) with bf16 CPU rows of d contiguous elements, or None."""
    parts = kv.parts if isinstance(kv, KeyRows) else [(kv, None)]
    out = []
    for t, slots in parts:
        if not t.is_cpu or t.dtype != torch.bfloat16 or t.dim() != 2 or t.shape[1] != d:
            return None
        if t.stride(1) != 1:
            t = t.contiguous()
        if slots is not None:
            if not slots.is_cpu:
                return None
            slots = slots.to(torch.int64).contiguous()
        out.append((t, slots))
    return out if len(out) <= MAX_SEGMENTS else None


def sparse_attention(q: torch.Tensor, kv: torch.Tensor | KeyRows, idx: torch.Tensor, sink: torch.Tensor,
                     scale: float, cflags: tuple[str, ...] = CFLAGS) -> torch.Tensor | None:
    """``ops.reference.attention.sparse_attention`` with ``round_probs``: q [S, H, d] bf16, kv [N, d] (a tensor or
    KeyRows) bf16, idx [S, K] (-1 empty, else < N), sink [H] -> o [S, H, d] bf16; None when the kernel cannot take
    the call. Raises IndexError for an index outside the keys (the kernel would read outside them). ``cflags``:
    which build of the kernel runs."""
    lib = _library(cflags)
    if lib is None or not q.is_cpu or q.dtype != torch.bfloat16 or not idx.is_cpu:
        return None
    s_len, heads, d = q.shape
    segments = _segments(kv, d)
    if segments is None:
        return None
    n, slots = kv.shape[0], idx.shape[1]
    idx = idx.to(torch.int64).contiguous()
    if idx.numel() and int(idx.max()) >= n:
        raise IndexError(f"index {int(idx.max())} outside the {n} key rows")
    sizes = torch.tensor([t.shape[0] if s is None else s.shape[0] for t, s in segments], dtype=torch.int64)
    bases = torch.tensor([t.data_ptr() for t, _ in segments], dtype=torch.int64)
    slot_ptrs = torch.tensor([0 if s is None else s.data_ptr() for _, s in segments], dtype=torch.int64)
    strides = torch.tensor([t.stride(0) for t, _ in segments], dtype=torch.int64)
    q = q.contiguous()
    sink = sink.float().contiguous()
    out = torch.empty_like(q)
    scratch = torch.empty(heads * slots + d, dtype=torch.float32)
    qd = torch.empty(2 * heads * d + HEAD_BLOCK * slots, dtype=torch.float64)  # query, P.V sums, AVX2 weights
    rowp = torch.empty(max(slots, 1), dtype=torch.int64)
    lib.prefill_sparse_attention(q.data_ptr(), s_len, heads, d, bases.data_ptr(), slot_ptrs.data_ptr(),
                                 sizes.data_ptr(), strides.data_ptr(), len(segments), idx.data_ptr(), slots,
                                 sink.data_ptr(), scale, out.data_ptr(), scratch.data_ptr(), qd.data_ptr(),
                                 rowp.data_ptr())
    return out
