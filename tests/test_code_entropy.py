"""Worst-case entropies of rVQ and softmax categoricals (seed001 Theorems 3.1, 3.2, App. B.4),
checked against references that do not share the closed form: torch's and scipy's entropies of
explicitly built categoricals, high-precision mpmath, and a small-d expansion of the simulation."""

import math

import mpmath
import numpy as np
import pytest
import torch
from scipy.stats import entropy as scipy_entropy

from engine.diagnostics.code_entropy import (
    entropy_curves,
    relative_error,
    rvq_worst_entropy,
    rvq_worst_entropy_approx,
    simulated_rvq_entropy,
    softmax_worst_entropy,
    softmax_worst_entropy_approx,
)
from engine.errors import AtlasError

pytestmark = pytest.mark.usefixtures("one_thread")


def rvq_logits(d: float, delta: float, codes: int) -> torch.Tensor:
    """-½‖e - E_k‖² for the worst arrangement built as vectors in R^3 (seed001 eq. B.7)."""
    v = torch.tensor([0.6, -0.48, 0.64], dtype=torch.float64)  # a unit direction
    e = torch.tensor([1.0, 2.0, -3.0], dtype=torch.float64)
    codebook = torch.stack([e + d * v] + [e + (d + delta) * v] * (codes - 1))  # (codes, 3)
    return -0.5 * ((e - codebook) ** 2).sum(-1)


def mp_entropy(x: float, codes: int) -> float:
    """Entropy of softmax(0, -x, ..., -x) as -Σ π log π, with 40 digits to spare after the
    cancellation in log π_1 ≈ -(K - 1) e^-x."""
    with mpmath.workdps(40 + int(x / math.log(10))):
        x = mpmath.mpf(x)
        z = 1 + (codes - 1) * mpmath.exp(-x)
        top, rest = 1 / z, mpmath.exp(-x) / z
        return float(-top * mpmath.log(top) - (codes - 1) * rest * mpmath.log(rest))


@pytest.mark.parametrize("codes", [2, 7, 256])
@pytest.mark.parametrize("delta", [0.3, 1.0, 2.5])
def test_rvq_exact_matches_torch_on_built_codebooks(codes, delta):
    d = np.array([0.0, 0.4, 1.0, 2.0, 5.0, 8.0])
    # torch sums -π log π, which keeps only absolute precision once H is small: hence atol
    reference = [torch.distributions.Categorical(logits=rvq_logits(x, delta, codes)).entropy().item() for x in d]
    np.testing.assert_allclose(rvq_worst_entropy(d, delta, codes), reference, rtol=1e-11, atol=1e-14)


@pytest.mark.parametrize("codes", [2, 16, 256])
def test_softmax_exact_matches_scipy_for_any_shift(codes):
    l = np.array([0.0, 0.5, 1.0, 3.0, 6.0, 9.0])
    for c in (-4.0, 0.0, 3.7):  # the exact entropy does not depend on c
        probabilities = [torch.softmax(torch.tensor([c + x] + [c] * (codes - 1), dtype=torch.float64), 0) for x in l]
        np.testing.assert_allclose(
            softmax_worst_entropy(l, codes), [scipy_entropy(p.numpy()) for p in probabilities], rtol=1e-11
        )
    assert softmax_worst_entropy(0.0, codes) == pytest.approx(math.log(codes), rel=1e-14)


def test_exact_entropies_keep_precision_when_tiny():
    """Against mpmath where H runs from ~1e-10 to ~1e-100 (d = 240 gives H ≈ 1e-99)."""
    d = np.array([10.0, 20.0, 30.0, 120.0, 240.0])
    rvq, softmax = rvq_worst_entropy(d), softmax_worst_entropy(d)
    assert 1e-101 < rvq[-1] < 1e-97
    np.testing.assert_allclose(rvq, [mp_entropy(x + 0.5, 256) for x in d], rtol=1e-13)
    np.testing.assert_allclose(softmax, [mp_entropy(x, 256) for x in d], rtol=1e-13)


def test_approximations_are_eqs_b21_and_b33():
    d, delta, codes = np.array([0.0, 3.0, 12.0]), 0.7, 64
    b21 = (codes - 1) * np.exp(-0.5 * (delta**2 + 2 * delta * d)) * (1 + 0.5 * (delta**2 + 2 * delta * d))
    np.testing.assert_allclose(rvq_worst_entropy_approx(d, delta, codes), b21, rtol=1e-14)
    np.testing.assert_allclose(softmax_worst_entropy_approx(d, codes), (codes - 1) * np.exp(-d) * (1 + d), rtol=1e-14)


def test_approximation_error_is_the_second_order_term():
    """For inputs in [10, 30] the relative error is t (x + ½)/(1 + x), t = (K - 1) e^-x, to O(t):
    about 1e-2 at 10 and 1e-11 at 30 for K = 256."""
    d = np.linspace(10.0, 30.0, 81)
    for x, exact, approx in (
        (d + 0.5, rvq_worst_entropy(d), rvq_worst_entropy_approx(d)),
        (d, softmax_worst_entropy(d), softmax_worst_entropy_approx(d)),
    ):
        t = 255 * np.exp(-x)
        predicted = t * (x + 0.5) / (1 + x)
        np.testing.assert_allclose(relative_error(exact, approx), predicted, rtol=0.03)


def test_approximations_within_1e_5_where_the_dropped_term_allows():
    """Relative error < 1e-5 for inputs in [18, 30] at K = 256. Below ~17 the O(t²) term alone
    is larger (App. B.4.3's "≈ 1e-6 for inputs > 10" is not reachable; see the module)."""
    d = np.linspace(18.0, 30.0, 121)
    assert relative_error(rvq_worst_entropy(d), rvq_worst_entropy_approx(d)).max() < 1e-5
    assert relative_error(softmax_worst_entropy(d), softmax_worst_entropy_approx(d)).max() < 1e-5
    assert relative_error(softmax_worst_entropy(10.0), softmax_worst_entropy_approx(10.0)) > 1e-3


def test_corollary_3_2_1():
    """rVQ at d against softmax at ℓ = d (c = 0): higher for δ < 1 once d > δ²/(2(1 - δ)), lower for δ >= 1."""
    d = np.linspace(5.0, 40.0, 36)
    for delta in (0.3, 0.5, 0.9):
        assert np.all(rvq_worst_entropy(d, delta) > softmax_worst_entropy(d))
        assert rvq_worst_entropy(0.0, delta) < softmax_worst_entropy(0.0)
    for delta in (1.0, 1.5):
        assert np.all(rvq_worst_entropy(d, delta) < softmax_worst_entropy(d))


def test_simulation_stays_above_the_worst_case():
    d = np.linspace(0.0, 30.0, 31)
    mean, minimum = simulated_rvq_entropy(d, n=200)
    worst = rvq_worst_entropy(d)
    assert np.all(minimum >= worst) and np.all(mean >= minimum - 1e-12)  # equal at d = 0, up to rounding
    assert mean[0] == pytest.approx(math.log(256), rel=1e-14)
    assert np.all(np.diff(mean) < 0)  # less entropy further out, as in Fig. B.5


def test_simulation_geometry_at_small_d():
    """For small d, H ≈ log K - ½ Var_k(d E_k·v), and E Var = d² r² / dim · (K - 1)/K for codes
    uniform on the sphere of radius r: checks the radius and dimension of the codebooks."""
    d, codes, dim, radius = 0.2, 256, 32, 0.5
    mean, _ = simulated_rvq_entropy([d], codes=codes, dim=dim, radius=radius, n=200)
    deficit = 0.5 * d**2 * radius**2 / dim * (codes - 1) / codes
    assert math.log(codes) - mean[0] == pytest.approx(deficit, rel=0.05)


def test_simulation_draws_the_same_codebooks_for_any_grid():
    grid_mean, grid_min = simulated_rvq_entropy([1.0, 5.0, 9.0], n=300, seed=3)
    mean, minimum = simulated_rvq_entropy(5.0, n=300, seed=3)
    assert mean.shape == () and mean == pytest.approx(grid_mean[1], rel=1e-12)
    assert minimum == pytest.approx(grid_min[1], rel=1e-12)
    assert simulated_rvq_entropy(5.0, n=300, seed=4)[0] != mean


def test_entropy_curves():
    curves = entropy_curves(d_max=40.0, points=41, delta=0.5, codes=32, simulate=50)
    assert curves.d[0] == 0.0 and curves.d[-1] == 40.0 and curves.d.shape == (41,)
    np.testing.assert_array_equal(curves.softmax, softmax_worst_entropy(curves.d, 32))
    np.testing.assert_array_equal(curves.rvq_approx, rvq_worst_entropy_approx(curves.d, 0.5, 32))
    assert curves.simulated_mean.shape == curves.simulated_min.shape == (41,)
    assert curves.rvq_relative_error[-1] < 1e-6 and curves.softmax_relative_error[-1] < 1e-13
    plain = entropy_curves(points=5)
    assert plain.simulated == 0 and plain.simulated_mean is None


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: rvq_worst_entropy(1.0, codes=1), "codes must be an integer >= 2"),
        (lambda: rvq_worst_entropy(1.0, codes=2.5), "codes must be an integer"),
        (lambda: rvq_worst_entropy(1.0, delta=0.0), "delta must be a finite number > 0"),
        (lambda: rvq_worst_entropy(1.0, delta=float("nan")), "delta must be a finite number > 0"),
        (lambda: rvq_worst_entropy([1.0, -2.0]), "d must be finite and >= 0"),
        (lambda: rvq_worst_entropy_approx([np.inf]), "d must be finite and >= 0"),
        (lambda: softmax_worst_entropy("big"), "l must be numbers"),
        (lambda: softmax_worst_entropy_approx(-1.0), "l must be finite and >= 0"),
        (lambda: simulated_rvq_entropy([1.0], n=10**6), "use n <= 122,070"),
        (lambda: simulated_rvq_entropy([1.0], n=0), "n must be an integer >= 1"),
        (lambda: simulated_rvq_entropy([1.0], radius=-0.5), "radius must be a finite number > 0"),
        (lambda: simulated_rvq_entropy([1.0], dim=0), "dim must be an integer >= 1"),
        (lambda: simulated_rvq_entropy([1.0], codes=2**20, dim=8, n=1), "use fewer codes or dimensions"),
        (lambda: relative_error([1.0, 2.0], [1.0]), "must have one shape"),
        (lambda: entropy_curves(d_max=0.0), "d_max must be a finite number > 0"),
        (lambda: entropy_curves(points=1), "points must be an integer >= 2"),
        (lambda: entropy_curves(simulate=-1), "simulate must be an integer >= 0"),
    ],
)
def test_bad_inputs_say_what_to_do(call, message):
    with pytest.raises(AtlasError, match=message):
        call()
