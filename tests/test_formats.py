"""Bit formats of the official checkpoints: e2m1 rounding, FP4 packing, FP8/UE8M0 block scales."""

import torch

from v4stack.weights import formats as F


def test_e2m1_round_to_nearest_even():
    # midpoints go to the even mantissa: 0.25->0, 0.75->1, 1.25->1, 1.75->2, 2.5->2, 3.5->4, 5->4
    x = torch.tensor([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, 5.9, -0.3, -2.6, 9.0])
    want = torch.tensor([0.0, 1.0, 1.0, 2.0, 2.0, 4.0, 4.0, 6.0, -0.5, -3.0, 6.0])
    assert torch.equal(F.round_to_e2m1(x), want)


def test_fp4_pack_low_nibble_is_even_column():
    values = torch.tensor([[0.5, -6.0, 1.5, 0.0]])
    packed = F.pack_fp4(values).view(torch.uint8)
    # 0.5 is code 1, -6 is code 15 -> byte 0xF1; 1.5 is code 3, 0 is code 0 -> byte 0x03
    assert packed.tolist() == [[0xF1, 0x03]]
    assert torch.equal(F.unpack_fp4(packed.view(torch.int8)), values)


def test_fp4_weight_roundtrip_and_scale_grid():
    w = torch.randn(8, 64) * 0.1
    packed, scale = F.quantize_fp4_weight(w)
    assert packed.dtype == torch.int8 and packed.shape == (8, 32)
    assert scale.dtype == torch.float8_e8m0fnu and scale.shape == (8, 2)
    deq = F.dequant_fp4_weight(packed, scale)
    # every block's values are e2m1 grid points times its power-of-two scale, within half a grid step
    s = F.ue8m0_to_float(scale).repeat_interleave(32, 1)
    assert torch.all((deq - w).abs() <= s * 1.0 + 1e-12)
    assert torch.equal(F.dequant_fp4_weight(*F.quantize_fp4_weight(deq)), deq)  # grid values survive requantising


def test_fp8_block_scales_are_powers_of_two_and_exact():
    w = torch.randn(200, 300)
    q, scale = F.quantize_fp8_weight(w, 128)
    assert q.shape == (200, 300) and scale.shape == (2, 3)
    s = F.ue8m0_to_float(scale)
    assert torch.equal(torch.exp2(torch.log2(s).round()), s)
    deq = F.dequant_fp8_weight(q, scale, 128)
    assert (deq - w).abs().max() < 0.07 * w.abs().max()  # e4m3: 3 mantissa bits
    q2, scale2 = F.quantize_fp8_weight(deq, 128)
    assert torch.equal(F.dequant_fp8_weight(q2, scale2, 128), deq)


def test_ue8m0_decoding():
    raw = torch.tensor([127, 128, 120], dtype=torch.uint8).view(torch.float8_e8m0fnu)
    assert F.ue8m0_to_float(raw).tolist() == [1.0, 2.0, 2.0**-7]
