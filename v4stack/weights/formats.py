"""Number formats of the official DeepSeek-V4 checkpoints: FP8 e4m3, FP4 e2m1 (packed), UE8M0 scales.

This module knows bit layouts only; it does not know tensor names or which layer uses which format.

* FP8 weight ``w [out, in]`` (``float8_e4m3fn``) with ``scale [ceil(out/b), ceil(in/b)]`` (``float8_e8m0fnu``):
  ``W[i, j] = w[i, j] * 2^(e[i // b, j // b] - 127)``.
* FP4 weight stored as int8 ``[out, in/2]``: two e2m1 codes per byte, low nibble = even column,
  scale ``[out, in/32]`` UE8M0: ``W[i, j] = E2M1[code(i, j)] * 2^(e[i, j // 32] - 127)``.
"""

from __future__ import annotations

import torch

FP8_E4M3_MAX = 448.0  # largest finite float8_e4m3fn value
FP4_E2M1_MAX = 6.0  # largest e2m1 value
FP4_BLOCK = 32  # UE8M0 scale granularity of FP4 experts along K (official convert.py)
UE8M0_BIAS = 127  # E8M0 byte e encodes 2^(e - 127)

# e2m1 code -> value; codes 8..15 are the negatives of 0..7 (sign bit = bit 3).
E2M1_VALUES = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0)


def ue8m0_to_float(scale: torch.Tensor) -> torch.Tensor:
    """UE8M0 scale (``float8_e8m0fnu`` or uint8 bytes) -> fp32 powers of two, same shape."""
    if scale.dtype == torch.float8_e8m0fnu:
        scale = scale.view(torch.uint8)
    if scale.dtype != torch.uint8:
        return scale.float()
    return torch.exp2((scale.to(torch.int32) - UE8M0_BIAS).float())


def float_to_ue8m0(scale: torch.Tensor) -> torch.Tensor:
    """fp32 powers of two -> ``float8_e8m0fnu``. Non-powers of two are rounded up (ceil of log2)."""
    exponent = torch.ceil(torch.log2(scale.float())).to(torch.int32) + UE8M0_BIAS
    return exponent.clamp(0, 254).to(torch.uint8).view(torch.float8_e8m0fnu)


def expand_block_scale(scale: torch.Tensor, rows: int, cols: int, block_rows: int, block_cols: int) -> torch.Tensor:
    """Block scale [ceil(rows/br), ceil(cols/bc)] (fp32) -> per-element scale [rows, cols]."""
    full = scale.repeat_interleave(block_rows, dim=0).repeat_interleave(block_cols, dim=1)
    return full[:rows, :cols]


def dequant_fp8_weight(weight: torch.Tensor, scale: torch.Tensor, block: int) -> torch.Tensor:
    """FP8 e4m3 weight [out, in] + UE8M0 block scale -> fp32 [out, in] (exact)."""
    rows, cols = weight.shape
    return weight.float() * expand_block_scale(ue8m0_to_float(scale), rows, cols, block, block)


def unpack_fp4(packed: torch.Tensor) -> torch.Tensor:
    """int8 [out, in/2] of e2m1 code pairs -> fp32 code values [out, in] (low nibble = even column)."""
    table = torch.tensor(E2M1_VALUES, dtype=torch.float32, device=packed.device)
    raw = packed.view(torch.uint8)
    low = (raw & 0x0F).long()
    high = (raw >> 4).long()
    codes = torch.stack((low, high), dim=-1).flatten(-2)  # [out, in]
    return table[codes]


def dequant_fp4_weight(packed: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """FP4 experts: int8 [out, in/2] + UE8M0 [out, in/32] -> fp32 [out, in] (exact)."""
    values = unpack_fp4(packed)
    return values * ue8m0_to_float(scale).repeat_interleave(FP4_BLOCK, dim=1)[:, : values.shape[1]]


def round_to_e2m1(x: torch.Tensor) -> torch.Tensor:
    """Round fp32 values in [-6, 6] to the nearest e2m1 value, ties to even mantissa (fp32 -> fp32).

    The e2m1 grid has spacing 0.5 on [0, 2), 1 on [2, 4) and 2 on [4, 6]; rounding to nearest-even
    on each segment reproduces an IEEE-style cast.
    """
    mag = x.abs().clamp(max=FP4_E2M1_MAX)
    step = torch.where(mag < 2.0, torch.full_like(mag, 0.5), torch.where(mag < 4.0, torch.ones_like(mag), torch.full_like(mag, 2.0)))
    rounded = torch.round(mag / step) * step  # torch.round is round-half-to-even on the step count
    return torch.copysign(rounded.clamp(max=FP4_E2M1_MAX), x)


def encode_e2m1_codes(values: torch.Tensor) -> torch.Tensor:
    """Exact e2m1 values (fp32) -> codes 0..15 (uint8)."""
    table = torch.tensor(E2M1_VALUES[:8], dtype=torch.float32, device=values.device)
    magnitude_code = (values.abs().unsqueeze(-1) == table).float().argmax(-1).to(torch.uint8)
    sign = (torch.signbit(values) & (values != 0)).to(torch.uint8) << 3
    return magnitude_code | sign


def pack_fp4(values: torch.Tensor) -> torch.Tensor:
    """Exact e2m1 values [out, in] -> int8 [out, in/2] (low nibble = even column)."""
    codes = encode_e2m1_codes(values)
    packed = codes[:, 0::2] | (codes[:, 1::2] << 4)
    return packed.view(torch.int8)


def quantize_fp8_weight(weight: torch.Tensor, block: int) -> tuple[torch.Tensor, torch.Tensor]:
    """fp32 weight [out, in] -> (e4m3 [out, in], UE8M0 [ceil(out/b), ceil(in/b)]) with power-of-two scales."""
    rows, cols = weight.shape
    pad_r, pad_c = (-rows) % block, (-cols) % block
    padded = torch.nn.functional.pad(weight.float(), (0, pad_c, 0, pad_r))
    blocks = padded.unflatten(0, (-1, block)).unflatten(2, (-1, block))  # [R, b, C, b]
    scale = _fp8_pow2_scale(blocks.abs().amax(dim=(1, 3)))  # [R, C]
    full = expand_block_scale(scale, rows, cols, block, block)
    q = (weight.float() / full).clamp(-FP8_E4M3_MAX, FP8_E4M3_MAX).to(torch.float8_e4m3fn)
    return q, float_to_ue8m0(scale)


FP8_AMAX_FLOOR = 1e-4  # an all-zero block still gets a finite scale


def _fp8_pow2_scale(amax: torch.Tensor) -> torch.Tensor:
    """Power-of-two scale mapping a block's amax into the e4m3 range: 2^ceil(log2(max(amax, 1e-4) / 448))."""
    return torch.exp2(torch.ceil(torch.log2(amax.clamp_min(FP8_AMAX_FLOOR) / FP8_E4M3_MAX)))


def quantize_fp8_rows(weight: torch.Tensor, block: int) -> tuple[torch.Tensor, torch.Tensor]:
    """fp32 rows [n, d] -> (e4m3 [n, d], UE8M0 [n, d/block]): one power-of-two scale per 1 x block of a row
    (the Engram table layout)."""
    blocks = weight.float().unflatten(1, (-1, block))  # [n, d/b, b]
    scale = _fp8_pow2_scale(blocks.abs().amax(-1, keepdim=True))
    q = (blocks / scale).clamp(-FP8_E4M3_MAX, FP8_E4M3_MAX).to(torch.float8_e4m3fn).flatten(1)
    return q, float_to_ue8m0(scale.squeeze(-1))


FP4_AMAX_FLOOR = FP4_E2M1_MAX * 2.0**-126  # reference fp4_act_quant: amax floored at 6 * 2^-126


def e2m1_block_values(blocks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """fp32 blocks [..., nb, block] -> (e2m1 grid values fp32, same shape; power-of-two scales [..., nb, 1]),
    s = 2^ceil(log2(max(amax, 6 * 2^-126) / 6)), values rounded to nearest even."""
    amax = blocks.abs().amax(-1, keepdim=True).clamp_min(FP4_AMAX_FLOOR)
    scale = torch.exp2(torch.ceil(torch.log2(amax / FP4_E2M1_MAX)))
    return round_to_e2m1((blocks / scale).clamp(-FP4_E2M1_MAX, FP4_E2M1_MAX)), scale


def quantize_fp4_weight(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """fp32 weight [out, in] -> (int8 packed [out, in/2], UE8M0 [out, in/32]), per-row 1x32 blocks."""
    values, scale = e2m1_block_values(weight.float().unflatten(1, (-1, FP4_BLOCK)))  # [out, in/32, 32]
    return pack_fp4(values.flatten(1)), float_to_ue8m0(scale.squeeze(-1))
