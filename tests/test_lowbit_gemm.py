"""The direct low-bit GEMMs (ops.fast.lowbit, csrc/lowbit_gemm.c) against the exact dequantised weight, on odd
shapes, every code and extreme scales; the torch fallback without the kernel; prepared_bytes against
prepare_model."""

import pytest
import torch

from v4stack.config.numerics import Numerics
from v4stack.ops.fast import kernels, lowbit, prepare
from v4stack.ops.fast.prepare import LOWBIT, attached_bytes, prepare_model, prepared_bytes
from v4stack.weights.formats import dequant_fp4_weight, dequant_fp8_weight

E4M3_NAN = (0x7F, 0xFF)
SCALE_RANGE = (90, 160)  # ue8m0 bytes 2^-37 .. 2^33: far from fp32 overflow, through tiny products


def _fp8(n, k, block, g):
    codes = torch.randint(0, 256, (n, k), generator=g, dtype=torch.uint8)
    for nan in E4M3_NAN:
        codes[codes == nan] = 0x7E  # every finite code, subnormals included
    scale = torch.randint(*SCALE_RANGE, (-(-n // block), -(-k // block)), generator=g, dtype=torch.uint8)
    return codes.view(torch.float8_e4m3fn), scale.view(torch.float8_e8m0fnu)


def _fp4(n, k, g):
    packed = torch.randint(0, 256, (n, k // 2), generator=g, dtype=torch.uint8).view(torch.int8)
    scale = torch.randint(*SCALE_RANGE, (n, k // 32), generator=g, dtype=torch.uint8).view(torch.float8_e8m0fnu)
    return packed, scale


def _close(y, want):
    err = (y - want).abs().max().item()
    bound = 1e-5 * want.abs().max().item() + 1e-30
    assert err <= bound, (err, bound)


pytestmark = pytest.mark.skipif(not lowbit.available(), reason="no C compiler: the torch fallback is tested below")

SHAPES = [(1, 1, 16), (1, 13, 40), (2, 129, 384), (3, 7, 17), (5, 257, 640), (16, 33, 257), (17, 9, 96),
          (40, 70, 130)]  # M, N, K: odd everything, one row, both sides of DECODE_ROWS


@pytest.mark.parametrize("m,n,k", SHAPES)
@pytest.mark.parametrize("block", [128, 16, 24])
def test_fp8_matches_the_exact_dequantised_product(m, n, k, block):
    g = torch.Generator().manual_seed(m * 1000 + n + k + block)
    w, s = _fp8(n, k, block, g)
    dense = dequant_fp8_weight(w, s, block)
    x = torch.randn(m, k, generator=g)
    assert torch.equal(lowbit.dequant("fp8", w, s, block, 0, n, k), dense)
    _close(lowbit.matmul(x, "fp8", w, s, block), x @ dense.t())
    if n > 3:  # a row slice whose first row is inside a scale block
        _close(lowbit.matmul(x, "fp8", w, s, block, row0=3, rows=n - 3), x @ dense[3:].t())


@pytest.mark.parametrize("m,n,k", [(m, n, k) for m, n, k in SHAPES if k % 32 == 0] + [(1, 5, 32), (3, 11, 96)])
def test_fp4_matches_the_exact_dequantised_product(m, n, k):
    g = torch.Generator().manual_seed(m * 1000 + n + k)
    w, s = _fp4(n, k, g)
    dense = dequant_fp4_weight(w, s)
    x = torch.randn(m, k, generator=g)
    assert torch.equal(lowbit.dequant("fp4", w, s, 0, 0, n, k), dense)
    _close(lowbit.matmul(x, "fp4", w, s, 0), x @ dense.t())


@pytest.mark.parametrize("m,n,k", SHAPES)
def test_bf16_matches_the_fp32_product(m, n, k):
    g = torch.Generator().manual_seed(m + n + k)
    w = (torch.randn(n, k, generator=g) * 10.0 ** torch.randint(-20, 20, (n, k), generator=g)).bfloat16()
    x = torch.randn(m, k, generator=g).bfloat16()
    _close(lowbit.matmul(x, "dense", w, None, 0), x.float() @ w.float().t())


@pytest.mark.parametrize("n,k", [(1, 16), (3, 17), (4, 512), (13, 40), (129, 384), (257, 640), (70, 130)])
def test_bf16_direct_path_rows_do_not_depend_on_the_batch(n, k):
    """Every decode-sized call (1 .. BF16_DIRECT_ROWS rows of x) against bf16 W takes the direct kernel (weight
    converted in registers, x rows in chunks per weight group): each output is one FMA chain and sum, so an m-row
    call gives the first m rows of the full call bit for bit, with row slices and weight-row tails; and the full
    call is the plain-C build's 16-lane definition (test_the_plain_build_is_the_16_lane_definition)."""
    g = torch.Generator().manual_seed(n * 7 + k)
    w = (torch.randn(n, k, generator=g) * 10.0 ** torch.randint(-8, 8, (n, k), generator=g)).bfloat16()
    x = torch.randn(lowbit.BF16_DIRECT_ROWS, k, generator=g)
    full = lowbit.matmul(x, "dense", w, None, 0)
    for m in range(1, lowbit.BF16_DIRECT_ROWS):
        assert torch.equal(lowbit.matmul(x[:m], "dense", w, None, 0), full[:m]), m
    if n > 3:
        assert torch.equal(lowbit.matmul(x[:1], "dense", w, None, 0, row0=2, rows=n - 3), full[:1, 2:n - 1])
    if lowbit.isa(PLAIN_CFLAGS) is not None:
        assert torch.equal(lowbit.matmul(x, "dense", w, None, 0, cflags=PLAIN_CFLAGS), full)


# ue8m0 bytes; huge: 2^8 x s overflows; prescaled: every block in the exponents whose FP8 products the AVX2 direct
# kernel takes as x' f (x x 2^(e - 7) against the placed byte: lowbit_avx2.h's fp8_prescale, e in 10 .. 134)
LOW_SCALES = {"random": SCALE_RANGE, "huge": (240, 255), "tiny": (0, 3), "prescaled": (10, 135)}


def _same_bits(a, b):
    """Bit equality (huge scales give inf and NaN outputs, which torch.equal never calls equal)."""
    return torch.equal(a.contiguous().view(torch.int32), b.contiguous().view(torch.int32))


@pytest.mark.parametrize("n,k,block", [(1, 16, 16), (3, 17, 16), (4, 512, 128), (13, 40, 16), (129, 384, 128),
                                       (70, 130, 32), (9, 256, 48)])
@pytest.mark.parametrize("scales", sorted(LOW_SCALES))
def test_fp8_few_rows_direct_path_is_bit_identical_to_the_panel_path(n, k, block, scales):
    """1-4 rows of x against FP8 W take the direct kernel (dequantised in registers, prefetched; AVX-512 builds);
    each output is the same FMA chain of the same dequantised values and the same sum as the panel kernel's, which
    a 5+-row call runs: bit-equal row by row, with row slices, tails, block sizes that are not multiples of 16
    (the panel path) and scales whose 2^8 x s is not exact."""
    g = torch.Generator().manual_seed(n * 7 + k + block)
    w, _ = _fp8(n, k, block, g)
    s = torch.randint(*LOW_SCALES[scales], (-(-n // block), -(-k // block)), generator=g,
                      dtype=torch.uint8).view(torch.float8_e8m0fnu)
    x = torch.randn(lowbit.LOWBIT_DIRECT_ROWS + 1, k, generator=g) * 10.0 ** torch.randint(-3, 3, (1, k), generator=g)
    panel = lowbit.matmul(x, "fp8", w, s, block)
    for m in range(1, lowbit.LOWBIT_DIRECT_ROWS + 1):
        assert _same_bits(lowbit.matmul(x[:m], "fp8", w, s, block), panel[:m]), m
    if n > 3:
        assert _same_bits(lowbit.matmul(x[:1], "fp8", w, s, block, row0=2, rows=n - 3), panel[:1, 2:n - 1])


@pytest.mark.parametrize("n,k", [(1, 32), (3, 64), (4, 512), (13, 96), (129, 256), (70, 160)])
@pytest.mark.parametrize("scales", sorted(LOW_SCALES))
def test_fp4_few_rows_direct_path_is_bit_identical_to_the_panel_path(n, k, scales):
    """The FP4 counterpart: 1-4 rows take the direct kernel, bit-equal to the 5-row panel call row by row."""
    g = torch.Generator().manual_seed(n * 5 + k)
    w, _ = _fp4(n, k, g)
    s = torch.randint(*LOW_SCALES[scales], (n, k // 32), generator=g, dtype=torch.uint8).view(torch.float8_e8m0fnu)
    x = torch.randn(lowbit.LOWBIT_DIRECT_ROWS + 1, k, generator=g)
    panel = lowbit.matmul(x, "fp4", w, s, 0)
    for m in range(1, lowbit.LOWBIT_DIRECT_ROWS + 1):
        assert _same_bits(lowbit.matmul(x[:m], "fp4", w, s, 0), panel[:m]), m
    if n > 3:
        assert _same_bits(lowbit.matmul(x[:1], "fp4", w, s, 0, row0=2, rows=n - 3), panel[:1, 2:n - 1])


def test_bad_inputs_get_a_clear_answer():
    w, s = _fp8(8, 32, 16, torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="columns"):
        lowbit.matmul(torch.randn(2, 31), "fp8", w, s, 16)
    assert lowbit.matmul(torch.randn(2, 32), "dense", torch.randn(8, 32), None, 0) is None  # fp32: not a kernel's
    assert lowbit.supports("fp4", torch.zeros(4, 24, dtype=torch.int8)) is False  # K = 48: not whole scale blocks


def _expected_bytes(model, kernels):
    from v4stack.ops.reference.layers import FP8

    total = 0
    for module in model.modules():
        if hasattr(module, "fmt") and hasattr(module, "compute") and module.fmt in ("fp8", "fp4", "dense"):
            numel = module.weight.numel() * (2 if module.fmt == "fp4" else 1)
            role = prepare.LINEAR_FP32 if module.dense_compute_fp32 else prepare.LINEAR
            total += prepared_bytes(module.fmt, numel, role, stored=module.weight.dtype,
                                    compute=module.compute.dtype, kernels=kernels)
        if hasattr(module, "wo_a") and hasattr(module, "cfg"):
            total += prepared_bytes(FP8, module.wo_a.weight.numel(), prepare.GROUPED_OUTPUT,
                                    compute=module.wo_a.compute.dtype, kernels=kernels)
        if hasattr(module, "route_scale") and hasattr(module, "weight"):
            total += prepared_bytes("dense", module.weight.numel(), prepare.ROUTER, kernels=kernels)
    return total


def test_prepared_bytes_is_what_prepare_model_adds_with_and_without_kernels(tiny_checkpoint, monkeypatch):
    from v4stack.model import ForwardBatch
    from v4stack.modelio.loader import load_model

    model = load_model(tiny_checkpoint, Numerics.fast_kernels(), progress=False)
    direct = prepare_model(model)
    assert direct == _expected_bytes(model, kernels=True) == attached_bytes(model)
    ids = torch.arange(3, 12)
    a = model(ForwardBatch.build([model.new_state()], [ids])).logits
    monkeypatch.setattr(lowbit, "available", lambda: False)  # a machine without a C compiler
    copies = prepare_model(model)
    assert copies == _expected_bytes(model, kernels=False) == attached_bytes(model) and copies > direct
    wq = model.layers[0].attn.wq_a
    assert not hasattr(wq, LOWBIT) and torch.equal(wq.prepared, wq.dense_weight(torch.float32))
    b = model(ForwardBatch.build([model.new_state()], [ids])).logits  # the torch fallback runs and agrees
    assert (a - b).abs().max() < 0.05, (a - b).abs().max()


def _build(march):
    """kernels.CFLAGS with -march=native replaced: x86-64-v3 = AVX2 + FMA + F16C, x86-64 = no AVX at all."""
    return tuple(f"-march={march}" if f == "-march=native" else f for f in kernels.CFLAGS)


AVX2_CFLAGS, PLAIN_CFLAGS = _build("x86-64-v3"), _build("x86-64")
CROSS_ROWS = [1, 2, 3, 4, 5, 8, 13, 16]  # the direct kernels (bf16 <= 16, FP8 / FP4 <= 4 rows) and the panel path
CROSS_CASES = [  # fmt, n, k, block: K with and without 16-column tails, FP8 blocks 128 / 48 / 16, weight-row tails
    ("dense", 3, 17, 0), ("dense", 13, 40, 0), ("dense", 70, 130, 0), ("dense", 9, 512, 0),
    ("fp8", 3, 17, 16), ("fp8", 13, 40, 16), ("fp8", 9, 256, 48), ("fp8", 70, 130, 128), ("fp8", 10, 384, 128),
    ("fp4", 3, 64, 0), ("fp4", 13, 96, 0), ("fp4", 70, 160, 0)]


def _cross_weight(fmt, n, k, block, scales, g):
    if fmt == "dense":  # magnitudes 1e-25 .. 1e25: products overflow to inf and underflow to subnormals
        span = {"random": 8, "huge": 25, "tiny": 25, "prescaled": 8}[scales]
        magnitude = 10.0 ** torch.randint(-span, span, (n, k), generator=g)
        return (torch.randn(n, k, generator=g) * magnitude).bfloat16(), None
    w, _ = _fp8(n, k, block, g) if fmt == "fp8" else _fp4(n, k, g)
    shape = (-(-n // block), -(-k // block)) if fmt == "fp8" else (n, k // 32)
    return w, torch.randint(*LOW_SCALES[scales], shape, generator=g, dtype=torch.uint8).view(torch.float8_e8m0fnu)


def test_builds_are_what_their_flags_say():
    """The cross-build test below compares what it claims: the x86-64 build has no vector kernels, the x86-64-v3
    build at least AVX2 (AVX-512 needs more than v3's flags)."""
    if lowbit.isa(PLAIN_CFLAGS) is None:
        pytest.skip("the compiler cannot build for x86-64 (not an x86 machine)")
    assert lowbit.isa(PLAIN_CFLAGS) == "plain C"
    assert lowbit.isa(AVX2_CFLAGS) == "AVX2"
    assert lowbit.isa() in lowbit.ISA_NAMES


@pytest.mark.parametrize("case", CROSS_CASES, ids=lambda c: "-".join(map(str, c)))
@pytest.mark.parametrize("scales", sorted(LOW_SCALES))
def test_every_build_gives_the_same_bits(case, scales):
    """The native build (AVX-512 or AVX2, whichever this CPU has), the AVX2 build and the plain-C build compute each
    output as the same 16-lane FMA chain and summation tree: bit-equal outputs for bf16 / FP8 / FP4, 1-16 rows of x
    (direct kernels and panel path), row slices, extreme scales, K tails; and the same dequantised weights."""
    fmt, n, k, block = case
    if lowbit.isa(PLAIN_CFLAGS) is None or lowbit.isa(AVX2_CFLAGS) is None:
        pytest.skip("the compiler cannot build for x86-64 (not an x86 machine)")
    g = torch.Generator().manual_seed(n * 31 + k + block + len(scales))
    w, s = _cross_weight(fmt, n, k, block, scales, g)
    x = torch.randn(max(CROSS_ROWS), k, generator=g) * 10.0 ** torch.randint(-3, 3, (1, k), generator=g)
    for m in CROSS_ROWS:
        native = lowbit.matmul(x[:m], fmt, w, s, block)
        for flags in (AVX2_CFLAGS, PLAIN_CFLAGS):
            assert _same_bits(lowbit.matmul(x[:m], fmt, w, s, block, cflags=flags), native), (m, flags)
    sliced = lowbit.matmul(x[:1], fmt, w, s, block, row0=2, rows=n - 3)
    assert _same_bits(lowbit.matmul(x[:1], fmt, w, s, block, row0=2, rows=n - 3, cflags=PLAIN_CFLAGS), sliced)
    if fmt != "dense":
        dense = lowbit.dequant(fmt, w, s, block, 0, n, k)
        assert _same_bits(lowbit.dequant(fmt, w, s, block, 0, n, k, cflags=PLAIN_CFLAGS), dense)
        assert _same_bits(lowbit.dequant(fmt, w, s, block, 0, n, k, cflags=AVX2_CFLAGS), dense)


def test_the_plain_build_is_the_16_lane_definition():
    """The definition written out in torch for one bf16 output: lane l sums x[k] w[k] over k = l, l + 16, ... with
    one rounding per FMA (fp64 products of bf16 x fp32 are exact, one round to fp32 = fmaf), then the tree
    t = a[8:] + a[:8], u = t[4:] + t[:4], (u0 + u2) + (u1 + u3). The plain-C build must give exactly that."""
    if lowbit.isa(PLAIN_CFLAGS) is None:
        pytest.skip("the compiler cannot build for x86-64 (not an x86 machine)")
    g = torch.Generator().manual_seed(7)
    k = 45  # two whole 16-column steps and a 13-column tail
    w = torch.randn(1, k, generator=g).bfloat16()
    x = torch.randn(1, k, generator=g)
    xp = torch.cat([x[0], torch.zeros(3)]).double().view(-1, 16)
    wp = torch.cat([w[0].float(), torch.zeros(3)]).double().view(-1, 16)
    acc = torch.zeros(16, dtype=torch.float32)
    for step in range(xp.shape[0]):  # fmaf: exact product + accumulator, rounded once
        acc = (xp[step] * wp[step] + acc.double()).float()
    t = acc[8:] + acc[:8]
    u = t[4:] + t[:4]
    want = (u[0] + u[2]) + (u[1] + u[3])
    got = lowbit.matmul(x, "dense", w, None, 0, cflags=PLAIN_CFLAGS)
    assert _same_bits(got.view(1), want.view(1)), (got, want)


@pytest.mark.parametrize("m", [1, 2, 3, 4])
def test_fp8_prescaled_products_where_x_overflows_are_the_plain_builds(m):
    """The AVX2 direct kernel multiplies x' = x x 2^(e - 7) by the placed e4m3 byte where that is exact; a row block
    whose x' overflows somewhere (a finite product x w whose x x 2^127 is not) takes the multiplied weights instead:
    the same bits as the plain build (without the fallback that output would be inf)."""
    if lowbit.isa(PLAIN_CFLAGS) is None or lowbit.isa(AVX2_CFLAGS) is None:
        pytest.skip("the compiler cannot build for x86-64 (not an x86 machine)")
    g = torch.Generator().manual_seed(m)
    n, k, block = 260, 384, 128
    w, _ = _fp8(n, k, block, g)
    s = torch.randint(10, 135, (-(-n // block), -(-k // block)), generator=g, dtype=torch.uint8)
    s[1, 2] = 134  # row block 1, column block 2: x' = x x 2^127, which overflows for |x| >= 2
    x = torch.randn(m, k, generator=g)
    x[0, 2 * block + 5] = 7.0  # x w stays finite (|w| <= 448 x 2^7)
    s = s.view(torch.float8_e8m0fnu)
    native = lowbit.matmul(x, "fp8", w, s, block)
    for flags in (AVX2_CFLAGS, PLAIN_CFLAGS):
        assert _same_bits(lowbit.matmul(x, "fp8", w, s, block, cflags=flags), native), flags
