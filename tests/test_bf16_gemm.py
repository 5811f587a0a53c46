"""ops.fast.bf16_gemm: torch's bf16 GEMM contract (fp32 accumulation, one rounding to bf16), through torch's fp32 GEMM
on CPUs without a native bf16 kernel."""

import pytest
import torch

from v4stack.ops.fast import bf16_gemm


def _operands(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(96, 130, generator=g).bfloat16(), torch.randn(130, 70, generator=g).bfloat16()


@pytest.mark.parametrize("native", [False, True])
def test_matmul_rounds_the_fp32_product_once(native, monkeypatch):
    monkeypatch.setattr(bf16_gemm, "native", lambda: native)
    a, b = _operands()
    out = bf16_gemm.matmul(a, b)
    assert out.dtype == torch.bfloat16 and out.shape == (96, 70)
    if native:  # torch's own kernel, untouched
        assert torch.equal(out, a @ b)
    else:  # the fp32 product rounded to bf16 (fp32 accumulation in torch's order)
        assert torch.equal(out, (a.float() @ b.float()).bfloat16())
    # each output within one bf16 rounding of the exact product, plus the fp32 accumulation's error bound
    # (K * 2^-24 * sum |a_k b_k|, K = 130 < 2^8), which matters only where the sum cancels
    exact = (a.double() @ b.double()).bfloat16()
    bound = exact.float().abs() * 2.0 ** -7 + 2.0 ** -16 * (a.float().abs() @ b.float().abs())
    assert ((out.float() - exact.float()).abs() <= bound).all()


def test_row_pieces_bound_the_fp32_memory(monkeypatch):
    """The product is taken in pieces of rows (bounded fp32 memory): each piece is its own fp32 GEMM rounded once."""
    monkeypatch.setattr(bf16_gemm, "native", lambda: False)
    monkeypatch.setattr(bf16_gemm, "FP32_PIECE_BYTES", 7 * 4 * 70)  # 7 rows a piece: 14 pieces, the last short
    a, b = _operands(2)
    expect = torch.cat([(a[r:r + 7].float() @ b.float()).bfloat16() for r in range(0, 96, 7)])
    assert torch.equal(bf16_gemm.matmul(a, b), expect)
    stacked, bs = torch.stack([a, -a]), torch.stack([b, b])  # batch 2: 3 rows a piece
    expect = torch.cat([torch.bmm(stacked[:, r:r + 3].float(), bs.float()).bfloat16() for r in range(0, 96, 3)], 1)
    assert torch.equal(bf16_gemm.bmm(stacked, bs), expect)


def test_bmm_and_non_bf16_operands(monkeypatch):
    monkeypatch.setattr(bf16_gemm, "native", lambda: False)
    a, b = _operands(1)
    batched = bf16_gemm.bmm(torch.stack([a, a * 2]), torch.stack([b, b]))
    assert torch.equal(batched[1], (a.float() * 2 @ b.float()).bfloat16())
    af, bf = a.float(), b.float()
    assert torch.equal(bf16_gemm.matmul(af, bf), af @ bf)  # fp32 operands: torch's fp32 GEMM, fp32 out
    assert bf16_gemm.matmul(af, bf).dtype == torch.float32


def test_native_follows_torchs_cpu_capability():
    assert bf16_gemm.native() == (torch.backends.cpu.get_cpu_capability() in bf16_gemm.NATIVE_CAPABILITIES)
