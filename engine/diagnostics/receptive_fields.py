"""Gabor fits of receptive (projective) fields and a gallery to look at them.

A sparse-coding VAE's z1 units have projective fields W[:, j] (seed003_004 §2.9: the
decoder is linear, so a latent traversal of unit j gives 2c · W[:, j]). The thesis counts
the active units "giving localised Gabor-like filters" and selects Gabor units for the
correlation study by a localisation rule (seed003_004 §2.10, thesis Fig. 5.24).

The Gabor used here has an isotropic envelope (one scale, no aspect ratio):

    g(x, y) = amplitude · exp(-(x'² + y'²) / (2 scale²)) · cos(2π x' / wavelength + phase),
    x' =  (x - x0) cos θ + (y - y0) sin θ,
    y' = -(x - x0) sin θ + (y - y0) cos θ,

with x the column index and y the row index, both 0-based, so θ = 0 is a grating whose
stripes run along the columns (it varies along x). `scale` is the envelope's standard
deviation in pixels. Because the envelope is isotropic, (θ + π, phase) is the same
function as (θ, -phase), and (amplitude, phase) the same as (-amplitude, phase + π); fits
are reported with θ in [0, π), amplitude >= 0 and phase in (-π, π].

Everything here takes numpy arrays or torch tensors of fields, not models.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy.ndimage import gaussian_filter
from scipy.optimize import least_squares

from engine.errors import AtlasError
from engine.models.cluster_accuracy import ArrayLike, to_numpy

# thesis Fig. 5.24, for 20 x 20 patches: centre between the 6th and 14th pixel (counted
# from 1, i.e. 0-based coordinates 5..13), scale 3-6, wavelength > 2, frequency > 0.18
LOCALISATION = {
    "centre_pixels": (6.0, 14.0),  # 1-based pixel numbers, inclusive
    "scale": (3.0, 6.0),  # pixels, inclusive
    "min_wavelength": 2.0,  # pixels, strict
    "min_frequency": 0.18,  # cycles per pixel, strict
    "patch_size": 20,
}
# a Gabor that explains less than half of a field's variance is not "Gabor-like"
MIN_R2 = 0.5
# full width at half maximum of the envelope per unit of scale: 2 sqrt(2 ln 2)
FWHM_PER_SCALE = 2.0 * math.sqrt(2.0 * math.log(2.0))

FieldLabel = Literal["localised", "non-localised", "other"]
PHASE_STARTS = 4


@dataclass(frozen=True)
class GaborFit:
    """A fitted Gabor (see the module docstring); pixels, radians, and the fit quality."""

    x0: float  # centre column, 0-based
    y0: float  # centre row, 0-based
    scale: float  # envelope standard deviation, pixels
    wavelength: float  # pixels per cycle
    theta: float  # orientation of the carrier's wave vector, [0, π)
    phase: float  # (-π, π]
    amplitude: float  # >= 0
    r2: float  # fraction of the field's variance (about its mean) explained by the fit

    @property
    def frequency(self) -> float:
        """Spatial frequency, cycles per pixel."""
        return 1.0 / self.wavelength

    def params(self) -> tuple[float, ...]:
        return (self.x0, self.y0, self.scale, self.wavelength, self.theta, self.phase, self.amplitude)


def _gabor_on_grid(xx: np.ndarray, yy: np.ndarray, p) -> np.ndarray:
    x0, y0, scale, wavelength, theta, phase, amplitude = p
    dx, dy = xx - x0, yy - y0
    c, s = math.cos(theta), math.sin(theta)
    xr = dx * c + dy * s
    yr = -dx * s + dy * c
    return amplitude * np.exp(-(xr**2 + yr**2) / (2.0 * scale**2)) * np.cos(2.0 * math.pi * xr / wavelength + phase)


def _gabor_jacobian(xx: np.ndarray, yy: np.ndarray, p) -> np.ndarray:
    """d g / d (x0, y0, scale, wavelength, theta, phase, amplitude), shape (pixels, 7)."""
    x0, y0, scale, wavelength, theta, phase, amplitude = p
    dx, dy = (xx - x0).ravel(), (yy - y0).ravel()
    c, s = math.cos(theta), math.sin(theta)
    xr = dx * c + dy * s
    yr = -dx * s + dy * c
    k = 2.0 * math.pi / wavelength
    env = np.exp(-(xr**2 + yr**2) / (2.0 * scale**2))
    cos, sin = np.cos(k * xr + phase), np.sin(k * xr + phase)
    a_env = amplitude * env
    return np.stack(
        [
            a_env * ((xr * c - yr * s) / scale**2 * cos + k * c * sin),
            a_env * ((xr * s + yr * c) / scale**2 * cos + k * s * sin),
            a_env * cos * (xr**2 + yr**2) / scale**3,
            a_env * sin * k * xr / wavelength,
            -a_env * sin * k * yr,
            -a_env * sin,
            env * cos,
        ],
        axis=1,
    )


def gabor(size: int, params: GaborFit | tuple | list | np.ndarray) -> np.ndarray:
    """The Gabor of the module docstring on a (size, size) grid.

    params: a GaborFit, or (x0, y0, scale, wavelength, theta, phase, amplitude).
    """
    p = params.params() if isinstance(params, GaborFit) else tuple(float(v) for v in params)
    if len(p) != 7:
        raise AtlasError(f"a Gabor has 7 parameters (x0, y0, scale, wavelength, theta, phase, amplitude), got {len(p)}")
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    return _gabor_on_grid(xx, yy, p)


def _canonical(p: np.ndarray) -> tuple[float, ...]:
    """θ in [0, π), amplitude >= 0, phase in (-π, π] for the same function."""
    x0, y0, scale, wavelength, theta, phase, amplitude = (float(v) for v in p)
    if amplitude < 0:
        amplitude, phase = -amplitude, phase + math.pi
    turns = math.floor(theta / math.pi)
    theta -= turns * math.pi
    if turns % 2:  # an odd number of half turns flips x', hence the phase
        phase = -phase
    phase = math.pi - (math.pi - phase) % (2.0 * math.pi)
    return x0, y0, scale, wavelength, theta, phase, amplitude


def _start(field: np.ndarray, xx: np.ndarray, yy: np.ndarray) -> tuple[float, float, float, float, float]:
    """Centre, scale, wavelength and orientation to start the fit from."""
    h, w = field.shape
    # carrier: the peak of the 2-D FFT amplitude (zero-padded for a finer frequency grid)
    pad = 4 * max(h, w)
    spectrum = np.abs(np.fft.fft2(field - field.mean(), s=(pad, pad)))
    spectrum[0, 0] = 0.0
    ky, kx = np.unravel_index(np.argmax(spectrum), spectrum.shape)
    fy, fx = np.fft.fftfreq(pad)[ky], np.fft.fftfreq(pad)[kx]  # cycles per pixel
    freq = math.hypot(fx, fy)
    wavelength = 1.0 / freq if freq > 0 else 2.0 * max(h, w)
    theta = math.atan2(fy, fx)
    # centre: the peak of the local energy, field² smoothed over about half a wavelength
    energy = gaussian_filter(field**2, sigma=max(1.0, wavelength / 2.0), mode="constant")
    cy, cx = np.unravel_index(np.argmax(energy), energy.shape)
    # scale: for an envelope exp(-r²/2s²), field² weights r² to a mean of s²
    f2 = field**2
    r2 = (xx - cx) ** 2 + (yy - cy) ** 2
    scale = math.sqrt((f2 * r2).sum() / f2.sum()) if f2.sum() > 0 else 1.0
    return float(cx), float(cy), float(np.clip(scale, 1.0, max(h, w) / 2.0)), wavelength, theta


def fit_gabor(field: ArrayLike) -> GaborFit:
    """Least-squares Gabor fit of one field (h, w).

    Start: the carrier's wavelength and orientation from the peak of the field's 2-D FFT
    amplitude; the centre from the peak of the smoothed energy field²; the scale from the
    energy's spread about that centre; phase and amplitude from the linear least-squares
    fit of the cosine and sine carriers under that envelope. From this start
    scipy.optimize.least_squares is run from PHASE_STARTS phases (the linear one plus
    quarter turns) and the best fit kept. Bounds keep the centre inside the patch, the
    scale in [0.5, size] and the wavelength in [2, 2 size] (size = max(h, w)).
    """
    f = to_numpy(field, "field").astype(np.float64)
    if f.ndim != 2 or min(f.shape) < 2:
        raise AtlasError(f"a field must be a 2-D array (height, width) of at least 2 x 2, got shape {f.shape}")
    if not np.isfinite(f).all():
        raise AtlasError("the field holds NaN or infinite values; fit finite fields only")
    h, w = f.shape
    size = max(h, w)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    ss_total = float(((f - f.mean()) ** 2).sum())
    if ss_total == 0.0:
        return GaborFit(float((w - 1) / 2), float((h - 1) / 2), float(size), 2.0 * size, 0.0, 0.0, 0.0, 0.0)

    x0, y0, scale, wavelength, theta = _start(f, xx, yy)
    lower = np.array([0.0, 0.0, 0.5, 2.0, -np.inf, -np.inf, -np.inf])
    upper = np.array([w - 1.0, h - 1.0, float(size), 2.0 * size, np.inf, np.inf, np.inf])
    # linear start for phase and amplitude: f ≈ a·env·cos(kx') + b·env·sin(kx'), phase = atan2(-b, a)
    even = _gabor_on_grid(xx, yy, (x0, y0, scale, wavelength, theta, 0.0, 1.0))
    odd = _gabor_on_grid(xx, yy, (x0, y0, scale, wavelength, theta, -math.pi / 2, 1.0))
    (a, b), *_ = np.linalg.lstsq(np.stack([even.ravel(), odd.ravel()], 1), f.ravel(), rcond=None)
    phase0, amplitude0 = math.atan2(b, a), max(math.hypot(a, b), 1e-12)

    flat = f.ravel()

    def residual(p: np.ndarray) -> np.ndarray:
        return _gabor_on_grid(xx, yy, p).ravel() - flat

    best = None
    for k in range(PHASE_STARTS):
        p0 = np.array([x0, y0, scale, wavelength, theta, phase0 + k * 2 * math.pi / PHASE_STARTS, amplitude0])
        p0 = np.clip(p0, lower, upper)
        result = least_squares(
            residual, p0, jac=lambda p: _gabor_jacobian(xx, yy, p), bounds=(lower, upper), method="trf", x_scale="jac"
        )
        if best is None or result.cost < best.cost:
            best = result
    r2 = 1.0 - 2.0 * best.cost / ss_total  # cost is half the sum of squared residuals
    return GaborFit(*_canonical(best.x), r2=float(r2))


def fit_gabors(fields: ArrayLike) -> list[GaborFit]:
    """fit_gabor over fields (n, h, w); about 10 ms a 20 x 20 field on one core (450 in about 5 s)."""
    f = to_numpy(fields, "fields")
    if f.ndim != 3:
        raise AtlasError(f"fields must be an array (n, height, width), got shape {f.shape}")
    return [fit_gabor(one) for one in f]


def localisation_bounds(size: int) -> dict[str, tuple[float, float] | float]:
    """The thesis's localisation rule for a size x size patch, in 0-based coordinates.

    The rule is stated for 20 x 20 patches. For another size the centre band and the scale
    range are scaled by size / 20 (the centre band in 1-based pixel numbers, then shifted to
    0-based coordinates); the wavelength and frequency thresholds are kept in pixels, since
    they say what a resolvable Gabor carrier is, whatever the patch size.
    """
    ratio = size / LOCALISATION["patch_size"]
    lo, hi = LOCALISATION["centre_pixels"]
    s_lo, s_hi = LOCALISATION["scale"]
    return {
        "centre": (lo * ratio - 1.0, hi * ratio - 1.0),
        "scale": (s_lo * ratio, s_hi * ratio),
        "min_wavelength": LOCALISATION["min_wavelength"],
        "min_frequency": LOCALISATION["min_frequency"],
    }


def passes_localisation(fit: GaborFit, size: int) -> bool:
    """The thesis's filter alone (Fig. 5.24), whatever the fit quality."""
    b = localisation_bounds(size)
    c_lo, c_hi = b["centre"]
    s_lo, s_hi = b["scale"]
    return bool(
        c_lo <= fit.x0 <= c_hi
        and c_lo <= fit.y0 <= c_hi
        and s_lo <= fit.scale <= s_hi
        and fit.wavelength > b["min_wavelength"]
        and fit.frequency > b["min_frequency"]
    )


def is_localised_gabor(fit: GaborFit, size: int, min_r2: float = MIN_R2) -> bool:
    """A localised Gabor-like filter: the thesis's localisation filter (Fig. 5.24) and r2 >= min_r2.

    The thesis counts units "giving localised Gabor-like filters"; a field whose Gabor fit
    explains less than half of its variance (default min_r2 = 0.5) is not Gabor-like, even
    when the fitted parameters would pass the filter (a fit to noise lands anywhere).
    """
    return fit.r2 >= min_r2 and passes_localisation(fit, size)


@dataclass
class FieldClasses:
    """Per-unit labels of classify_fields and how many of each."""

    labels: list[FieldLabel]
    counts: dict[FieldLabel, int]

    def units(self, label: FieldLabel) -> np.ndarray:
        """0-based indices of the units with this label."""
        return np.array([i for i, lab in enumerate(self.labels) if lab == label], dtype=np.int64)


def classify_fields(fits: list[GaborFit], size: int, min_r2: float = MIN_R2) -> FieldClasses:
    """Label each fit "localised", "non-localised" or "other" (thesis §5.4, Table 5.5).

    - "localised": is_localised_gabor(fit, size, min_r2);
    - "non-localised": the Gabor explains the field poorly (r2 < min_r2), or its envelope is
      wider than the patch (full width at half maximum 2.355 scale > size);
    - "other": a Gabor-like fit that fails the localisation filter (off-centre, too small or
      too large a scale within the patch, too low a frequency).

    Pass the fits of the active units only if inactive units should not be counted.
    """
    labels: list[FieldLabel] = []
    for fit in fits:
        if is_localised_gabor(fit, size, min_r2):
            labels.append("localised")
        elif fit.r2 < min_r2 or FWHM_PER_SCALE * fit.scale > size:
            labels.append("non-localised")
        else:
            labels.append("other")
    counted = Counter(labels)
    counts: dict[FieldLabel, int] = {lab: counted.get(lab, 0) for lab in ("localised", "non-localised", "other")}
    return FieldClasses(labels=labels, counts=counts)


def field_gallery(
    fields: ArrayLike, columns: int | None = None, pad: int = 1, upscale: int = 1, line: int = 128
) -> np.ndarray:
    """All fields (n, h, w) tiled in a grid, as a uint8 grey image (H, W).

    Each field is scaled by its own max |value|: 0 is mid grey (128), +max white (255),
    -max black (1). Tiles are upscale x upscale pixel blocks, separated and framed by
    `pad`-pixel lines of grey `line` (mid grey by default, so that lines read as neither
    sign); empty grid cells are filled with `line`. columns defaults to ceil(sqrt(n)).
    H = rows (h upscale + pad) + pad, W = columns (w upscale + pad) + pad.
    """
    f = to_numpy(fields, "fields").astype(np.float64)
    if f.ndim != 3 or f.shape[0] == 0:
        raise AtlasError(f"fields must be a non-empty array (n, height, width), got shape {f.shape}")
    if pad < 0 or upscale < 1 or (columns is not None and columns < 1) or not 0 <= line <= 255:
        raise AtlasError(
            f"need pad >= 0, upscale >= 1, columns >= 1 and 0 <= line <= 255; got pad={pad}, "
            f"upscale={upscale}, columns={columns}, line={line}"
        )
    n, h, w = f.shape
    columns = min(columns or math.ceil(math.sqrt(n)), n)
    rows = math.ceil(n / columns)
    peak = np.abs(f).max(axis=(1, 2), keepdims=True)
    scaled = np.divide(f, peak, out=np.zeros_like(f), where=peak > 0)
    tiles = np.full((rows * columns, h, w), line, dtype=np.uint8)
    tiles[:n] = np.rint(128.0 + 127.0 * np.nan_to_num(scaled)).astype(np.uint8)
    if upscale > 1:
        tiles = tiles.repeat(upscale, axis=1).repeat(upscale, axis=2)
    th, tw = h * upscale, w * upscale
    framed = np.full((rows * columns, th + pad, tw + pad), line, dtype=np.uint8)
    framed[:, pad:, pad:] = tiles  # each tile carries the line above and left of it
    grid = framed.reshape(rows, columns, th + pad, tw + pad).transpose(0, 2, 1, 3).reshape(rows * (th + pad), -1)
    return np.pad(grid, ((0, pad), (0, pad)), constant_values=line)
