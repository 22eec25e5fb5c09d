"""The two-dimensional DCT-II of images and its inverse, as matrix products (so they run on
any device and batch over images and channels).

The unnormalised ("old") type of the DCT-VAE's code (seed004 §3.10 [repo]), which is also
SciPy's `dct(type=2, norm=None)`: along an axis of length N,

    F[k] = 2 Σ_n x[n] cos(π k (n + ½) / N),

applied along the width, then the height. F[0, 0] is 4·H·W times the image's mean.
"""

from __future__ import annotations

import math

import torch


def dct_matrix(n: int, dtype: torch.dtype = torch.float64, device=None) -> torch.Tensor:
    """C (n, n) with C[k, m] = 2 cos(π k (m + ½) / n), so that F = C x along one axis."""
    k = torch.arange(n, dtype=dtype, device=device)[:, None]
    m = torch.arange(n, dtype=dtype, device=device)[None, :]
    return 2 * torch.cos(math.pi * k * (m + 0.5) / n)


def idct_matrix(n: int, dtype: torch.dtype = torch.float64, device=None) -> torch.Tensor:
    """The inverse of dct_matrix(n): x[m] = (F[0] / 2 + Σ_{k≥1} F[k] cos(π k (m + ½) / n)) / n."""
    inverse = dct_matrix(n, dtype, device).T / (2 * n)
    inverse[:, 0] /= 2
    return inverse


def dct2(x: torch.Tensor) -> torch.Tensor:
    """The DCT-II of images x (..., H, W) along both spatial axes."""
    h, w = x.shape[-2:]
    return dct_matrix(h, x.dtype, x.device) @ x @ dct_matrix(w, x.dtype, x.device).T


def idct2(f: torch.Tensor) -> torch.Tensor:
    """The inverse of dct2: images (..., H, W) from their coefficients."""
    h, w = f.shape[-2:]
    return idct_matrix(h, f.dtype, f.device) @ f @ idct_matrix(w, f.dtype, f.device).T
