"""Orthonormal Walsh-Hadamard rotation (Sylvester order) over the last dim, as the V4 indexer uses it."""

from __future__ import annotations

import math

import torch


def hadamard_matrix(n: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Sylvester Hadamard matrix H_n (entries +-1), fp32 [n, n]; n must be a power of two."""
    if n <= 0 or n & (n - 1):
        raise ValueError(f"Hadamard size must be a power of two, got {n}")
    h = torch.ones(1, 1, device=device)
    while h.shape[0] < n:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
    return h


def hadamard_rotate(x: torch.Tensor) -> torch.Tensor:
    """x [..., n] -> (x @ H_n) * n^-1/2 in x.dtype: the +-1 sums are exact (fp64), rounded once to fp32,
    then scaled by fp32(n^-1/2) - the official kernel's order of rounding."""
    n = x.shape[-1]
    h = hadamard_matrix(n, x.device).double()
    return ((x.double() @ h).float() * math.sqrt(1.0 / n)).to(x.dtype)
