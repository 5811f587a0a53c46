"""Quantise-dequantise simulations of the reference's activation/KV QAT points (model_spec.md §3.1, §3.12).

The quant-dequant functions return fp32 tensors whose values are exactly representable in the target format times a
power-of-two scale; callers cast to the compute dtype where the reference writes back in place.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from v4stack.weights.formats import FP4_E2M1_MAX, FP8_E4M3_MAX, e2m1_block_values, round_to_e2m1

FP8_AMAX_FLOOR = 1e-4  # reference act_quant: amax floored at 1e-4 before the scale
KV_QUANT_BLOCK = 64  # V4 window/compressed KV QAT: FP8 blocks of 64 on the non-rope dims


def _blocks(x: torch.Tensor, block: int) -> tuple[torch.Tensor, int]:
    """[..., N] fp32 -> [..., ceil(N/block), block], zero-padded; returns the padding width too."""
    pad = (-x.shape[-1]) % block
    xf = x.float()
    if pad:
        xf = F.pad(xf, (0, pad))
    return xf.unflatten(-1, (-1, block)), pad


def _unblock(xb: torch.Tensor, pad: int) -> torch.Tensor:
    out = xb.flatten(-2)
    return out[..., : out.shape[-1] - pad] if pad else out


def _fp8_codes(xb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Blocks [..., nb, block] -> (e4m3 values as fp32, scales [..., nb, 1]); s = 2^ceil(log2(amax/448))."""
    amax = xb.abs().amax(-1, keepdim=True).clamp_min(FP8_AMAX_FLOOR)
    scale = torch.exp2(torch.ceil(torch.log2(amax / FP8_E4M3_MAX)))
    return (xb / scale).clamp(-FP8_E4M3_MAX, FP8_E4M3_MAX).to(torch.float8_e4m3fn).float(), scale


def quantize_fp8_blocks(x: torch.Tensor, block: int) -> tuple[torch.Tensor, torch.Tensor]:
    """x [M, K] -> (e4m3 values as fp32 [M, K], power-of-two scales fp32 [M, ceil(K/block)]).

    s = 2^ceil(log2(max(amax, 1e-4)/448)); values = e4m3(clamp(x/s, +-448)) rounded to nearest even.
    """
    xb, pad = _blocks(x, block)
    q, scale = _fp8_codes(xb)
    return _unblock(q, pad), scale.squeeze(-1)


def quant_dequant_fp8(x: torch.Tensor, block: int) -> torch.Tensor:
    """FP8 e4m3 with one UE8M0 scale per ``block`` along the last dim: s = 2^ceil(log2(amax/448)).

    x: [..., N] any float dtype -> fp32 [..., N] = e4m3(clamp(x/s, +-448)) * s (round to nearest even).
    """
    xb, pad = _blocks(x, block)
    q, scale = _fp8_codes(xb)
    return _unblock(q * scale, pad)


def quant_dequant_fp4(x: torch.Tensor, block: int) -> torch.Tensor:
    """FP4 e2m1 with one UE8M0 scale per ``block``: s = 2^ceil(log2(amax/6)); x: [..., N] -> fp32 [..., N]."""
    xb, pad = _blocks(x, block)
    q, scale = e2m1_block_values(xb)
    return _unblock(q * scale, pad)


FP4_E4M3_SCALE_FLOOR = 6.0 * 2.0**-9  # V4.1 compressed-KV QAT: amax floored at 6 * 2^-9 (smallest e4m3 subnormal x 6)


def quant_dequant_fp4_e4m3_scale(x: torch.Tensor, block: int) -> torch.Tensor:
    """FP4 e2m1 with one E4M3 scale per ``block`` (V4.1 compressed KV, block 16): s = e4m3(max(amax, 6 * 2^-9) / 6)
    rounded to nearest even, values e2m1(clamp(x / s, +-6)) rounded to nearest even. x [..., N] -> fp32 [..., N]."""
    xb, pad = _blocks(x, block)
    amax = xb.abs().amax(-1, keepdim=True).clamp_min(FP4_E4M3_SCALE_FLOOR)
    scale = (amax / FP4_E2M1_MAX).to(torch.float8_e4m3fn).float()
    q = round_to_e2m1((xb / scale).clamp(-FP4_E2M1_MAX, FP4_E2M1_MAX))
    return _unblock(q * scale, pad)
