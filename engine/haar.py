"""Haar wavelets on images: the multi-resolution projections of seed000 ch. 3 (Fig. 3.1, B.2)
and the scaled Haar coefficients of Theorem 4.2 (seed000 ch. 4, proof in App. C.1), measured
along a DDPM forward process.

An image of side 2^i lives in V_{-i}, the piecewise-constant images with 2^i × 2^i pixels;
V_{-j} ⊂ V_{-i} for j ≤ i, and the orthogonal projection onto V_{-j} is 2×2 average pooling
repeated i − j times, then nearest upsampling back to 2^i × 2^i (seed000 Thm 3.2: pooling is
conjugate to Haar projection).

The coefficients are those of T_i = Λ_i H_i (seed000 eq. C.13–C.15), scaled so that they are
pooling-consistent: the base coefficient is the mean, and a level-j detail coefficient
(j = 1 … i) is (mean of the left half − mean of the right half) / 2 over a block of
2^(i−j+1) samples. The coefficients of levels ≤ j of a signal are those of its pooled
version at resolution 2^j. For i.i.d. unit noise a level-j coefficient has variance
2^(−i+j−1) (eq. C.21) and the base 2^−i, so the ratio is 2^(j−1) (Theorem 4.2).

The square (2-D) extension works on blocks of side B = 2^(i−j+1) with quadrant means
a (top left), b (top right), c (bottom left), d (bottom right): three sub-bands per level,

    left − right  (a − b + c − d) / 4,   top − bottom  (a + b − c − d) / 4,
    diagonal      (a − b − c + d) / 4,

the tensor products of the 1-D detail and mean. Each quadrant mean of i.i.d. unit noise has
variance 4 / B², so every coefficient has variance 4 · (4 / B²) / 16 = 1 / B² = 4^(−i+j−1),
the base (a mean of 4^i pixels) 4^−i, and the ratio is 4^(j−1) = (2^(j−1))²: 2^(j−1) per axis.

Layer 0 of the engine: imports only torch, numpy and engine.errors.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from engine.errors import AtlasError

TRANSFORMS = ("rows", "square")  # 1-D along each row (the last axis), or the 2-D square transform
BASE_COUNT = 20_000  # base-level noise coefficients per ᾱ_t: the ratios' standard error is then about 1%


def next_power_of_two(n: int) -> int:
    return 1 << max(0, math.ceil(math.log2(n)))


def levels_of(side: int) -> int:
    """i for a side of 2^i; an AtlasError for any other side."""
    if side < 1 or side & (side - 1):
        p = next_power_of_two(side)
        raise AtlasError(
            f"The Haar transform needs a side that is a power of two (1, 2, 4, 8, …); this one is {side}. "
            f"Pad or resize it to {p} first (engine.haar.to_power_of_two)."
        )
    return side.bit_length() - 1


def image_levels(x: torch.Tensor) -> int:
    """i for images x (C, H, W) or (N, C, H, W) of side 2^i; an AtlasError for other shapes."""
    if x.ndim not in (3, 4):
        raise AtlasError(f"Expected images (C, H, W) or (N, C, H, W); got a tensor of shape {tuple(x.shape)}.")
    h, w = x.shape[-2:]
    if h != w:
        raise AtlasError(
            f"The Haar projections need a square image; this one is {h}×{w}. Pad or resize it to "
            f"{next_power_of_two(max(h, w))}×{next_power_of_two(max(h, w))} first (engine.haar.to_power_of_two)."
        )
    return levels_of(h)


def to_power_of_two(x: torch.Tensor, how: str = "pad") -> torch.Tensor:
    """Images (C, H, W) or (N, C, H, W) made square with a side that is the next power of two:
    "pad" repeats the edge pixels around the image (centred), "resize" scales it (bilinear)."""
    if x.ndim not in (3, 4):
        raise AtlasError(f"Expected images (C, H, W) or (N, C, H, W); got a tensor of shape {tuple(x.shape)}.")
    h, w = x.shape[-2:]
    side = next_power_of_two(max(h, w))
    batch = x if x.ndim == 4 else x[None]
    if how == "pad":
        top, left = (side - h) // 2, (side - w) // 2
        out = F.pad(batch, (left, side - w - left, top, side - h - top), mode="replicate")
    elif how == "resize":
        out = F.interpolate(batch, size=(side, side), mode="bilinear", align_corners=False, antialias=True)
    else:
        raise AtlasError(f"how must be 'pad' or 'resize'; got {how!r}.")
    return out if x.ndim == 4 else out[0]


def block_means(x: torch.Tensor, level: int) -> torch.Tensor:
    """The means of images x (..., 2^i, 2^i) over blocks of side 2^(i − level): (..., 2^level, 2^level)."""
    side = x.shape[-1]
    n = 1 << level
    b = side // n
    return x.reshape(*x.shape[:-2], n, b, n, b).mean(dim=(-3, -1))


def haar_projection(x: torch.Tensor, level: int) -> torch.Tensor:
    """The orthogonal projection of images x (side 2^i) onto V_{-level}: block means over blocks of
    side 2^(i − level), each repeated over its block (seed000 Fig. 3.1, B.2)."""
    i = image_levels(x)
    if not 0 <= level <= i:
        raise AtlasError(f"level must be in 0 … {i} for a side of {2**i}; got {level}.")
    b = 1 << (i - level)
    return block_means(x, level).repeat_interleave(b, dim=-2).repeat_interleave(b, dim=-1)


def haar_projections(x: torch.Tensor) -> list[torch.Tensor]:
    """Images x of side 2^i projected onto V_0 (1×1), V_{-1} (2×2), …, V_{-i} (x itself), each at full size."""
    return [haar_projection(x, level) for level in range(image_levels(x) + 1)]


def haar_1d(x: torch.Tensor) -> list[torch.Tensor]:
    """The scaled Haar coefficients of x along its last axis (length 2^i), T_i x of seed000
    eq. C.13–C.16: [base (..., 1), level 1 (..., 1), level 2 (..., 2), …, level i (..., 2^(i−1))]."""
    i = levels_of(x.shape[-1])
    means, details = x, []
    for _ in range(i):
        left, right = means[..., 0::2], means[..., 1::2]
        details.append((left - right) / 2)
        means = (left + right) / 2
    return [means, *reversed(details)]


def inverse_haar_1d(coeffs: Sequence[torch.Tensor]) -> torch.Tensor:
    """The signal whose haar_1d coefficients are `coeffs`."""
    means = coeffs[0]
    for detail in coeffs[1:]:
        means = torch.stack([means + detail, means - detail], dim=-1).flatten(-2)
    return means


# Rows: the mean, left − right, top − bottom, diagonal; columns: the quadrants a, b, c, d of a 2×2 block
# in F.pixel_unshuffle's order (top left, top right, bottom left, bottom right). Q Qᵀ = I / 4.
QUADRANTS = torch.tensor([[1.0, 1, 1, 1], [1, -1, 1, -1], [1, 1, -1, -1], [1, -1, -1, 1]]) / 4


def haar_2d(x: torch.Tensor) -> list[torch.Tensor]:
    """The scaled square Haar coefficients of images x (..., 2^i, 2^i): [base (..., 1, 1),
    level j (..., 3, 2^(j−1), 2^(j−1)) for j = 1 … i], sub-bands left − right, top − bottom,
    diagonal (the module's docstring has the formulas)."""
    if x.ndim < 2 or x.shape[-1] != x.shape[-2]:
        raise AtlasError(f"Expected square images (..., H, W) with H = W; got shape {tuple(x.shape)}.")
    i = levels_of(x.shape[-1])
    lead, side = x.shape[:-2], x.shape[-1]
    means, details = x.reshape(-1, 1, side, side), []
    q = QUADRANTS.to(x)
    for _ in range(i):
        out = torch.einsum("kq,mqhw->mkhw", q, F.pixel_unshuffle(means, 2))
        means = out[:, :1]
        details.append(out[:, 1:])
    return [means.reshape(*lead, 1, 1)] + [d.reshape(*lead, *d.shape[1:]) for d in reversed(details)]


def inverse_haar_2d(coeffs: Sequence[torch.Tensor]) -> torch.Tensor:
    """The images whose haar_2d coefficients are `coeffs`."""
    base = coeffs[0]
    lead = base.shape[:-2]
    means = base.reshape(-1, 1, 1, 1)
    q_inv = 4 * QUADRANTS.T.to(base)
    for detail in coeffs[1:]:
        bands = torch.cat([means, detail.reshape(-1, *detail.shape[-3:])], dim=1)
        means = F.pixel_shuffle(torch.einsum("qk,mkhw->mqhw", q_inv, bands), 2)
    return means.reshape(*lead, *means.shape[-2:])


def haar_coefficients(x: torch.Tensor, transform: str) -> list[torch.Tensor]:
    """haar_1d along the rows or haar_2d, by name (TRANSFORMS)."""
    if transform == "rows":
        return haar_1d(x)
    if transform == "square":
        return haar_2d(x)
    raise AtlasError(f"transform must be one of {', '.join(TRANSFORMS)}; got {transform!r}.")


def theory_ratio(levels: int, transform: str) -> np.ndarray:
    """Theorem 4.2's noise variance of levels 0 … levels relative to the base: 1, then 2^(j−1)
    along rows, 4^(j−1) for the square transform."""
    per_axis = np.array([1.0] + [2.0 ** (j - 1) for j in range(1, levels + 1)])
    return per_axis if transform == "rows" else per_axis**2


@dataclass(frozen=True)
class HaarNoise:
    """Theorem 4.2 measured. Arrays (T, L) are per ᾱ_t (rows) and Haar level j = 0 … i (columns)."""

    transform: str
    alpha_bars: np.ndarray  # (T,)
    noise_var: np.ndarray  # (T, L) variance of the level's coefficients of x_t − sqrt(ᾱ_t) x0
    ratio: np.ndarray  # (T, L) noise_var / noise_var of the base level
    ratio_se: np.ndarray  # (T, L) its standard error (delta method)
    theory: np.ndarray  # (L,) 2^(j−1) or 4^(j−1), 1 at the base
    signal_var: np.ndarray  # (T, L) variance over the data of the level's coefficients of sqrt(ᾱ_t) x0
    snr: np.ndarray  # (T, L) signal_var / noise_var
    draws: int  # noise images drawn per ᾱ_t
    base_count: int  # base-level noise coefficients per ᾱ_t

    @property
    def levels(self) -> np.ndarray:
        return np.arange(self.theory.shape[0])


def level_sums_of_squares(coeffs: list[torch.Tensor]) -> torch.Tensor:
    """The sum of squares per level (L,) of a coefficient list, accumulated in float64."""
    return torch.stack([c.square().sum(dtype=torch.float64) for c in coeffs])


def haar_noise(
    x0: torch.Tensor,
    alpha_bars: Sequence[float],
    transform: str = "square",
    base_count: int = BASE_COUNT,
    seed: int = 0,
    chunk: int = 2048,
) -> HaarNoise:
    """The noise and signal variance per Haar level of the DDPM forward process
    x_t = sqrt(ᾱ_t) x0 + sqrt(1 − ᾱ_t) ε (seed000 eq. C.19 with α_t = 1 − ᾱ_t) for clean images
    x0 (N, C, H, W), at each ᾱ_t in `alpha_bars`.

    The noise part x_t − sqrt(ᾱ_t) x0 = sqrt(1 − ᾱ_t) ε is drawn afresh for every ᾱ_t, as many
    images of x0's shape (C, H, W) as give `base_count` base-level coefficients, and its
    variance per level is the mean square of the level's coefficients (ε has mean zero). The
    signal variance of a level is ᾱ_t times the variance over the N images of each of its
    coefficients of x0, averaged over the level's coefficients (sub-bands and channels included).
    """
    if x0.ndim != 4 or x0.shape[0] < 2:
        raise AtlasError(f"x0 must be at least two images (N, C, H, W); got shape {tuple(x0.shape)}.")
    i = image_levels(x0)
    abar = np.asarray(alpha_bars, dtype=np.float64)
    if abar.ndim != 1 or not np.all((abar >= 0) & (abar < 1)):
        raise AtlasError("alpha_bars must be a list of values in [0, 1) (ᾱ_t = 1 is no noise at all).")
    c, h = x0.shape[1], x0.shape[2]
    per_draw = c * (h if transform == "rows" else 1)  # base-level coefficients in one noise image
    draws = math.ceil(base_count / per_draw)
    counts = np.array([cf.numel() for cf in haar_coefficients(x0[:1], transform)], dtype=np.float64) * draws

    signal = np.array([cf.double().var(dim=0).mean().item() for cf in haar_coefficients(x0, transform)])
    gen = torch.Generator().manual_seed(seed)
    unit = np.zeros((len(abar), i + 1))
    for t in range(len(abar)):
        sums = torch.zeros(i + 1, dtype=torch.float64)
        for start in range(0, draws, chunk):
            eps = torch.randn((min(chunk, draws - start), *x0.shape[1:]), generator=gen)
            sums += level_sums_of_squares(haar_coefficients(eps, transform))
        unit[t] = sums.numpy() / counts
    noise_var = (1 - abar)[:, None] * unit
    ratio = noise_var / noise_var[:, :1]
    ratio_se = ratio * np.sqrt(2 / counts[0] + 2 / counts)
    ratio_se[:, 0] = 0.0
    signal_var = abar[:, None] * signal[None]
    return HaarNoise(
        transform=transform,
        alpha_bars=abar,
        noise_var=noise_var,
        ratio=ratio,
        ratio_se=ratio_se,
        theory=theory_ratio(i, transform),
        signal_var=signal_var,
        snr=signal_var / noise_var,
        draws=draws,
        base_count=int(counts[0]),
    )
