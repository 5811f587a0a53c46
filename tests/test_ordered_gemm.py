"""ops.fast.ordered_gemm (csrc/ordered_gemm.c): the fast table's fp32 GEMMs in blas_order's summation order,
bit-identical to blas_order's pure-torch functions, and the fast entries that the reference routes through
blas_order really going through it."""

import pytest
import torch

from v4stack.config.numerics import Numerics
from v4stack.ops.fast import fast_ops, ordered_gemm
from v4stack.ops.fast import moe as fast_moe
from v4stack.ops.fast.linear import head_ordered_min_rows
from v4stack.ops.reference import blas_order, layers, moe
from v4stack.ops.reference.blas_order import BLOCKED_MIN_ROWS, k_block

pytestmark = pytest.mark.skipif(not ordered_gemm.available(), reason="no C compiler")

# (N, K) of every fp32 GEMM class of the golden models and the order's block rules: mHC mixes and hc heads
# (K = hc * D > 256: blocks of 192, 1,024 = 5 x 192 + 64), router gate / compressor projections (one chain), the
# head (two blocks of 128), and K / N that fit no block or vector width (tails of both)
ROUTE_RTOL = 8 * 2 ** -24  # the one-call route's sqrtsoftplus weights: 8 fp32 ulps (tests/test_route_kernel.py)
SHAPES = [(15, 768), (24, 1024), (3, 768), (4, 1024), (8, 256), (256, 256), (2048, 256), (33, 300), (1, 257),
          (17, 450), (40, 7)]
ROWS = list(range(1, 10)) + [13, 97]  # every row count of a micro-tile remainder, and more than one tile


def _data(m: int, n: int, k: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    scale = torch.logspace(-3, 3, k)  # mixed magnitudes: the order of the sum matters in the last bits
    return torch.randn(m, k, generator=g) * scale, torch.randn(n, k, generator=g)


@pytest.mark.parametrize("n,k", SHAPES)
def test_kernel_equals_blas_order_bit_for_bit(n, k):
    for m in ROWS:
        x, w = _data(m, n, k, seed=m * 1000 + n + k)
        block = k_block(n, k)
        want = blas_order.blocked_fma_linear(x, w, block)
        assert torch.equal(ordered_gemm.blocked_fma_linear(x, w, block), want), (m, n, k)
        # a bf16 weight is read as its exact fp32 value
        wb = w.bfloat16()
        assert torch.equal(ordered_gemm.blocked_fma_linear(x, wb, block),
                           blas_order.blocked_fma_linear(x, wb.float(), block)), (m, n, k, "bf16")


def test_other_block_widths_and_one_chain():
    x, w = _data(11, 19, 333, seed=5)
    for block in (1, 5, 64, 100, 333, 10_000):  # the last: wider than K, one chain
        assert torch.equal(ordered_gemm.blocked_fma_linear(x, w, block),
                           blas_order.blocked_fma_linear(x, w, min(block, 333))), block


def test_cancelling_probe_reads_the_block_tree():
    # +2^40 and -2^40 cancel where they meet; the ones summed before that are absorbed (tests/test_blas_order.py)
    big, k = 2.0 ** 40, 768
    x = torch.ones(BLOCKED_MIN_ROWS, k)
    x[:, 0], x[:, 200] = big, -big
    y = ordered_gemm.blocked_fma_linear(x, torch.ones(40, k), 192)
    assert (y == k - 384).all()  # blocks 0 and 1 meet when their sums are added


def test_one_rounding_per_term():
    x = torch.tensor([[1.0, 1.0 + 2.0 ** -12]]).repeat(BLOCKED_MIN_ROWS, 1)
    w = torch.tensor([[-1.0, 1.0 + 2.0 ** -12]])
    y = ordered_gemm.blocked_fma_linear(x, w, 2)
    assert (y == 2.0 ** -11 + 2.0 ** -24).all()  # an fma, not round(product) + add (2^-11)


def test_result_does_not_depend_on_the_thread_count():
    x, w = _data(400, 300, 256, seed=9)  # above the kernel's one-thread size: several work items per thread
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = ordered_gemm.blocked_fma_linear(x, w, 256)
        torch.set_num_threads(2)
        two = ordered_gemm.blocked_fma_linear(x, w, 256)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(one, two) and torch.equal(one, blas_order.blocked_fma_linear(x, w, 256))


def test_small_row_result_does_not_depend_on_the_thread_count():
    # above the kernel's one-thread size (2^22 products): the feature blocks are shared out over an OpenMP team by
    # an orphaned worksharing loop; one thread skips the region. 1 row (the AVX2 bf16 kernel) and 5 rows (converted
    # blocks, 8 and 4 lanes)
    for m, dtype in ((1, torch.bfloat16), (1, torch.float32), (5, torch.bfloat16)):
        x, w = _data(m, 8192 // m, 520, seed=m)
        w = w.to(dtype)
        before = torch.get_num_threads()
        try:
            torch.set_num_threads(1)
            one = ordered_gemm.small_rows_linear(x, w)
            torch.set_num_threads(2)
            two = ordered_gemm.small_rows_linear(x, w)
        finally:
            torch.set_num_threads(before)
        assert torch.equal(one, two) and torch.equal(one, blas_order.small_rows_linear(x, w.float())), (m, dtype)


# (N, K) of the small-row kernel's classes: N mod 4 = 0..3 left-over features (each with its own lanes), N = 1
# (the roles swap), the golden GEMMs, and a K that is not a multiple of 8 (the in-order tails)
SMALL_SHAPES = [(15, 768), (24, 1024), (3, 768), (4, 1024), (8, 256), (2048, 256), (6, 256), (1, 256), (33, 304),
                (17, 456), (2, 64), (7, 100)]


@pytest.mark.parametrize("n,k", SMALL_SHAPES)
def test_small_row_kernel_equals_blas_order_bit_for_bit(n, k):
    for m in range(1, BLOCKED_MIN_ROWS):
        x, w = _data(m, n, k, seed=m * 100 + n + k)
        want = blas_order.small_rows_linear(x, w)
        assert torch.equal(ordered_gemm.small_rows_linear(x, w), want), (m, n, k)
        wb = w.bfloat16()
        assert torch.equal(ordered_gemm.small_rows_linear(x, wb), blas_order.small_rows_linear(x, wb.float())), (
            m, n, k, "bf16")


def test_small_row_kernel_takes_the_lane_tree():
    # one row, N = 8: the 4 products k < 4 peeled into lane 0, then 4 lanes (k - 4) mod 4. +BIG at k = 4 (lane 0)
    # and -BIG at k = 6 (lane 2) absorb their lanes (the peel too) and cancel at the halving (l0 + l2); what is
    # left is lanes 1 and 3: 2 x 63 ones
    big, k = 2.0 ** 40, 256
    x = torch.ones(1, k)
    x[0, 4], x[0, 6] = big, -big
    y = ordered_gemm.small_rows_linear(x, torch.ones(8, k))
    assert (y == 2 * ((k - 4) // 4)).all()


def test_linear_takes_every_row_count():
    w = torch.randn(15, 768)
    x = torch.randn(BLOCKED_MIN_ROWS // 2, 2, 768)  # 8 rows in two leading dims
    assert torch.equal(ordered_gemm.linear(x, w), blas_order.linear_fp32(x, w))
    for m in (1, 2, BLOCKED_MIN_ROWS - 1, BLOCKED_MIN_ROWS, 50):
        xm = torch.randn(m, 768)
        assert torch.equal(ordered_gemm.linear_fp32(xm, w), blas_order.linear_fp32(xm, w)), m
    assert ordered_gemm.linear(torch.randn(0, 768), w) is None  # no rows: the caller's own path
    with pytest.raises(TypeError, match="fp32"):
        ordered_gemm.linear_fp32(x.bfloat16(), w)
    assert ordered_gemm.blocked_fma_linear(x.reshape(-1, 768).double(), w, 192) is None  # not its dtype


@pytest.mark.parametrize("rows", [1, 5, BLOCKED_MIN_ROWS, 16, 17, 40])
def test_fast_entries_route_their_fp32_gemms_through_the_order(rows):
    """On the golden flash_like model (D = 256: K = 256 GEMMs that this machine's BLAS may sum in another order;
    the tiny test checkpoint's K = 128 ones it sums like blas_order): head, router, compressor projections."""
    from tests.conftest import golden_case
    from v4stack.modelio.loader import load_model

    assert fast_ops().fp32_linear is ordered_gemm.linear_fp32  # mHC mixes and hc heads
    model = load_model(golden_case("flash_like"), Numerics.fast_kernels(), progress=False)
    ops = model.compute.ops
    g = torch.Generator().manual_seed(rows)
    x = torch.randn(rows, model.cfg.hidden_size, generator=g).bfloat16()
    ids = torch.randint(0, model.cfg.vocab_size, (rows,), generator=g)
    # output head: the bf16 weight read by the ordered kernel = the reference's ordered fp32 GEMM from 8 rows;
    # decode-sized calls take the direct kernel (faster there, ops.fast.linear.head_ordered_min_rows): fp32 sums
    # of another order
    head, want = ops.lm_head(model.head, x), layers.lm_head(model.head, x)
    if rows >= head_ordered_min_rows():
        assert torch.equal(head, want)
    else:
        torch.testing.assert_close(head, want, rtol=1e-5, atol=1e-5)
    gates = [m for m in model.modules() if hasattr(m, "route_scale") and hasattr(m, "weight")]
    compressors = [m for m in model.modules() if hasattr(m, "wkv") and hasattr(m, "wgate")]
    assert gates and compressors
    for gate in gates:
        # router: from the ordered GEMM's logits the torch path gives the reference's weights and experts exactly;
        # the entry (one C call for decode-sized rows) the same experts, its weights within a few fp32 ulps
        logits = ordered_gemm.linear_fp32(x.float(), gate.prepared)
        for a, b in zip(fast_moe.route_from_logits(gate, logits, ids), moe.route(gate, x, ids)):
            assert torch.equal(a, b)
        (w, e), (w_ref, e_ref) = ops.route(gate, x, ids), moe.route(gate, x, ids)
        assert torch.equal(e, e_ref)
        torch.testing.assert_close(w, w_ref, rtol=ROUTE_RTOL, atol=0)
    for comp in compressors:  # fp32 compressor projections
        for lin in (comp.wkv, comp.wgate):
            assert torch.equal(ops.linear(lin, x), layers.linear(lin, x))
