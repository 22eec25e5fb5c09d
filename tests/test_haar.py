"""engine/haar.py against independent constructions: the matrix of seed000 eq. C.15 written out
by hand, torch's own pooling, the closed forms of eq. C.21 and Theorem 4.2."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from engine.errors import AtlasError
from engine.haar import (
    haar_1d,
    haar_2d,
    haar_noise,
    haar_projection,
    haar_projections,
    inverse_haar_1d,
    inverse_haar_2d,
    to_power_of_two,
)


def matrix_of(transform, n: int) -> torch.Tensor:
    """The matrix of a linear map on vectors of length n (or n×n images), from the basis vectors."""
    basis = torch.eye(n * n if transform is haar_2d else n, dtype=torch.float64)
    if transform is haar_2d:
        basis = basis.reshape(n * n, n, n)
    return torch.cat([c.reshape(n * n if transform is haar_2d else n, -1) for c in transform(basis)], dim=1).T


def test_the_four_pixel_transform_is_eq_c15():
    lam = 2.0**-2 * torch.diag(torch.tensor([1.0, 1.0, 2.0, 2.0], dtype=torch.float64))
    h = torch.tensor([[1, 1, 1, 1], [1, 1, -1, -1], [1, -1, 0, 0], [0, 0, 1, -1]], dtype=torch.float64)
    assert torch.equal(matrix_of(haar_1d, 4), lam @ h)


@pytest.mark.parametrize("i", [1, 3, 5])
def test_iid_noise_under_t_i_has_the_variance_of_eq_c21(i):
    n = 2**i
    t = matrix_of(haar_1d, n)
    exact = (t**2).sum(dim=1)  # VAR(T ε)_k = ||T_k||² for i.i.d. unit ε (eq. C.22-C.23)
    closed = [2.0**-i] + [2.0 ** (-i + j - 1) for j in range(1, i + 1) for _ in range(2 ** (j - 1))]
    assert torch.allclose(exact, torch.tensor(closed, dtype=torch.float64))
    sampled = (torch.randn(200_000, n, generator=torch.Generator().manual_seed(i), dtype=torch.float64) @ t.T).var(0)
    assert torch.allclose(sampled, exact, rtol=0.02)


@pytest.mark.parametrize("i", [1, 2, 3])
def test_iid_noise_under_the_square_transform_has_variance_4_to_the_minus_i_plus_j_minus_1(i):
    n = 2**i
    exact = (matrix_of(haar_2d, n) ** 2).sum(dim=1)
    closed = [4.0**-i] + [4.0 ** (-i + j - 1) for j in range(1, i + 1) for _ in range(3 * 4 ** (j - 1))]
    assert torch.allclose(exact, torch.tensor(closed, dtype=torch.float64))


def test_the_square_transform_by_hand_on_a_two_by_two_image():
    (base, level1) = haar_2d(torch.tensor([[[1.0, 2.0], [3.0, 5.0]]]))
    assert base.item() == pytest.approx(11 / 4)
    # left − right, top − bottom, diagonal from the quadrants a=1, b=2, c=3, d=5
    assert level1.flatten().tolist() == pytest.approx([(1 - 2 + 3 - 5) / 4, (1 + 2 - 3 - 5) / 4, (1 - 2 - 3 + 5) / 4])


def test_both_transforms_invert():
    x = torch.randn(3, 2, 16, 16, dtype=torch.float64)
    assert torch.allclose(inverse_haar_2d(haar_2d(x)), x)
    assert torch.allclose(inverse_haar_1d(haar_1d(x)), x)


def test_the_coefficients_are_pooling_consistent():
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    pooled = F.avg_pool2d(x, 4)  # 4×4: levels 0 … 2
    for mine, theirs in zip(haar_2d(x)[:3], haar_2d(pooled)):
        assert torch.allclose(mine, theirs)
    rows = F.avg_pool1d(x.reshape(-1, 1, 16), 2).reshape(2, 3, 16, 8)
    for mine, theirs in zip(haar_1d(x)[:4], haar_1d(rows)):
        assert torch.allclose(mine, theirs)


def test_projection_is_average_pooling_then_nearest_upsampling():
    x = torch.rand(4, 3, 32, 32, dtype=torch.float64)
    for level, projected in enumerate(haar_projections(x)):
        k = 2 ** (5 - level)
        expected = F.interpolate(F.avg_pool2d(x, k), scale_factor=k, mode="nearest")
        assert torch.allclose(projected, expected)
    assert torch.equal(haar_projections(x)[-1], x)


@pytest.mark.parametrize("level", [0, 1, 2, 3])
def test_projections_are_idempotent_and_orthogonal(level):
    g = torch.Generator().manual_seed(level)
    x, y = torch.randn(2, 1, 8, 8, generator=g, dtype=torch.float64)
    p = haar_projection(x, level)
    assert torch.allclose(haar_projection(p, level), p)
    assert (x - p).flatten() @ haar_projection(y, level).flatten() == pytest.approx(0.0, abs=1e-12)


def test_a_side_that_is_not_a_power_of_two_is_refused_with_what_to_do():
    x = torch.rand(1, 28, 28)
    with pytest.raises(AtlasError, match=r"28.*32"):
        haar_projections(x)
    with pytest.raises(AtlasError, match="square"):
        haar_projections(torch.rand(1, 16, 8))
    padded = to_power_of_two(x)
    assert padded.shape == (1, 32, 32)
    assert torch.equal(padded[:, 2:30, 2:30], x)
    assert to_power_of_two(x[None], how="resize").shape == (1, 1, 32, 32)


@pytest.mark.parametrize("transform, base", [("rows", 2.0), ("square", 4.0)])
def test_the_measured_noise_ratios_are_theorem_4_2(transform, base):
    x0 = torch.rand(50, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    result = haar_noise(x0, [0.99, 0.5, 0.01], transform, seed=1)
    theory = np.array([1.0] + [base ** (j - 1) for j in range(1, 5)])
    assert np.array_equal(result.theory, theory)
    assert np.all(np.abs(result.ratio / theory - 1) < 0.05), result.ratio
    assert np.all(result.ratio_se[:, 1:] / theory[1:] < 0.02)  # the estimate is good to well under 5%
    assert np.allclose(
        result.noise_var[:, 1] / (1 - result.alpha_bars), 2.0**-4 / (1 if base == 2 else 2**4), rtol=0.05
    )


def test_signal_and_snr_per_level():
    # images that differ only in their mean: all their signal lies in the base level
    levels = torch.linspace(0, 1, 20)[:, None, None, None]
    x0 = levels.expand(20, 1, 8, 8).clone()
    result = haar_noise(x0, [0.9], "square", base_count=2000)
    assert result.signal_var[0, 0] == pytest.approx(0.9 * levels.var().item())
    assert np.allclose(result.signal_var[0, 1:], 0.0)
    assert np.allclose(result.snr, result.signal_var / result.noise_var)
    assert math.isclose(result.noise_var[0, 0], 0.1 * 4.0**-3, rel_tol=0.1)
