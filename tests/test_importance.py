"""Importance-weight summaries against hand-computed cases."""

import math

import pytest
import torch

from engine.errors import AtlasError
from engine.inference.importance import bound_curve, effective_sample_size, normalized_weights


def test_ess_of_equal_and_of_degenerate_weights():
    equal = torch.zeros(50, 3)
    torch.testing.assert_close(effective_sample_size(equal), torch.full((3,), 50.0))
    degenerate = torch.full((50, 1), -1e4)
    degenerate[7] = 0.0
    assert effective_sample_size(degenerate).item() == pytest.approx(1.0)
    # two weights 1 and 3: (1 + 3)^2 / (1 + 9) = 1.6
    two = torch.log(torch.tensor([[1.0], [3.0]]))
    assert effective_sample_size(two).item() == pytest.approx(1.6)


def test_normalized_weights_sum_to_one():
    log_w = torch.randn(20, 4) * 5
    torch.testing.assert_close(normalized_weights(log_w).sum(0), torch.ones(4))


def test_bound_curve_by_hand():
    log_w = torch.log(torch.tensor([[1.0], [3.0], [2.0], [2.0]]))  # (K = 4, batch = 1)
    curve = bound_curve(log_w, [1, 2, 4])
    expected = [
        sum(math.log(w) for w in (1, 3, 2, 2)) / 4,
        (math.log(2.0) + math.log(2.0)) / 2,
        math.log(2.0),
    ]
    torch.testing.assert_close(curve, torch.tensor(expected))
    with pytest.raises(AtlasError, match="pool has 4"):
        bound_curve(log_w, [5])


# -- on a linear-Gaussian model, where p(x) and p(z | x) are known in closed form ---------------


def correlated_linear_gaussian(sigma2=0.2, seed=0):
    """z ~ N(0, I_2), x | z ~ N(W z + b, sigma2 I_5) with non-orthogonal W: the posterior
    N(m(x), S) has correlated coordinates, which the encoder's diagonal Gaussian cannot
    hold. The encoder gets the exact mean and the exact marginal variances diag(S): it
    covers the posterior but misses its correlation."""
    from engine.models import VAE, VAEConfig

    torch.manual_seed(seed)
    model = VAE(VAEConfig(input_shape=(5,), latent_dim=2, hidden=(), likelihood="gaussian")).double()
    w = torch.randn(5, 2, dtype=torch.float64)
    w[:, 1] = 0.8 * w[:, 0] + 0.4 * w[:, 1]  # strongly aligned columns
    b = torch.randn(5, dtype=torch.float64)
    precision = torch.eye(2, dtype=torch.float64) + w.T @ w / sigma2
    cov = torch.linalg.inv(precision)
    a = cov @ w.T / sigma2
    with torch.no_grad():
        model.decoder[0][0].weight.copy_(w)
        model.decoder[0][0].bias.copy_(b)
        model.likelihood.logvar.fill_(math.log(sigma2))
        enc = model.encoder[1][0]
        enc.weight.zero_()
        enc.weight[:2].copy_(a)
        enc.bias[:2].copy_(-a @ b)
        enc.bias[2:].copy_(torch.log(torch.diagonal(cov)))
    log_px = torch.distributions.MultivariateNormal(b, w @ w.T + sigma2 * torch.eye(5, dtype=torch.float64))
    return model, cov, a, b, log_px


def test_sir_recovers_the_correlated_posterior_the_encoder_cannot_represent():
    from engine.inference.importance import sampling_importance_resampling

    model, cov, a, b, _ = correlated_linear_gaussian()
    x = torch.randn(2, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) + b
    true_corr = (cov[0, 1] / cov.diag().prod().sqrt()).item()
    assert true_corr < -0.8  # the exact posterior is strongly correlated
    with torch.no_grad():
        sample = sampling_importance_resampling(model, x, k=4000, n=4000, generator=torch.Generator().manual_seed(2))
    z = sample.sir()["z"]  # (n, batch, 2)
    assert z.shape == (4000, 2, 2)
    for i in range(2):
        zi = z[:, i]
        corr = torch.corrcoef(zi.T)[0, 1].item()
        assert abs(corr - true_corr) < 0.08, (corr, true_corr)  # the proposal alone has correlation 0
        torch.testing.assert_close(zi.mean(0), a @ (x[i] - b), atol=0.05, rtol=0)
        torch.testing.assert_close(torch.cov(zi.T), cov, atol=0.1 * cov.abs().max().item(), rtol=0)
    assert (sample.ess > 50).all() and (sample.ess < 4000).all()


def test_iwae_bound_from_1_to_5000_rises_to_the_closed_form_log_likelihood():
    from engine.inference.importance import proposal_log_weights

    model, _, _, b, log_px = correlated_linear_gaussian()
    x = torch.randn(8, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(3)) + b
    ks = [1, 2, 5, 10, 50, 100, 500, 1000, 5000]
    with torch.no_grad():
        curves = torch.stack(
            [
                bound_curve(proposal_log_weights(model, x, 5000, torch.Generator().manual_seed(s))[1], ks)
                for s in range(4)
            ]
        )
    curve = curves.mean(0)
    truth = log_px.log_prob(x).mean().item()
    measured = f"L^k for k = {ks}: {curve.tolist()}, log p(x) = {truth}"
    assert (curve.diff() > -1e-3).all(), measured  # non-decreasing in expectation (here: on average over 4 pools)
    assert curve[-1].item() <= truth + 1e-3, measured
    assert truth - curve[-1].item() < 0.05 * (truth - curve[0].item()), measured  # 95% of the ELBO's gap closes
    assert truth - curve[0].item() > 0.2, measured  # and there was a gap to close: the encoder is mean-field
