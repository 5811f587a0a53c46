"""The one-call mHC pre / head of decode-sized batches (ops.fast.mhc_fused) against the reference entries.

The fused call computes the mixes GEMM in the fast table's order (bit-identical raw mixes), but the mean of squares
and the sigmoid / exp round on their own (libm expf, a double sum), so its post / comb agree with the reference to
a few fp32 ulps and the collapsed sublayer input to a bf16 rounding on a few elements; a wrong split, Sinkhorn
order or collapse would move them by orders of magnitude more."""

import pytest
import torch

from v4stack.model.mhc import HcShape
from v4stack.ops.fast import fast_ops, kernels, mhc_fused
from v4stack.ops.reference import mixing

FP32_ULPS = dict(atol=1e-6, rtol=1e-5)  # post in (0, 2), comb in (0, 1): a few fp32 ulps of the reference
BF16_ULP = 2 ** -7  # relative size of one bf16 ulp (8 significant bits)
MIN_EQUAL_SHARE = 0.99  # collapsed elements bit-identical to the reference's (the rest one bf16 rounding apart)
SHAPES = [(HcShape(4, 20, 1e-6, 1e-6), 64), (HcShape(3, 10, 1e-6, 1e-6), 256)]  # demo / flash_like-like mHC


def _site(hc: int, d: int, head: bool, g: torch.Generator):
    n = hc if head else (2 + hc) * hc
    fn = torch.randn(n, hc * d, generator=g) * 0.05
    scale = torch.rand(1 if head else 3, generator=g) + 0.5
    base = torch.randn(n, generator=g) * 0.3
    return fn, scale, base


def _close_bf16(got: torch.Tensor, want: torch.Tensor) -> None:
    assert got.dtype == want.dtype and got.shape == want.shape
    d = (got.float() - want.float()).abs()
    assert (d <= want.float().abs() * BF16_ULP + 1e-30).all(), d.max()
    assert (got == want).float().mean() >= MIN_EQUAL_SHARE


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("rows", [1, 2, 5, 7, 8, 16, 64])
def test_fused_hc_pre_matches_the_reference(dtype, rows):
    assert mhc_fused.available()
    ops = fast_ops()
    g = torch.Generator().manual_seed(rows)
    for shape, d in SHAPES:
        x = (torch.randn(rows, shape.hc, d, generator=g) * 3).to(dtype)
        fn, scale, base = _site(shape.hc, d, False, g)
        got = mhc_fused.hc_pre(x, fn, scale, base, shape)
        assert got is not None  # really the C call
        want = mixing.hc_pre(x, fn, scale, base, shape, ops)
        y, post, comb = got
        if dtype == torch.bfloat16:
            _close_bf16(y, want[0])
        else:
            torch.testing.assert_close(y, want[0], **FP32_ULPS)
        torch.testing.assert_close(post, want[1], **FP32_ULPS)
        torch.testing.assert_close(comb, want[2], **FP32_ULPS)
        assert torch.allclose(comb.sum(-2), torch.ones(rows, shape.hc), atol=1e-4)  # columns normalised last


@pytest.mark.parametrize("rows", [1, 3, 8, 16])
def test_fused_hc_head_matches_the_reference(rows):
    ops = fast_ops()
    g = torch.Generator().manual_seed(100 + rows)
    for shape, d in SHAPES:
        x = (torch.randn(rows, shape.hc, d, generator=g) * 3).bfloat16()
        fn, scale, base = _site(shape.hc, d, True, g)
        got = mhc_fused.hc_head(x, fn, scale, base, shape)
        assert got is not None
        _close_bf16(got, mixing.hc_head(x, fn, scale, base, shape, ops))


def test_prefills_and_other_devices_keep_the_exact_path():
    shape, d = SHAPES[0]
    g = torch.Generator().manual_seed(7)
    fn, scale, base = _site(shape.hc, d, False, g)
    long = torch.randn(mhc_fused.FUSED_MAX_ROWS + 1, shape.hc, d, generator=g).bfloat16()
    assert mhc_fused.hc_pre(long, fn, scale, base, shape) is None
    # the fast table's entry falls back to the reference composition there: bit-identical to it
    ops = fast_ops()
    want = mixing.hc_pre(long, fn, scale, base, shape, ops)
    for a, b in zip(ops.hc_pre(long, fn, scale, base, shape, ops), want):
        assert torch.equal(a, b)
    assert mhc_fused.hc_pre(long[:1].to("meta"), fn, scale, base, shape) is None


def _with_march(march: str) -> tuple[str, ...]:
    return tuple(f"-march={march}" if f == "-march=native" else f for f in kernels.CFLAGS)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_native_avx2_and_scalar_builds_give_the_same_bits(dtype):
    """The AVX2 collapse (8 d at a time, -march=x86-64-v3: checked on AVX-512 machines too) and the 8-lane
    Sinkhorn of <= 8 tokens compute each value like the plain C build (-march=x86-64): D with a tail after the
    vectors, token counts on both sides of 8 and 16 (the lane groups), the 6-row AVX2 GEMM tile's remainders."""
    shape = HcShape(4, 20, 1e-6, 1e-6)
    builds = (kernels.CFLAGS, _with_march("x86-64-v3"), _with_march("x86-64"))
    for rows in (1, 3, 7, 8, 9, 16, 17, 29):
        for d in (20, 61, 64):
            g = torch.Generator().manual_seed(rows * 100 + d)
            x = (torch.randn(rows, shape.hc, d, generator=g) * 3).to(dtype)
            fn, scale, base = _site(shape.hc, d, False, g)
            outs = [mhc_fused.hc_pre(x, fn, scale, base, shape, cflags=f) for f in builds]
            if any(o is None for o in outs):
                pytest.skip("the compiler cannot build for x86-64-v3 / x86-64")
            for other in outs[1:]:
                for a, b in zip(outs[0], other):
                    assert torch.equal(a, b), (rows, d)
            fh, sh, bh = _site(shape.hc, d, True, g)
            heads = [mhc_fused.hc_head(x, fh, sh, bh, shape, cflags=f) for f in builds]
            assert torch.equal(heads[0], heads[1]) and torch.equal(heads[0], heads[2]), (rows, d)
