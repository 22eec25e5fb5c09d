"""Gabor fits, the localisation rule and the field gallery (engine.diagnostics.receptive_fields)."""

from __future__ import annotations

import math
import time
from dataclasses import replace

import numpy as np
import pytest
import torch

from engine.diagnostics.receptive_fields import (
    GaborFit,
    classify_fields,
    field_gallery,
    fit_gabor,
    fit_gabors,
    gabor,
    is_localised_gabor,
)
from engine.errors import AtlasError


def angle_gap(a: float, b: float, period: float) -> float:
    return abs((a - b + period / 2) % period - period / 2)


def test_gabor_follows_the_formula_with_x_the_column():
    # theta = 0: the carrier varies along x (columns) only; along the centre column it is cos(phase)
    x0, y0, scale, wavelength, phase, amplitude = 10.0, 8.0, 3.0, 5.0, 0.3, 2.0
    g = gabor(20, (x0, y0, scale, wavelength, 0.0, phase, amplitude))
    assert g.shape == (20, 20)
    x, y = 13, 6  # row 6, column 13
    r2 = (x - x0) ** 2 + (y - y0) ** 2
    expected = amplitude * math.exp(-r2 / (2 * scale**2)) * math.cos(2 * math.pi * (x - x0) / wavelength + phase)
    assert g[y, x] == pytest.approx(expected)
    column = g[:, int(x0)] / np.exp(-((np.arange(20) - y0) ** 2) / (2 * scale**2))
    np.testing.assert_allclose(column, amplitude * math.cos(phase))
    # theta = π/2 is the same Gabor turned a quarter: it varies along y (rows)
    turned = gabor(20, (10.0, 10.0, scale, wavelength, math.pi / 2, phase, amplitude))
    upright = gabor(20, (10.0, 10.0, scale, wavelength, 0.0, phase, amplitude))
    np.testing.assert_allclose(turned, upright.T, atol=1e-12)


CLEAN = [
    (8.3, 11.1, 3.5, 5.0, 2.5, 0.7, 1.3),
    (10.0, 9.0, 4.0, 4.0, 0.1, -2.0, 0.5),
    (12.6, 7.4, 2.5, 6.0, 1.6, 3.0, 3.0),
    (9.5, 9.5, 5.0, 8.0, 0.8, 0.0, 1.0),
]


@pytest.mark.parametrize("params", CLEAN)
def test_fit_recovers_a_clean_gabor(params):
    fit = fit_gabor(gabor(20, params))
    x0, y0, scale, wavelength, theta, phase, amplitude = params
    assert fit.r2 > 0.9999
    assert (fit.x0, fit.y0) == (pytest.approx(x0, abs=1e-3), pytest.approx(y0, abs=1e-3))
    assert fit.scale == pytest.approx(scale, rel=1e-3)
    assert fit.wavelength == pytest.approx(wavelength, rel=1e-3)
    assert fit.frequency == pytest.approx(1 / wavelength, rel=1e-3)
    assert angle_gap(fit.theta, theta, math.pi) < 1e-3
    assert angle_gap(fit.phase, phase, 2 * math.pi) < 1e-3
    assert fit.amplitude == pytest.approx(amplitude, rel=1e-3)


@pytest.mark.parametrize("params", CLEAN)
def test_fit_recovers_a_noisy_gabor(params):
    rng = np.random.default_rng(1)
    x0, y0, scale, wavelength, theta, _, amplitude = params
    field = gabor(20, params) + 0.1 * amplitude * rng.standard_normal((20, 20))
    fit = fit_gabor(torch.from_numpy(field))  # torch tensors are read too
    assert fit.r2 > 0.6
    assert abs(fit.x0 - x0) < 0.5 and abs(fit.y0 - y0) < 0.5
    assert fit.scale == pytest.approx(scale, rel=0.15)
    assert fit.wavelength == pytest.approx(wavelength, rel=0.08)
    assert angle_gap(fit.theta, theta, math.pi) < 0.08


def test_white_noise_is_explained_poorly():
    rng = np.random.default_rng(2)
    r2 = [fit_gabor(rng.standard_normal((20, 20))).r2 for _ in range(5)]
    assert max(r2) < 0.3


def test_orientation_is_reported_modulo_pi_with_the_phase_flipped():
    x0, y0, scale, wavelength, theta, phase, amplitude = 9.0, 10.0, 3.0, 5.0, 0.6, 1.1, 1.0
    turned = fit_gabor(gabor(20, (x0, y0, scale, wavelength, theta + math.pi, phase, amplitude)))
    # (θ + π, φ) and (θ, -φ) are the same function
    assert turned.theta == pytest.approx(theta, abs=1e-4)
    assert turned.phase == pytest.approx(-phase, abs=1e-4)
    negative = fit_gabor(gabor(20, (x0, y0, scale, wavelength, theta, phase, -amplitude)))
    assert negative.amplitude == pytest.approx(amplitude, rel=1e-4)
    assert angle_gap(negative.phase, phase + math.pi, 2 * math.pi) < 1e-4
    for fit in (turned, negative):
        assert 0 <= fit.theta < math.pi and -math.pi < fit.phase <= math.pi


def test_fit_stays_inside_its_bounds_and_handles_a_flat_field():
    rng = np.random.default_rng(3)
    for fit in fit_gabors(rng.standard_normal((6, 20, 20))):
        assert 0 <= fit.x0 <= 19 and 0 <= fit.y0 <= 19
        assert 0.5 <= fit.scale <= 20 and 2 <= fit.wavelength <= 40
    assert fit_gabor(np.zeros((20, 20))).r2 == 0.0
    with pytest.raises(AtlasError, match="2-D"):
        fit_gabor(np.zeros(20))
    with pytest.raises(AtlasError, match="NaN"):
        fit_gabor(np.full((20, 20), np.nan))


GOOD = GaborFit(x0=9.0, y0=9.0, scale=4.0, wavelength=4.0, theta=0.5, phase=0.0, amplitude=1.0, r2=0.9)


@pytest.mark.parametrize(
    ("change", "passes"),
    [
        # centre between the 6th and 14th pixel: 0-based 5..13, inclusive
        ({"x0": 5.0}, True),
        ({"x0": 4.99}, False),
        ({"x0": 13.0}, True),
        ({"x0": 13.01}, False),
        ({"y0": 5.0}, True),
        ({"y0": 4.99}, False),
        ({"y0": 13.0}, True),
        ({"y0": 13.01}, False),
        # scale 3-6, inclusive
        ({"scale": 3.0}, True),
        ({"scale": 2.99}, False),
        ({"scale": 6.0}, True),
        ({"scale": 6.01}, False),
        # wavelength > 2 and frequency > 0.18 (wavelength < 5.56)
        ({"wavelength": 2.0}, False),
        ({"wavelength": 2.01}, True),
        ({"wavelength": 5.5}, True),
        ({"wavelength": 1 / 0.18}, False),
        # fit quality
        ({"r2": 0.5}, True),
        ({"r2": 0.49}, False),
    ],
)
def test_localisation_thresholds(change, passes):
    assert is_localised_gabor(replace(GOOD, **change), size=20) is passes


def test_localisation_scales_centre_and_scale_but_not_wavelength():
    # size 40: centre 1-based pixels 12..28 (0-based 11..27), scale 6..12, wavelength still in (2, 5.56)
    big = replace(GOOD, x0=19.0, y0=19.0, scale=8.0)
    assert is_localised_gabor(big, size=40)
    assert not is_localised_gabor(big, size=20)  # scale 8 is too wide for a 20 x 20 patch
    assert is_localised_gabor(replace(big, x0=11.0, y0=27.0), size=40)
    assert not is_localised_gabor(replace(big, x0=10.9), size=40)
    assert not is_localised_gabor(replace(big, scale=5.9), size=40)
    assert not is_localised_gabor(replace(big, wavelength=6.0), size=40)
    assert is_localised_gabor(replace(big, r2=0.3), size=40, min_r2=0.2)


def test_classify_fields():
    fits = [
        GOOD,
        replace(GOOD, r2=0.2),  # explained poorly
        replace(GOOD, scale=9.0),  # half-maximum width 21 px > 20
        replace(GOOD, x0=1.0),  # a good Gabor near the border
        replace(GOOD, wavelength=8.0),  # too low a frequency
        replace(GOOD, x0=10.0),
    ]
    classes = classify_fields(fits, size=20)
    assert classes.labels == ["localised", "non-localised", "non-localised", "other", "other", "localised"]
    assert classes.counts == {"localised": 2, "non-localised": 2, "other": 2}
    np.testing.assert_array_equal(classes.units("localised"), [0, 5])


def reference_gallery(fields, columns, pad, upscale, line=128):
    """The gallery built pixel by pixel, to check the vectorised one against."""
    n, h, w = fields.shape
    rows = math.ceil(n / columns)
    th, tw = h * upscale, w * upscale
    out = np.full((rows * (th + pad) + pad, columns * (tw + pad) + pad), line, dtype=np.uint8)
    for k in range(n):
        r, c = divmod(k, columns)
        peak = np.abs(fields[k]).max()
        for y in range(th):
            for x in range(tw):
                v = fields[k, y // upscale, x // upscale] / peak if peak > 0 else 0.0
                out[pad + r * (th + pad) + y, pad + c * (tw + pad) + x] = round(128 + 127 * v)
    return out


def test_gallery_layout_grey_levels_and_padding():
    rng = np.random.default_rng(4)
    fields = rng.standard_normal((7, 3, 4))
    fields[1] = -fields[0]
    fields[2] = 0.0
    img = field_gallery(fields, columns=3, pad=1)
    assert img.dtype == np.uint8 and img.shape == (3 * 4 + 1, 3 * 5 + 1)
    np.testing.assert_array_equal(img, reference_gallery(fields, 3, 1, 1))
    # grid lines (rows 0, 4, 8, 12 and columns 0, 5, 10, 15) and the two empty cells are mid grey
    assert (img[[0, 4, 8, 12], :] == 128).all() and (img[:, [0, 5, 10, 15]] == 128).all()
    assert (img[9:12, 6:15] == 128).all()
    # a zero field is mid grey; each field's largest |value| is white (positive) or black (negative)
    tile0, tile1, tile2 = img[1:4, 1:5].astype(int), img[1:4, 6:10].astype(int), img[1:4, 11:15]
    assert (tile2 == 128).all()
    assert tile0.max() == 255 or tile0.min() == 1
    np.testing.assert_array_equal(tile0 - 128, -(tile1 - 128))  # a field and its negative mirror about grey
    clear = np.abs(fields[0]) > np.abs(fields[0]).max() / 100  # away from the rounding to grey
    assert (tile0[clear & (fields[0] > 0)] > 128).all() and (tile0[clear & (fields[0] < 0)] < 128).all()


def test_gallery_upscale_pad_and_columns():
    rng = np.random.default_rng(5)
    fields = rng.standard_normal((5, 2, 3))
    img = field_gallery(torch.from_numpy(fields), columns=2, pad=2, upscale=3, line=0)
    np.testing.assert_array_equal(img, reference_gallery(fields, 2, 2, 3, line=0))
    assert img.shape == (3 * (6 + 2) + 2, 2 * (9 + 2) + 2)
    assert field_gallery(fields).shape == (2 * 3 + 1, 3 * 4 + 1)  # default: ceil(sqrt(5)) = 3 columns, 2 rows
    assert field_gallery(fields, pad=0).shape == (2 * 2, 3 * 3)
    with pytest.raises(AtlasError, match="upscale"):
        field_gallery(fields, upscale=0)
    with pytest.raises(AtlasError, match="n, height, width"):
        field_gallery(fields[0])


def test_gallery_of_450_fields_is_fast():
    fields = np.random.default_rng(6).standard_normal((450, 20, 20))
    start = time.perf_counter()
    img = field_gallery(fields, upscale=2)
    assert time.perf_counter() - start < 0.5
    assert img.shape == (21 * (40 + 1) + 1, 22 * (40 + 1) + 1)  # 22 columns, 21 rows
