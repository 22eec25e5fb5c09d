"""ELBO and IWAE bound of the VAE against a linear-Gaussian model with a closed form.

A VAE with no hidden layers and a Gaussian likelihood is the linear-Gaussian model
    z ~ N(0, I),  x | z ~ N(W z + b, diag(sigma^2)),   so   p(x) = N(b, W W^T + diag(sigma^2)).
With orthogonal columns in W and isotropic sigma^2 the exact posterior is diagonal:
    Sigma = (I + W^T W / sigma^2)^-1,  mean = Sigma W^T (x - b) / sigma^2,
which the encoder (one linear layer) can represent exactly.
"""

import math

import torch

from engine.models import VAE, VAEConfig


def linear_gaussian_vae(data_dim=6, latent_dim=3, sigma2=0.25, seed=0) -> VAE:
    torch.manual_seed(seed)
    model = VAE(VAEConfig(input_shape=(data_dim,), latent_dim=latent_dim, hidden=(), likelihood="gaussian"))
    q, _ = torch.linalg.qr(torch.randn(data_dim, latent_dim))
    w = q * torch.tensor([2.0, 1.0, 0.5])[:latent_dim]  # orthogonal columns, different scales
    b = torch.randn(data_dim)
    dec = model.decoder[0][0]
    enc = model.encoder[1][0]
    post_var = 1.0 / (1.0 + (w * w).sum(0) / sigma2)  # (latent,)
    a = post_var[:, None] * w.T / sigma2  # mean = a (x - b)
    with torch.no_grad():
        dec.weight.copy_(w)
        dec.bias.copy_(b)
        model.likelihood.logvar.fill_(math.log(sigma2))
        enc.weight.zero_()
        enc.weight[:latent_dim].copy_(a)
        enc.bias[:latent_dim].copy_(-a @ b)
        enc.bias[latent_dim:].copy_(torch.log(post_var))
    return model.double()


def exact_log_px(model: VAE, x: torch.Tensor) -> torch.Tensor:
    dec = model.decoder[0][0]
    cov = dec.weight @ dec.weight.T + torch.diag(model.likelihood.logvar.exp())
    return torch.distributions.MultivariateNormal(dec.bias, covariance_matrix=cov).log_prob(x)


def exact_elbo(model: VAE, x: torch.Tensor) -> torch.Tensor:
    """E_q[log p(x|z)] - KL(q || p) in closed form for the linear-Gaussian VAE."""
    dec = model.decoder[0][0]
    q = model.encode(x)["z"]
    var_x = model.likelihood.logvar.exp()  # (data,)
    resid = x - (q.mean @ dec.weight.T + dec.bias)
    spread = (dec.weight.pow(2) * q.logvar.exp()[:, None, :]).sum(-1)  # diag(W S W^T): (batch, data)
    expected_loglik = -0.5 * (torch.log(2 * math.pi * var_x) + (resid.pow(2) + spread) / var_x).sum(-1)
    return expected_loglik - q.kl_to_standard_normal()


def test_exact_posterior_makes_the_importance_weights_constant():
    """With q = p(z|x), every importance weight equals p(x), so L^k = log p(x) for any k."""
    model = linear_gaussian_vae()
    x = model.decode(torch.randn(32, 3, dtype=torch.float64)) + 0.3 * torch.randn(32, 6, dtype=torch.float64)
    truth = exact_log_px(model, x)
    with torch.no_grad():
        torch.testing.assert_close(model.elbo(x, k=2).total, truth, atol=1e-5, rtol=0)
        torch.testing.assert_close(model.elbo(x, k=50).total, truth, atol=1e-5, rtol=0)
        torch.testing.assert_close(exact_elbo(model, x), truth, atol=1e-5, rtol=0)


def test_single_sample_elbo_is_unbiased_for_the_closed_form():
    model = linear_gaussian_vae()
    with torch.no_grad():
        model.encoder[1][0].bias[:3] += 0.7
    torch.manual_seed(1)
    x = torch.randn(16, 6, dtype=torch.float64)
    with torch.no_grad():
        draws = torch.stack([model.elbo(x).total for _ in range(4000)])  # (draws, batch)
        expected = exact_elbo(model, x)
    stderr = draws.std(0) / math.sqrt(draws.shape[0])
    assert ((draws.mean(0) - expected).abs() < 4 * stderr + 1e-9).all()


def test_iwae_rises_with_k_towards_log_px_with_an_imperfect_encoder():
    model = linear_gaussian_vae()
    with torch.no_grad():  # a worse encoder: shifted means and a too-narrow posterior
        model.encoder[1][0].bias[:3] += 0.3
        model.encoder[1][0].bias[3:] -= 0.7
    torch.manual_seed(3)
    x = model.decode(torch.randn(64, 3, dtype=torch.float64)) + 0.5 * torch.randn(64, 6, dtype=torch.float64)
    truth = exact_log_px(model, x).mean().item()
    with torch.no_grad():
        bounds = {
            k: torch.stack([model.elbo(x, k=k).total.mean() for _ in range(20)]).mean().item() for k in (10, 100, 2000)
        }
        elbo = exact_elbo(model, x).mean().item()
    assert elbo < bounds[10] < bounds[100] < bounds[2000] <= truth + 1e-3, (elbo, bounds, truth)
    assert truth - bounds[2000] < 0.25 * (truth - elbo), (elbo, bounds, truth)  # most of the gap closes


def test_iwae_chunking_does_not_change_the_bound():
    model = linear_gaussian_vae()
    x = torch.randn(8, 6, dtype=torch.float64)
    torch.manual_seed(0)
    whole = model.elbo(x, k=300, chunk=300).total
    torch.manual_seed(0)
    chunked = model.elbo(x, k=300, chunk=300).total
    torch.manual_seed(0)
    pieces = model.elbo(x, k=300, chunk=7).total
    torch.testing.assert_close(whole, chunked)
    assert (whole - pieces).abs().max() < 0.5  # different draws, same quantity
