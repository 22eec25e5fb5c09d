"""Structural similarity of images: the multi-scale MS-SSIM (Wang, Simoncelli & Bovik
2003) built on SSIM (Wang et al. 2004), batched in torch.

For images x, y in a value range of width L, with Gaussian-windowed local means mu,
variances s^2 and covariance s_xy (window 11, sigma 1.5 by default; 'valid' filtering):

    l  = (2 mu_x mu_y + C1) / (mu_x^2 + mu_y^2 + C1)          C1 = (0.01 L)^2
    cs = (2 s_xy + C2) / (s_x^2 + s_y^2 + C2)                  C2 = (0.03 L)^2
    SSIM = mean(l * cs)

MS-SSIM halves the images (2x2 average pooling) between scales and combines
    MS-SSIM = prod_{j < M} mean(cs_j)^{w_j} * mean(l_M cs_M)^{w_M}
with the five published weights. The seed's images are small (8x8 digits, 32x32
shapes), where five scales do not fit: the window shrinks to the image (odd, at most
the smaller side) and only the scales whose side is at least `min_side` are used, with
the weights of those scales renormalised to sum to one. On images large enough for five
scales with the full window, this is the standard MS-SSIM; on images too small for a
second scale it is SSIM.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from engine.errors import AtlasError

MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def _gaussian_window(size: int, sigma: float, dtype, device) -> torch.Tensor:
    t = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2
    g = torch.exp(-(t**2) / (2 * sigma**2))
    return g / g.sum()


def _filter(x: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
    """Separable 'valid' Gaussian filtering of (B, C, H, W), channel by channel."""
    c = x.shape[1]
    k = window.numel()
    x = F.conv2d(x, window.view(1, 1, 1, k).expand(c, 1, 1, k), groups=c)
    return F.conv2d(x, window.view(1, 1, k, 1).expand(c, 1, k, 1), groups=c)


def _ssim_maps(x, y, window, data_range):
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_x, mu_y = _filter(x, window), _filter(y, window)
    sxx = _filter(x * x, window) - mu_x**2
    syy = _filter(y * y, window) - mu_y**2
    sxy = _filter(x * y, window) - mu_x * mu_y
    luminance = (2 * mu_x * mu_y + c1) / (mu_x**2 + mu_y**2 + c1)
    contrast_structure = (2 * sxy + c2) / (sxx + syy + c2)
    return luminance, contrast_structure


def _check(x: torch.Tensor, y: torch.Tensor) -> None:
    if x.shape != y.shape or x.dim() != 4:
        raise AtlasError(
            f"SSIM compares two image batches of one shape (B, C, H, W); got {tuple(x.shape)} and {tuple(y.shape)}"
        )


def _window_size(side: int, win_size: int) -> int:
    size = min(win_size, side)
    return size if size % 2 else size - 1


def ms_ssim(
    x: torch.Tensor,
    y: torch.Tensor,
    data_range: float = 1.0,
    win_size: int = 11,
    sigma: float = 1.5,
    weights: tuple[float, ...] = MS_SSIM_WEIGHTS,
    min_side: int = 4,
) -> torch.Tensor:
    """MS-SSIM per image, shape (B,), in [0, 1] (negative contrast terms clipped at 0).
    Scales: as many of len(weights) as keep the image side >= max(min_side, window)."""
    _check(x, y)
    side = min(x.shape[-2:])
    if side < 3:
        raise AtlasError(f"MS-SSIM needs images at least 3 pixels on a side, got {tuple(x.shape[-2:])}")
    size = _window_size(side, win_size)
    window = _gaussian_window(size, sigma, x.dtype, x.device)
    scales = 1
    while scales < len(weights) and side // 2**scales >= max(min_side, size):
        scales += 1
    w = torch.tensor(weights[:scales], dtype=x.dtype, device=x.device)
    w = w / w.sum()
    values = []
    for j in range(scales):
        luminance, cs = _ssim_maps(x, y, window, data_range)
        if j == scales - 1:
            values.append((luminance * cs).flatten(1).mean(1))
        else:
            values.append(cs.flatten(1).mean(1))
            pad = [0, x.shape[-1] % 2, 0, x.shape[-2] % 2]
            x, y = F.avg_pool2d(F.pad(x, pad, mode="replicate"), 2), F.avg_pool2d(F.pad(y, pad, mode="replicate"), 2)
    stacked = torch.stack(values, dim=0).clamp_min(0.0)  # (scales, B)
    return torch.prod(stacked ** w[:, None], dim=0)
