"""fp32 GEMMs of the reference numerics in one fixed summation order (the golden machine's), not the BLAS's.

The reference leaves its fp32 GEMMs (mHC mixes, the hc head, the router gate, the fp32 compressor projections,
the output head) to the CPU BLAS, whose summation order depends on the CPU. The golden data were made on an AMD
EPYC (Zen 4) with the MKL inside the torch 2.13 CPU wheel; on an Intel CPU with AVX-512/AMX the same MKL sums in
another order, and the 1-ulp differences grow through Sinkhorn, routing and the bf16/e4m3 roundings of this
random tiny model to 0.1-2.6 in the logits.

Order found for prefill-sized GEMMs (``rows >= BLOCKED_MIN_ROWS``): y[t, n] = sum over K blocks b (in order) of
s_b[t, n], each s_b a sequential fused-multiply-add chain over its k (acc = fma(x[t, k], w[n, k], acc) from 0),
with the block width

* ``HEAD_K_BLOCK`` = 128 for the output head ([*, 256] x [2048, 256]: 256 = two blocks of 128);
* ``WIDE_K_BLOCK`` = 192 for K > 256 (mHC mixes / hc head, K = hc * D = 768 or 1,024: blocks 192, ..., rest);
* one block (plain sequential chain) for the other K = 256 GEMMs (router gate, compressor projections).

How it was established: the K-block structure of one MKL kernel can be read off with cancelling probes
(x = 1 except +2^40 at k = i and -2^40 at k = j: the result counts the terms summed outside the smallest subtree
holding both i and j); under ``MKL_CBWR=AVX2`` the [361, 768] x [15, 768] mixes split K into blocks of 192, and
that order (with the head's 2 x 128 blocks, which reproduce every golden head logit of the first prompt rows
bit for bit from their head inputs) makes one flash_like prefill reproduce the golden prompt logits bit for bit
at positions 0-240 (pro_like: 0-129), against positions 0-2 with the BLAS order on an Intel Xeon.

Order found for GEMMs with few rows (``rows < BLOCKED_MIN_ROWS``: a short prefill, every decode step): the golden
machine used the kernel MKL runs on an Intel CPU under ``MKL_ENABLE_INSTRUCTIONS=SSE4_2`` (with that setting
golden prefixes of 1-5 tokens are bit-identical). Its tree for one output y[t, n] is a ``LaneOrder``
(``small_row_order``): products rounded to fp32 (SSE has no fma: mul, then add), the first ``peel`` of them
summed in order into lane 0, then ``lanes`` sequential lanes (product k into lane (k - peel) mod lanes) over
whole loop steps, the lanes reduced by halving ((l0 + l4) + (l2 + l6)) + ((l1 + l5) + (l3 + l7)), then the
products after the last whole step added in order. By shape:

* one row: ``peel`` = 4; output features n < 4 * (N // 4) take 4 lanes; the N mod 4 left-over features are taken
  in pairs, the first of a pair (and a single last one) with 8 lanes, the second with 4 lanes, both over steps
  of 8 (so K = 256: 252 products in lanes, the last 4 in order);
* 2-7 rows: no peel; rows in pairs (0, 1), (2, 3), ...: the first of a pair with 8 lanes, the second with 4
  lanes, a single last row (odd row counts) with 4 lanes for n < 4 * (N // 4) and 8 for the left-over features;
* N = 1 (a matrix-vector product, not in the models): the rows take the one-row kernel's feature roles.

Read off with the probes above (tests/test_blas_order.py repeats some) for K = 256, 768, 1,024 and N = 3, 4, 6,
8, 15, 24, 128, 2,048, and checked bit for bit against the SSE4.2 kernel on random data for every GEMM shape of
the golden models at 1-7 rows. Rows 6 and 7 are not covered by the golden data: they are assumed to take this
kernel too (the SSE4.2 kernel does; the golden's blocked order starts at 8 or later rows).

The fma is evaluated in fp64 (the fp32 x fp32 product is exact there) and rounded to fp32 after the add: equal
to a true fp32 fma except when the fp64 sum rounds onto an fp32 rounding midpoint (probability ~2^-29 a term).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

# Golden prefills of 1-5 tokens match another (small-matrix) kernel, those of 8, 127, 128, 361 and 390 tokens the
# blocked order; 6 and 7 are not covered by the golden data.
BLOCKED_MIN_ROWS = 8
HEAD_VOCAB_ROWS = 2048  # the head's weight rows in the golden models ([vocab, D]); its GEMM used HEAD_K_BLOCK
HEAD_K_BLOCK = 128
WIDE_K_BLOCK = 192
SINGLE_BLOCK_MAX_K = 256  # K up to this (other than the head): one sequential chain


ONE_ROW_PEEL = 4  # the one-row kernel sums its first 4 products in order before its vector lanes start
VECTOR_LANES = 4  # one SSE register of fp32
PAIR_LANES = 8  # two registers: the first row of a row pair (first left-over feature of one row)
FEATURE_GROUP = 4  # the one-row kernel's full-speed features come in groups of 4; the N mod 4 others differ


@dataclass(frozen=True)
class LaneOrder:
    """The small-row kernel's summation tree of one output over K products (module docstring).

    ``peel`` products summed in order into lane 0; products peel .. stop-1 go to lane (k - peel) % ``lanes`` in
    order, stop = peel + step * ((K - peel) // step); lanes reduced by halving; products stop .. K-1 added after."""

    peel: int
    lanes: int
    step: int


def small_row_order(rows: int, row: int, n_out: int, col: int, k: int) -> LaneOrder:
    """The golden machine's tree for output [row, col] of a [rows, k] x [n_out, k] fp32 GEMM, rows < 8."""
    if not 0 < rows < BLOCKED_MIN_ROWS:
        raise ValueError(f"small_row_order covers 1..{BLOCKED_MIN_ROWS - 1} rows, not {rows}")
    if n_out == 1 and rows > 1:  # a matrix-vector product: the rows take the one-row kernel's feature roles
        return small_row_order(1, 0, rows, row, k)
    first_left_over = FEATURE_GROUP * (n_out // FEATURE_GROUP)
    if rows == 1:
        if col < first_left_over:
            return LaneOrder(ONE_ROW_PEEL, VECTOR_LANES, VECTOR_LANES)
        lanes = PAIR_LANES if (col - first_left_over) % 2 == 0 else VECTOR_LANES
        return LaneOrder(ONE_ROW_PEEL, lanes, PAIR_LANES)
    if row % 2 == 0:
        # first row of a pair; a single last row only for the left-over features
        pair_lanes = row + 1 < rows or col >= first_left_over
        lanes = PAIR_LANES if pair_lanes else VECTOR_LANES
    else:
        lanes = VECTOR_LANES
    return LaneOrder(0, lanes, lanes)


def lane_sum(products: torch.Tensor, order: LaneOrder) -> torch.Tensor:
    """products [..., K] fp32 (already rounded) -> [...] fp32 summed in ``order``'s tree."""
    k = products.shape[-1]
    stop = order.peel + order.step * ((k - order.peel) // order.step)
    acc = _peeled_lanes(products, order.peel, order.lanes)
    for start in range(order.peel, stop, order.lanes):
        acc = acc + products[..., start:start + order.lanes]
    out = _halve(acc)
    for i in range(stop, k):
        out = out + products[..., i]
    return out


def _peeled_lanes(products: torch.Tensor, peel: int, lanes: int) -> torch.Tensor:
    """products [..., K] -> the lane accumulators [..., lanes] before the loop: lane 0 holds the first ``peel``
    products summed in order, the others 0."""
    acc = products.new_zeros(*products.shape[:-1], lanes)
    if peel:
        head = products[..., 0]
        for i in range(1, peel):
            head = head + products[..., i]
        acc[..., 0] = head
    return acc


def _halve(acc: torch.Tensor) -> torch.Tensor:
    """Lanes [..., L] (L a power of two) -> [...]: pairwise halving, lane i + L/2 added onto lane i, until one."""
    while acc.shape[-1] > 1:
        half = acc.shape[-1] // 2
        acc = acc[..., :half] + acc[..., half:]
    return acc[..., 0]


def _small_row_groups(rows: int, n_out: int, k: int):
    """(row indices, column slice, LaneOrder) covering the output once: ``small_row_order`` evaluated on blocks
    where it is constant (the full feature groups, then each left-over feature)."""
    first_left_over = FEATURE_GROUP * (n_out // FEATURE_GROUP)
    col_blocks = [slice(0, first_left_over)] if first_left_over else []
    col_blocks += [slice(c, c + 1) for c in range(first_left_over, n_out)]
    groups = []
    for cols in col_blocks:
        by_order: dict[LaneOrder, list[int]] = {}
        for r in range(rows):
            by_order.setdefault(small_row_order(rows, r, n_out, cols.start, k), []).append(r)
        groups += [(r, cols, order) for order, r in by_order.items()]
    return groups


@dataclass(frozen=True)
class _MergedPlan:
    """Every output's ``LaneOrder`` of one (rows, n_out, k) shape laid out for one common loop: lane_index
    [M, N, steps * lanes] and tail_index [M, N, tail] point into the products with index k = an appended zero
    (4-lane orders fill lanes 0-3 of an 8-lane layout, shorter chains are padded: adding +0 changes no sum, and
    halving 8 lanes whose upper 4 are zero gives the 4-lane reduction)."""

    peel: int
    lanes: int
    steps: int
    lane_index: torch.Tensor
    tail_index: torch.Tensor


@functools.lru_cache(maxsize=32)
def _merged_plan(rows: int, n_out: int, k: int) -> _MergedPlan:
    groups = _small_row_groups(rows, n_out, k)
    peels = {order.peel for _, _, order in groups}
    if len(peels) != 1:
        raise AssertionError(f"mixed peels {peels} in one GEMM")  # not a shape the kernel has
    peel = peels.pop()
    stops = {order: order.peel + order.step * ((k - order.peel) // order.step) for _, _, order in groups}
    lanes = max(order.lanes for _, _, order in groups)
    steps = max((stops[order] - peel) // order.lanes for _, _, order in groups)
    tail = max(k - stop for stop in stops.values())
    lane_index = torch.full((rows, n_out, steps, lanes), k, dtype=torch.long)
    tail_index = torch.full((rows, n_out, tail), k, dtype=torch.long)
    for r, cols, order in groups:
        stop = stops[order]
        chain = torch.arange(peel, stop).view(-1, order.lanes)  # [its steps, its lanes]
        lane_index[r, cols, :chain.shape[0], :order.lanes] = chain
        tail_index[r, cols, :k - stop] = torch.arange(stop, k)
    return _MergedPlan(peel, lanes, steps, lane_index.flatten(2), tail_index)


MERGE_MAX_PRODUCTS = 1 << 17  # above this many products the merged plan's gather costs more than its loop saves


def small_rows_linear(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """x [M, K] fp32 (M < 8), w [N, K] fp32 -> fp32 [M, N] in the small-row kernel's order (``small_row_order``).

    Every output is its ``lane_sum``; small GEMMs with several orders (mHC mixes, hc head, router) run all of them
    in one loop (``_merged_rows_linear``), large ones (the head) one loop per group of equal orders."""
    groups = _small_row_groups(x.shape[0], w.shape[0], x.shape[1])
    if len(groups) > 1 and x.shape[0] * w.shape[0] * x.shape[1] <= MERGE_MAX_PRODUCTS:
        return _merged_rows_linear(x, w)
    return _grouped_rows_linear(x, w, groups)


def _grouped_rows_linear(x: torch.Tensor, w: torch.Tensor, groups) -> torch.Tensor:
    out = torch.empty(x.shape[0], w.shape[0], dtype=torch.float32, device=x.device)
    for rows, cols, order in groups:
        products = x[rows, None, :] * w[None, cols, :]  # [m, n, K], each product rounded to fp32
        out[rows, cols] = lane_sum(products, order)  # rows: an index list (advanced indexing writes through)
    return out


def _merged_rows_linear(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``small_rows_linear`` with all outputs in one loop over the longest lane chain (``_MergedPlan``)."""
    m, k = x.shape
    n = w.shape[0]
    plan = _merged_plan(m, n, k)
    products = x[:, None, :] * w[None, :, :]  # [M, N, K], each product rounded to fp32 (mul, then add: no fma)
    padded = torch.cat([products, products.new_zeros(m, n, 1)], dim=-1)  # index k: the +0 padding
    chains = padded.gather(2, plan.lane_index.to(x.device)).view(m, n, plan.steps, plan.lanes)
    chains = chains.permute(2, 0, 1, 3).contiguous()  # [steps, M, N, lanes]: one contiguous slice per loop step
    acc = _peeled_lanes(products, plan.peel, plan.lanes)
    for t in range(plan.steps):
        acc = acc + chains[t]
    out = _halve(acc)
    tails = padded.gather(2, plan.tail_index.to(x.device))  # [M, N, tail]
    for i in range(tails.shape[-1]):
        out = out + tails[..., i]
    return out


def k_block(n_out: int, k: int) -> int:
    """The K-block width of the golden order for a GEMM with ``n_out`` output features and depth ``k``."""
    if n_out == HEAD_VOCAB_ROWS and k == 2 * HEAD_K_BLOCK:
        return HEAD_K_BLOCK
    return k if k <= SINGLE_BLOCK_MAX_K else WIDE_K_BLOCK


def blocked_fma_linear(x: torch.Tensor, w: torch.Tensor, block: int) -> torch.Tensor:
    """x [M, K] fp32, w [N, K] fp32 -> fp32 [M, N]: sum of per-block sequential fma chains (module docstring)."""
    xd, wd = x.double(), w.double()
    out = None
    for start in range(0, x.shape[1], block):
        acc = torch.zeros(x.shape[0], w.shape[0], dtype=torch.float32, device=x.device)
        for k in range(start, min(start + block, x.shape[1])):
            acc = (acc.double() + xd[:, k, None] * wd[None, :, k]).float()
        out = acc if out is None else out + acc
    return out


def linear_fp32(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """F.linear(x, w) for fp32 x [..., K] and w [N, K] in the golden machine's order: the small-row kernel's
    below ``BLOCKED_MIN_ROWS`` rows, the blocked fma order from there."""
    if x.dtype != torch.float32 or w.dtype != torch.float32:
        raise TypeError(f"linear_fp32 takes fp32 tensors, got {x.dtype} and {w.dtype}")
    flat = x.reshape(-1, x.shape[-1])
    if flat.shape[0] == 0:
        return torch.nn.functional.linear(x, w)
    if flat.shape[0] < BLOCKED_MIN_ROWS:
        out = small_rows_linear(flat, w)
    else:
        out = blocked_fma_linear(flat, w, k_block(w.shape[0], w.shape[1]))
    return out.reshape(*x.shape[:-1], w.shape[0])
