"""Decode-sized attention bookkeeping in one C call each (``csrc/decode_ops.c``): the lightning indexer's scores
and top-k of one query per sequence, and the grouped ``wo_a`` projection of a few rows.

Why: on decode shapes torch's bf16 ``bmm`` costs ~25 us a call plus ~350 us each time the number of visible
entries grows (a new oneDNN primitive per shape, i.e. every ``ratio`` tokens per CSA layer), and ``index_topk``
is a full stable sort of every row. Each function returns None when the kernel cannot take the call (no C
compiler, a tensor off the CPU or of another dtype, more rows than ``MAX_ROWS``); the fast entries then use
their torch formulation.
"""

from __future__ import annotations

import ctypes
from functools import lru_cache
from pathlib import Path

import torch

from v4stack.ops.fast.kernels import CFLAGS, compile_library, scratch

SOURCE = Path(__file__).with_name("csrc") / "decode_ops.c"
# Rows (decode queries / tokens) up to which the one-pass kernels run: a step of up to 16 streams. Above, prefill
# chunks keep torch's GEMM and sort (compute-bound there; the top-k's insertion is O(N k) per row).
MAX_ROWS = 16


@lru_cache(maxsize=3)
def _library(cflags: tuple[str, ...] = CFLAGS) -> ctypes.CDLL | None:
    """The kernel built with ``cflags`` (default the native build; tests also build the portable ones)."""
    lib = compile_library(SOURCE, cflags, "decode_ops")
    if lib is None:
        return None
    i64, ptr = ctypes.c_int64, ctypes.c_void_p
    lib.decode_index_scores.argtypes = [ptr, ptr, ptr, ptr, i64, i64, i64, i64, ptr]
    lib.index_topk_rows.argtypes = [ptr, ptr, i64, i64, i64, ptr, ptr]
    lib.grouped_output_rows.argtypes = [ptr, ptr, i64, i64, i64, i64, ptr]
    return lib


def _cpu(dtype: torch.dtype, *tensors: torch.Tensor) -> bool:
    for t in tensors:  # a loop, not all() over a generator: this runs on every decode call
        if not t.is_cpu or t.dtype != dtype:
            return False
    return True


def _visible(positions: torch.Tensor, ratio: int, n: int) -> torch.Tensor:
    """[R] int64: entries visible at each position, (p + 1) // ratio, at most n."""
    visible = ((positions + 1) // ratio).clamp_max(n)
    return (visible if visible.dtype == torch.int64 else visible.to(torch.int64)).contiguous()


def decode_index_scores(q: torch.Tensor, weights: torch.Tensor, keys: torch.Tensor, positions: torch.Tensor,
                        ratio: int) -> torch.Tensor | None:
    """``ops.reference.indexer.decode_index_scores``'s contract with the fast torch path's rounding points:
    q [B, H, d], weights [B, H], keys [B, N, d] (bf16), positions [B] -> fp32 [B, N], -inf where hidden."""
    lib = _library()
    if lib is None or not _cpu(torch.bfloat16, q, weights, keys) or q.shape[0] > MAX_ROWS:
        return None
    q, weights, keys = q.contiguous(), weights.contiguous(), keys.contiguous()
    batch, heads, d = q.shape
    n = keys.shape[1]
    visible = _visible(positions.cpu(), ratio, n)
    out = torch.empty(batch, n, dtype=torch.float32)
    lib.decode_index_scores(q.data_ptr(), weights.data_ptr(), keys.data_ptr(), visible.data_ptr(), batch, heads, n,
                            d, out.data_ptr())
    return out


def index_topk(scores: torch.Tensor, topk: int, positions: torch.Tensor, ratio: int) -> torch.Tensor | None:
    """``ops.reference.indexer.index_topk``'s contract, the same indices (descending score, ties to the lower
    entry, -1 past the visible entries): scores [R, N] fp32 -> [R, min(topk, N)] int64."""
    lib = _library()
    rows, n = scores.shape
    k = min(topk, n)
    if lib is None or not _cpu(torch.float32, scores) or rows > MAX_ROWS or k == 0:
        return None
    scores = scores.contiguous()
    visible = _visible(positions.cpu(), ratio, n)
    out = torch.empty(rows, k, dtype=torch.int64)
    lib.index_topk_rows(scores.data_ptr(), visible.data_ptr(), rows, n, k, out.data_ptr(),
                        scratch(k, torch.float32).data_ptr())
    return out


def grouped_output(o: torch.Tensor, weight: torch.Tensor) -> torch.Tensor | None:
    """o [T, H, d] @ the block-diagonal wo_a given as weight [G, r, H/G*d] (bf16) -> [T, G*r] bf16, each output
    one fp32 sum rounded to bf16."""
    lib = _library()
    if lib is None or not _cpu(torch.bfloat16, o, weight) or o.shape[0] > MAX_ROWS:
        return None
    o, weight = o.contiguous(), weight.contiguous()
    groups, rank, width = weight.shape
    t = o.shape[0]
    if o[0].numel() != groups * width:
        return None
    out = torch.empty(t, groups * rank, dtype=torch.bfloat16)
    lib.grouped_output_rows(o.data_ptr(), weight.data_ptr(), t, groups, rank, width, out.data_ptr())
    return out
