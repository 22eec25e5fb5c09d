"""Latent-space and output attacks (seed001 §4.3) and the image similarity they report.

The attack optimisers are checked against the exact solution of a convex case: a
linear encoder with a fixed posterior variance, where the latent KL attack is
    min_d  1/2 (A d - b)^T P (A d - b) + lambda ||d||,   P = diag(1 / sigma^2_target),
whose minimiser is d = 0 when ||A^T P b|| <= lambda and otherwise
    d = (A^T P A + (lambda / t) I)^{-1} A^T P b  with t = ||d||,
a scalar fixed point found by bisection. The demo models are attacked on real digits.
"""

import math

import numpy as np
import pytest
import pytorch_msssim
import torch
from conftest import demo_model_and_data
from scipy.optimize import brentq

from engine.diagnostics.similarity import ms_ssim
from engine.errors import AtlasError
from engine.inference.attacks import (
    amplify,
    attack,
    gaussian_w2,
    latent_divergence,
    log_likelihood,
    random_pairs,
    seed_lambdas,
)
from engine.models import VAE, VAEConfig
from engine.models.posteriors import DiagonalGaussian


def linear_encoder_vae(data_dim=6, latent_dim=3, seed=0) -> VAE:
    """mu(x) = A x + c, log sigma^2 fixed (independent of x)."""
    torch.manual_seed(seed)
    model = VAE(VAEConfig(input_shape=(data_dim,), latent_dim=latent_dim, hidden=(), likelihood="gaussian"))
    enc = model.encoder[1][0]
    with torch.no_grad():
        enc.weight[latent_dim:].zero_()
        enc.bias[latent_dim:].copy_(torch.tensor([-1.0, 0.0, 0.5])[:latent_dim])
    return model.double()


def exact_kl_attack(model: VAE, x: torch.Tensor, t: torch.Tensor, lam: float) -> np.ndarray:
    enc = model.encoder[1][0]
    d = model.config.latent_dim
    a = enc.weight[:d].detach().numpy()
    p = np.exp(-enc.bias[d:].detach().numpy())  # 1 / sigma^2 (the same for input and target)
    b = a @ (t - x).numpy()
    m, g = a.T @ (p[:, None] * a), a.T @ (p * b)
    if np.linalg.norm(g) <= lam:
        return np.zeros_like(x.numpy())
    eye = np.eye(len(g))

    def gap(s):
        return np.linalg.norm(np.linalg.solve(m + (lam / s) * eye, g)) - s

    s = brentq(gap, 1e-12, np.linalg.norm(np.linalg.pinv(m) @ g) + 1.0)
    return np.linalg.solve(m + (lam / s) * eye, g)


def test_gaussian_divergences_match_closed_forms():
    torch.manual_seed(0)
    q = DiagonalGaussian(torch.randn(5, 4), torch.randn(5, 4))
    p = DiagonalGaussian(torch.randn(5, 4), torch.randn(5, 4))
    ref = torch.distributions.kl_divergence(
        torch.distributions.Independent(torch.distributions.Normal(q.mean, q.std), 1),
        torch.distributions.Independent(torch.distributions.Normal(p.mean, p.std), 1),
    )
    torch.testing.assert_close(q.kl_to(p), ref)
    # 1-D by hand: W2(N(0, 1), N(3, 2^2)) = sqrt(3^2 + (2 - 1)^2)
    one = DiagonalGaussian(torch.zeros(1, 1), torch.zeros(1, 1))
    two = DiagonalGaussian(torch.full((1, 1), 3.0), torch.full((1, 1), math.log(4.0)))
    assert gaussian_w2(one, two).item() == pytest.approx(math.sqrt(10.0), rel=1e-6)
    summed = latent_divergence({"a": q, "b": p}, {"a": p, "b": q}, "kl")
    torch.testing.assert_close(summed, q.kl_to(p) + p.kl_to(q))


@pytest.mark.parametrize("optimizer", ["lbfgsb", "adam"])
def test_kl_attack_reaches_the_exact_optimum_of_a_convex_case(optimizer):
    model = linear_encoder_vae()
    torch.manual_seed(1)
    x, t = torch.randn(3, 6, dtype=torch.float64), torch.randn(3, 6, dtype=torch.float64)
    lambdas = [1e-3, 0.1, 0.5, 2.0, 50.0]
    steps = 200 if optimizer == "lbfgsb" else 1500
    result = attack(model, x, t, lambdas, optimizer=optimizer, steps=steps, lr=0.05, bounds=None)
    for i in range(3):
        for j, lam in enumerate(lambdas):
            exact = exact_kl_attack(model, x[i], t[i], lam)
            with torch.no_grad():
                q, q_t = model.encode(x[i : i + 1] + torch.from_numpy(exact)), model.encode(t[i : i + 1])
                best_loss = (q["z"].kl_to(q_t["z"]) + lam * np.linalg.norm(exact)).item()
            # the optimum's value is reached; L-BFGS-B also finds the minimiser itself (Adam creeps
            # along the directions the encoder ignores, where only lambda ||d|| slopes the objective)
            assert result.loss[i, j] <= best_loss + 1e-3 * (1 + best_loss), (i, lam)
            if optimizer == "lbfgsb":
                assert np.linalg.norm(result.delta[i, j] - exact) < 1e-2 * (1 + np.linalg.norm(exact)), (i, lam)
    # the optimal distortion shrinks as lambda grows, and the largest lambda leaves the input alone
    assert (np.diff(result.distortion, axis=1) <= 1e-3).all()
    assert result.distortion[:, -1].max() < 1e-3
    np.testing.assert_allclose(result.loss[:, -1], result.divergence_clean, rtol=1e-3)


def test_attack_lowers_the_divergence_on_every_demo_model_and_stays_in_the_data_range():
    for name in ("digits-vae", "digits-tcvae", "digits-seatbelt"):  # a VAE, a beta-TCVAE, a two-layer Seatbelt-VAE
        model, data = demo_model_and_data(name)
        pairs = random_pairs(data.labels["digit"].values.numpy(), 4, len(data), seed=0)
        x, t = data.batch(torch.as_tensor(pairs[:, 0])), data.batch(torch.as_tensor(pairs[:, 1]))
        result = attack(model, x, t, [2.0**-10, 2.0**-2, 1.0], steps=60)
        assert (result.divergence < result.divergence_clean[:, None]).all(), name
        assert (result.loss <= result.divergence_clean[:, None] + 1e-6).all(), name
        attacked = x.numpy()[:, None] + result.delta
        assert attacked.min() >= -1e-6 and attacked.max() <= 1 + 1e-6
        # a successful attack makes the target likelier and the reconstructions more alike
        best = result.best
        rows = np.arange(len(best))
        assert (result.target_nll[rows, best] < result.target_nll_clean).all(), name
        assert (result.ms_ssim[rows, best] > result.ms_ssim_clean).mean() >= 0.75, name


def test_output_attack_lowers_the_targets_negative_elbo():
    model, data = demo_model_and_data("digits-vae")
    x, t = data.batch(torch.arange(0, 3)), data.batch(torch.arange(10, 13))
    result = attack(model, x, t, [2.0**-8, 0.5], mode="output", steps=40, mc_samples=8)
    assert result.mode == "output"
    # at d = 0 the objective is -ELBO_target(x); the attack must end below it
    with torch.no_grad():
        q = model.encode(x)["z"]
        z = q.mean + q.std * torch.randn(256, *q.mean.shape, generator=torch.Generator().manual_seed(0))
        clean = -(model.log_joint(t, z) - q.log_prob(z)).mean(0).numpy()
    assert (result.loss < clean[:, None]).all(), (result.loss, clean)
    best_nll = result.target_nll[np.arange(3), result.best]
    assert (best_nll < result.target_nll_clean).all(), (best_nll, result.target_nll_clean)


def test_log_likelihood_agrees_with_the_models_own_joint():
    model, data = demo_model_and_data("digits-vae")
    x = data.batch(torch.arange(5))
    z = torch.randn(5, model.config.latent_dim)
    from engine.numerics import standard_normal_log_prob

    with torch.no_grad():
        torch.testing.assert_close(
            log_likelihood(model, x, {"z": z}) + standard_normal_log_prob(z),
            model.log_joint(x, z),
            atol=1e-3,
            rtol=1e-4,
        )


def test_bad_attack_requests_say_what_is_wrong():
    model = linear_encoder_vae()
    x = torch.randn(2, 6, dtype=torch.float64)
    with pytest.raises(AtlasError, match="one shape"):
        attack(model, x, x[:1])
    with pytest.raises(AtlasError, match="divergence"):
        attack(model, x, x, divergence="js")
    with pytest.raises(AtlasError, match="lambdas"):
        attack(model, x, x, lambdas=[float("nan")])
    with pytest.raises(AtlasError, match="mode"):
        attack(model, x, x, mode="pixels")
    with pytest.raises(AtlasError, match="different labels"):
        random_pairs(np.zeros(10, int), 3, 10)


def test_seed_sweep_and_amplified_distortion():
    lam = seed_lambdas()
    assert len(lam) == 50 and lam[0] == pytest.approx(2.0**-20) and lam[-1] == pytest.approx(2.0**20)
    assert np.allclose(np.diff(np.log(lam)), np.log(lam[1] / lam[0]))
    d = np.random.default_rng(0).normal(size=(3, 1, 4, 4))
    a = amplify(d)
    assert a.reshape(3, -1).min(1) == pytest.approx(0) and a.reshape(3, -1).max(1) == pytest.approx(1)


# -- SSIM and MS-SSIM -------------------------------------------------------------------------


def smooth_images(n, size, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, size // 8, size // 8, generator=g)
    return torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)


def test_ms_ssim_matches_an_independent_implementation_and_is_ssim_on_one_scale():
    x = smooth_images(3, 176, 0)
    y = (x + 0.08 * torch.randn(x.shape, generator=torch.Generator().manual_seed(1))).clamp(0, 1)
    ref = pytorch_msssim.ms_ssim(x, y, data_range=1.0, size_average=False)
    torch.testing.assert_close(ms_ssim(x, y), ref, atol=1e-5, rtol=1e-5)
    small_x, small_y = x[:, :, :8, :8], y[:, :, :8, :8]  # window 7, one scale (4 < 7): MS-SSIM is SSIM
    ref_small = pytorch_msssim.ssim(small_x, small_y, data_range=1.0, size_average=False, win_size=7)
    torch.testing.assert_close(ms_ssim(small_x, small_y), ref_small, atol=1e-5, rtol=1e-5)


def test_ms_ssim_of_constant_images_is_the_luminance_term():
    """cs = 1 when both images are flat, so MS-SSIM = l^{w_M} with l at the coarsest scale."""
    a, b = 0.3, 0.7
    c1 = 0.01**2
    x, y = torch.full((1, 1, 8, 8), a, dtype=torch.float64), torch.full((1, 1, 8, 8), b, dtype=torch.float64)
    luminance = (2 * a * b + c1) / (a * a + b * b + c1)
    # 8x8: window 7, one scale (4 < 7), so the weight is 1
    assert ms_ssim(x, y).item() == pytest.approx(luminance, rel=1e-5)
    x32, y32 = (torch.full((1, 1, 32, 32), v, dtype=torch.float64) for v in (a, b))
    # 32x32: window 11, scales 32 and 16 (8 < 11): weights 0.0448, 0.2856 renormalised
    w_last = 0.2856 / (0.0448 + 0.2856)
    assert ms_ssim(x32, y32).item() == pytest.approx(luminance**w_last, rel=1e-5)
    assert ms_ssim(x32, x32).item() == pytest.approx(1.0)
    noisy = [
        ms_ssim(
            x32,
            (x32 + s * torch.randn(x32.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0))).clamp(
                0, 1
            ),
        ).item()
        for s in (0.05, 0.2, 0.5)
    ]
    assert noisy[0] > noisy[1] > noisy[2]
    with pytest.raises(AtlasError, match="one shape"):
        ms_ssim(x, y32)
