"""The DCT-II against SciPy's, its inverse, and the facts the DCT-VAE's context relies on."""

from __future__ import annotations

import numpy as np
import scipy.fft
import torch

from engine.dct import dct2, dct_matrix, idct2, idct_matrix


def test_the_transform_is_scipys_unnormalised_dct_ii_along_both_axes():
    x = np.random.default_rng(0).random((3, 2, 7, 10))
    expected = scipy.fft.dct(scipy.fft.dct(x, type=2, axis=-1), type=2, axis=-2)
    assert np.allclose(dct2(torch.from_numpy(x)).numpy(), expected)


def test_the_inverse_inverts_and_matches_scipys_idct():
    f = np.random.default_rng(1).normal(size=(4, 9, 6))
    expected = scipy.fft.idct(scipy.fft.idct(f, type=2, axis=-1), type=2, axis=-2)
    assert np.allclose(idct2(torch.from_numpy(f)).numpy(), expected)
    for n in (1, 2, 7, 16):
        assert torch.allclose(idct_matrix(n) @ dct_matrix(n), torch.eye(n, dtype=torch.float64))


def test_the_first_coefficient_is_the_scaled_mean_and_a_constant_has_no_other():
    x = torch.full((5, 8), 0.3, dtype=torch.float64)
    f = dct2(x)
    assert torch.isclose(f[0, 0], torch.tensor(4 * 5 * 8 * 0.3, dtype=torch.float64))
    f[0, 0] = 0
    assert f.abs().max() < 1e-12


def test_keeping_the_low_frequencies_keeps_a_smooth_image():
    """A low-pass image survives truncation to its low-frequency block; a checkerboard does not."""
    n = 16
    u = torch.arange(n, dtype=torch.float64)
    smooth = torch.outer(torch.cos(np.pi * (u + 0.5) / n), torch.cos(2 * np.pi * (u + 0.5) / n))
    checker = (u[:, None] + u[None, :]) % 2
    for image, kept in ((smooth, True), (checker, False)):
        f = dct2(image)
        f[6:, :] = 0
        f[:, 6:] = 0
        error = (idct2(f) - image).abs().max().item()
        assert (error < 1e-10) == kept
