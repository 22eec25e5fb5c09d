"""r-robustness (seed001 ch. 6): the margin bound, the minimum r and the empirical margin,
checked against a linear-Gaussian VAE where everything has a closed form, against
finite differences, and on the shipped digits VAE."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import demo_model_and_data
from scipy import optimize, stats

from engine.diagnostics.robustness import (
    decoder_noise_trace,
    distortion_norms,
    distortion_quantile,
    empirical_margin,
    encoder_jacobian_norm,
    jacobian_frobenius_sq,
    margin_bound,
    minimum_r,
    robustness_curve,
    robustness_report,
)
from engine.errors import AtlasError
from engine.models.mfcvae import MFCVAE, MFCVAEConfig
from engine.models.vae import VAE, VAEConfig

D, d = 6, 3  # data and latent dimensions of the linear model
SINGULAR = (2.0, 0.5, 0.3)  # of the encoder matrix A


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Hundreds of tiny sequential attack steps: a second thread costs more than it gains
    on a shared 2-core machine (measured: 5-15x slower)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def orthonormal(rows: int, cols: int, seed: int) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(rows, cols, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))
    return q


def linear_vae(A: torch.Tensor, logvar: torch.Tensor, B: torch.Tensor) -> VAE:
    """mu(x) = A x + a, sigma constant (exp(logvar / 2)), g(z) = B z + c."""
    model = VAE(VAEConfig(input_shape=(D,), arch="mlp", hidden=(), latent_dim=d, likelihood="gaussian")).double()
    (enc,) = [m for m in model.encoder.modules() if isinstance(m, torch.nn.Linear)]
    (dec,) = [m for m in model.decoder.modules() if isinstance(m, torch.nn.Linear)]
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        enc.weight.copy_(torch.cat([A, torch.zeros(d, D, dtype=torch.float64)]))
        enc.bias.copy_(torch.cat([torch.randn(d, generator=g, dtype=torch.float64), logvar]))
        dec.weight.copy_(B)
        dec.bias.copy_(torch.randn(D, generator=g, dtype=torch.float64))
    return model.eval()


SIGMA = 0.5
A = orthonormal(d, d, 1) @ torch.diag(torch.tensor(SINGULAR, dtype=torch.float64)) @ orthonormal(D, d, 2).T


@pytest.fixture(scope="module")
def isotropic():
    """Orthonormal decoder columns and equal sigma: ||Delta|| = sigma * ||A delta / sigma + eta||."""
    return linear_vae(A, torch.full((d,), 2 * math.log(SIGMA), dtype=torch.float64), orthonormal(D, d, 3))


def inputs(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, D, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_linear_model_jacobian_and_trace_are_closed_form():
    sigmas = torch.tensor([0.3, 0.8, 1.5], dtype=torch.float64)
    B = torch.randn(D, d, generator=gen(4), dtype=torch.float64)
    model = linear_vae(A, 2 * sigmas.log(), B)
    x = inputs(3)
    assert torch.allclose(encoder_jacobian_norm(model, x), torch.linalg.matrix_norm(A).expand(3), rtol=1e-10)
    trace = (B.pow(2).sum(0) * sigmas.pow(2)).sum()  # ||B diag(sigma)||_F^2
    assert torch.allclose(decoder_noise_trace(model, x), trace.expand(3), rtol=1e-10)


def test_distortion_is_sigma_times_chi_and_the_markov_r_lies_above_the_median(isotropic):
    x = inputs(2)
    norms = distortion_norms(isotropic, x, 4000, gen())
    assert norms.shape == (4000, 2)
    for m in (0.5, 0.9):
        q = distortion_quantile(isotropic, x, m, 4000, gen(1))
        assert torch.allclose(q, torch.tensor(SIGMA * stats.chi.ppf(m, d), dtype=q.dtype), rtol=0.03), (m, q)
    smallest = minimum_r(isotropic, x, 0.5, 4000, gen(2))
    assert torch.allclose(smallest.markov_r, torch.tensor(math.sqrt(2 * d * SIGMA**2), dtype=torch.float64))
    assert (smallest.r < smallest.markov_r).all()  # Markov: the median is at most sqrt(2 Tr Sigma)


def exact_margin(r: float) -> float:
    """||delta|| at which p(||Delta(x, delta)|| <= r) = 0.5 for the worst delta: along A's
    top right-singular vector, ||Delta||^2 / sigma^2 ~ noncentral chi^2(d, (s1 ||delta|| / sigma)^2)."""
    s1 = SINGULAR[0]

    def excess(R):
        return stats.ncx2.cdf((r / SIGMA) ** 2, d, (s1 * R / SIGMA) ** 2) - 0.5

    return optimize.brentq(excess, 1e-9, 10.0)


def test_linear_model_bound_and_empirical_margin_against_the_exact_margin(isotropic):
    x = inputs(3)
    r = SIGMA * math.sqrt(stats.chi2.ppf(0.9, d))  # p(||Delta(x)|| <= r) = 0.9 exactly
    exact = exact_margin(r)
    bound = margin_bound(isotropic, x, r, 2000, gen())
    assert torch.allclose(bound.p_within, torch.tensor(0.9, dtype=torch.float64), atol=0.025)  # 3.7 MC sd
    closed = SIGMA * stats.norm.ppf(bound.p_within.numpy()) / torch.linalg.matrix_norm(A).item()
    assert np.allclose(bound.bound.numpy(), closed, rtol=1e-9)
    assert (bound.bound <= exact).all(), (bound.bound, exact)
    found = empirical_margin(isotropic, x, r, r_max=3.0, n_samples=2000, generator=gen(1))
    assert not found.censored.any()
    assert torch.allclose(found.margin, torch.tensor(exact, dtype=torch.float64), rtol=0.03), (found.margin, exact)
    assert torch.allclose(found.delta.norm(dim=-1), found.margin, rtol=1e-6)  # the attack uses all of its budget
    assert (found.p_within >= 0.5).all()


def test_the_curve_against_the_norm_follows_the_noncentral_chi_square_of_the_worst_direction(isotropic):
    x = inputs(2)
    r = SIGMA * math.sqrt(stats.chi2.ppf(0.9, d))
    radii = [0.0, 0.2, 0.4, 0.6, 0.8, 1.2]
    curve = robustness_curve(isotropic, x, r, radii, n_samples=4000, generator=gen(2))
    assert curve.shape == (len(radii), 2)
    exact = [stats.ncx2.cdf((r / SIGMA) ** 2, d, (SINGULAR[0] * R / SIGMA) ** 2) for R in radii]
    assert np.allclose(curve.numpy(), np.array(exact)[:, None], atol=0.03), (curve, exact)  # 4 MC sd
    assert (curve.diff(dim=0) <= 0.02).all()  # the worst case only gets worse with a larger budget
    with pytest.raises(AtlasError, match="ascending"):
        robustness_curve(isotropic, x, r, [0.5, 0.1])


def test_the_report_is_reproducible_from_its_seed(isotropic):
    x = inputs(2)
    first, again, other = (robustness_report(isotropic, x, n_samples=200, seed=s, bisections=4) for s in (0, 0, 1))
    assert first == again
    assert first != other
    assert all(row.r == pytest.approx(SIGMA * stats.chi.ppf(0.9, d), rel=0.15) for row in first)


def test_no_margin_where_the_model_is_not_robust_unperturbed(isotropic):
    x = inputs(2)
    r = 0.5 * SIGMA * stats.chi.ppf(0.5, d)  # below the median distortion
    assert (margin_bound(isotropic, x, r, 1000, gen()).bound == 0).all()
    found = empirical_margin(isotropic, x, r, r_max=3.0, n_samples=1000, bisections=4, generator=gen())
    assert (found.margin == 0).all() and (found.delta == 0).all()


def test_a_margin_beyond_r_max_is_reported_as_censored(isotropic):
    found = empirical_margin(isotropic, inputs(1), r=5.0, r_max=0.1, n_samples=500, bisections=2, generator=gen())
    assert found.censored.all() and found.margin.item() == pytest.approx(0.1)


def finite_difference_jacobian(f, x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """d f / d x for f: (n,) -> (m,) by central differences: (m, n)."""
    cols = [(f(x + eps * e) - f(x - eps * e)) / (2 * eps) for e in torch.eye(len(x), dtype=x.dtype)]
    return torch.stack(cols, -1)


def test_jacobian_norm_and_trace_against_finite_differences_on_a_two_facet_model():
    """A nonlinear model with two latent groups of different sizes, so that a wrong group
    order pairs a sigma with the wrong decoder column."""
    torch.manual_seed(0)
    config = MFCVAEConfig(input_shape=(5,), facet_dims=(3, 1), clusters=(2, 2), hidden=(7, 6), likelihood="gaussian")
    model = MFCVAE(config).double().eval()
    x = torch.randn(2, 5, dtype=torch.float64)
    names = [g.name for g in model.latent_groups]
    sizes = [g.size for g in model.latent_groups]
    for i in range(2):

        def means(v):
            q = model.encode(v[None])
            return torch.cat([q[n].mean[0] for n in names])

        with torch.no_grad():
            jac = finite_difference_jacobian(means, x[i])
            q = model.encode(x[i : i + 1])
            mean = torch.cat([q[n].mean[0] for n in names])
            std = torch.cat([q[n].std[0] for n in names])

            def decode(z):
                return model.decode({n: p[None] for n, p in zip(names, z.split(sizes))}).flatten()

            dec = finite_difference_jacobian(decode, mean)
        assert encoder_jacobian_norm(model, x)[i].item() == pytest.approx(
            torch.linalg.matrix_norm(jac).item(), rel=1e-6
        )
        trace = (dec * std).pow(2).sum().item()
        assert decoder_noise_trace(model, x)[i].item() == pytest.approx(trace, rel=1e-6)


def test_on_the_digits_vae_the_bound_is_below_the_empirical_margin():
    model, test = demo_model_and_data("digits-vae")
    x = test.batch(torch.arange(8))
    rows = robustness_report(model, x, p_target=0.9, n_samples=1000, seed=0)
    assert len(rows) == 8
    for row in rows:
        assert row.p_within > 0.5 and row.empirical_margin > 0, row
        assert 0 < row.bound < row.empirical_margin, row
        assert not row.margin_censored
        assert row.minimum_r < row.r  # the median distortion lies below the 0.9 quantile


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda m, x: margin_bound(m, x[:, :4], 1.0), "expects inputs of shape"),
        (lambda m, x: margin_bound(m, x[0], 1.0), r"float tensor \(batch, \*input_shape\)"),
        (lambda m, x: margin_bound(m, x, 0.0), "r must be finite and > 0"),
        (lambda m, x: margin_bound(m, x, -1.0), "r must be finite and > 0"),
        (lambda m, x: margin_bound(m, x, torch.ones(5)), "one number or one per input"),
        (lambda m, x: margin_bound(m, x, 1.0, n_samples=1), "n_samples must be an integer of at least 2"),
        (lambda m, x: distortion_norms(m, x, 0), "n_samples must be an integer of at least 2"),
        (lambda m, x: distortion_quantile(m, x, m=1.0), "strictly between 0 and 1"),
        (lambda m, x: empirical_margin(m, x, 1.0, r_max=0.0), "r_max must be a finite number > 0"),
        (lambda m, x: empirical_margin(m, x, 1.0, steps=0), "steps must be a positive integer"),
        (lambda m, x: encoder_jacobian_norm(m, x.int()), "float tensor"),
        (lambda m, x: robustness_report(m, x * np.nan), "NaN"),
    ],
)
def test_bad_input_is_refused_with_a_message(isotropic, call, message):
    with pytest.raises(AtlasError, match=message):
        call(isotropic, inputs(2))


@pytest.mark.parametrize("n_in, n_out", [(5, 3), (3, 5)])  # by Jacobian rows, then by columns
def test_jacobian_frobenius_either_way_round(n_in, n_out):
    M = torch.randn(n_out, n_in, generator=gen(5), dtype=torch.float64)
    u = torch.randn(4, n_in, generator=gen(6), dtype=torch.float64)
    scale = torch.rand(4, n_in, generator=gen(7), dtype=torch.float64)
    got = jacobian_frobenius_sq(lambda v: torch.tanh(v) @ M.T, u, scale, chunk=2)
    jac = M[None] / torch.cosh(u)[:, None, :].pow(2)  # (batch, n_out, n_in)
    assert torch.allclose(got, (jac * scale[:, None, :]).pow(2).sum((1, 2)), rtol=1e-12)
