"""The DDPM process against closed forms: the schedules' formulas, the forward marginals,
Bayes' rule for q(x_{t-1} | x_t, x_0), the discretised Gaussian against the normal CDF, the
whole bound against the ELBO of a linear-Gaussian chain computed as one joint Gaussian, and
Gaussian data, where the optimal denoiser is known."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.distributions import MultivariateNormal, Normal, kl_divergence

from engine.errors import AtlasError
from engine.models.diffusion import GaussianDiffusion, beta_schedule, cosine_betas, linear_betas
from engine.numerics import discretised_gaussian_log_prob

torch.set_default_dtype(torch.float32)


def test_linear_schedule_defaults_follow_ho_and_the_dct_vae_repo():
    b = linear_betas(1000)
    assert b[0].item() == pytest.approx(1e-4) and b[-1].item() == pytest.approx(0.02)
    b = linear_betas(7)
    assert b[0].item() == pytest.approx(1 / 7) and b[-1].item() == pytest.approx(2 / 7)
    assert torch.allclose(b.diff(), torch.full((6,), 1 / 42, dtype=torch.float64))


def test_cosine_schedule_gives_the_cosine_alpha_bar():
    steps, s = 50, 0.008
    alpha_bar = torch.cumprod(1 - cosine_betas(steps), 0)
    t = torch.arange(1, steps + 1, dtype=torch.float64) / steps
    f = lambda u: torch.cos((u + s) / (1 + s) * math.pi / 2) ** 2  # noqa: E731
    expected = f(t) / f(torch.zeros(1, dtype=torch.float64))
    unclipped = cosine_betas(steps) < 0.999
    assert torch.allclose(alpha_bar[unclipped], expected[unclipped], rtol=1e-9)
    assert cosine_betas(steps)[-1].item() == pytest.approx(0.999)  # the last step is clipped


@pytest.mark.parametrize("steps", [0, -3, 10**6, 2.5])
def test_bad_step_counts_are_refused(steps):
    with pytest.raises(AtlasError, match="steps"):
        beta_schedule("linear", steps)


def test_unknown_choices_are_refused_with_the_valid_ones():
    with pytest.raises(AtlasError, match="linear, cosine"):
        beta_schedule("quadratic", 10)
    with pytest.raises(AtlasError, match="eps, x"):
        GaussianDiffusion(linear_betas(10), parametrization="v")


def test_the_forward_marginal_is_the_chain_of_single_steps():
    """x_t made one step at a time, x_t = sqrt(1 - β_t) x_{t-1} + sqrt(β_t) ε, has the
    marginal N(sqrt(ᾱ_t) x_0, 1 - ᾱ_t) of eq. 11 that q_sample draws from."""
    d = GaussianDiffusion(beta_schedule("cosine", 20))
    g = torch.Generator().manual_seed(0)
    x0 = torch.full((200_000, 1), 0.7)
    x = x0.clone()
    for beta in d.betas:
        x = (1 - beta).sqrt() * x + beta.sqrt() * torch.randn(x.shape, generator=g)
    direct = d.q_sample(x0, torch.full((len(x0),), 20), torch.randn(x0.shape, generator=g))
    a = d.alpha_bar[-1].item()
    for sample in (x, direct):
        assert sample.mean().item() == pytest.approx(math.sqrt(a) * 0.7, abs=0.01)
        assert sample.var().item() == pytest.approx(1 - a, rel=0.01)


def test_the_posterior_of_the_forward_process_is_bayes_rule():
    """q(x_{t-1} | x_t, x_0) by conditioning the joint Gaussian of (x_{t-1}, x_t) given x_0."""
    d = GaussianDiffusion(linear_betas(30))
    x0, xt = torch.randn(29, 3), torch.randn(29, 3)
    t = torch.arange(2, 31)
    mean, var = d.q_posterior(x0, xt, t)
    b = d.betas[t - 1].double()[:, None]
    a_prev = d.alpha_bar_prev[t - 1].double()[:, None]
    precision = 1 / (1 - a_prev) + (1 - b) / b
    expected_var = 1 / precision
    expected_mean = expected_var * (a_prev.sqrt() * x0.double() / (1 - a_prev) + (1 - b).sqrt() * xt.double() / b)
    assert torch.allclose(var.double().expand_as(mean), expected_var.expand_as(mean), rtol=1e-5)
    assert torch.allclose(mean.double(), expected_mean, rtol=1e-4, atol=1e-5)


def test_the_discretised_gaussian_is_a_distribution_over_the_bins():
    bins = 2 / 255
    grid = torch.linspace(-1, 1, 256, dtype=torch.float64)
    g = torch.Generator().manual_seed(1)
    mean = (torch.rand(5, 1, generator=g, dtype=torch.float64) * 2.4 - 1.2).expand(5, 256)
    logvar = (torch.rand(5, 1, generator=g, dtype=torch.float64) * 6 - 8).expand(5, 256)
    logp = discretised_gaussian_log_prob(grid.expand(5, 256), mean, logvar, bins)
    assert torch.allclose(logp.exp().sum(1), torch.ones(5, dtype=torch.float64), atol=1e-9)
    normal = Normal(mean[:, 1:-1], logvar[:, 1:-1].mul(0.5).exp())
    inner = normal.cdf(grid[1:-1] + bins / 2) - normal.cdf(grid[1:-1] - bins / 2)
    assert torch.allclose(logp[:, 1:-1].exp(), inner, atol=1e-12)
    assert torch.allclose(
        logp[:, -1].exp(), 1 - Normal(mean[:, -1], logvar[:, -1].mul(0.5).exp()).cdf(grid[-2] + bins / 2)
    )


def test_the_discretised_gaussian_stays_finite_far_in_either_tail():
    x = torch.tensor([0.5, -0.5, 0.5], requires_grad=True)
    mean = torch.tensor([-0.9, 0.9, 0.5])
    logp = discretised_gaussian_log_prob(x, mean, torch.full((3,), -16.0), 2 / 255)
    assert torch.isfinite(logp).all() and logp[0] < -1000 and logp[2] > -1e-3
    logp.sum().backward()
    assert torch.isfinite(x.grad).all()
    edge = torch.tensor([1.0, -1.0], requires_grad=True)  # the open-ended bins
    mu = torch.tensor([0.0, 0.0], requires_grad=True)
    out = discretised_gaussian_log_prob(edge, mu, torch.zeros(2), 2 / 255)
    assert torch.allclose(out.exp(), 1 - Normal(0.0, 1.0).cdf(torch.tensor(1 - 1 / 255)), atol=1e-6)
    out.sum().backward()
    assert torch.isfinite(mu.grad).all()


def test_the_prior_term_is_the_kl_to_a_standard_normal():
    d = GaussianDiffusion(linear_betas(10))
    x0 = torch.randn(4, 2, 3)
    a = d.alpha_bar[-1]
    q = Normal(a.sqrt() * x0, (1 - a).sqrt().expand_as(x0))
    expected = kl_divergence(q, Normal(0.0, 1.0)).flatten(1).sum(1)
    assert torch.allclose(d.prior_term(x0), expected, rtol=1e-5)


class LinearDenoiser(nn.Module):
    """ε̂ = a_t x_t + c_t: every reverse step is then linear-Gaussian."""

    def __init__(self, steps: int, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.a = torch.rand(steps, generator=g) * 0.8 + 0.1
        self.c = torch.randn(steps, generator=g) * 0.3

    def forward(self, xt, t):
        return self.a[t - 1, None] * xt + self.c[t - 1, None]


def joint_gaussian_elbo(d: GaussianDiffusion, net: LinearDenoiser, x0: float) -> float:
    """E_q[ln p(x_{0:T}) - ln q(x_{1:T} | x_0)] for 1-D x_0, from the joint Gaussians of the
    whole chains (float64): none of eq. 13's per-step decomposition is used."""
    T = d.steps
    betas = d.betas.double()
    # q: x_t = sqrt(1-β_t) x_{t-1} + sqrt(β_t) e_t, for t = 1..T; as X = m x0 + L e
    L = torch.zeros(T, T, dtype=torch.float64)
    m = torch.zeros(T, dtype=torch.float64)
    prev_m, prev_L = torch.tensor(1.0, dtype=torch.float64), torch.zeros(T, dtype=torch.float64)
    for t in range(T):
        prev_m, prev_L = (1 - betas[t]).sqrt() * prev_m, (1 - betas[t]).sqrt() * prev_L
        prev_L = prev_L.clone()
        prev_L[t] = betas[t].sqrt()
        m[t], L[t] = prev_m, prev_L
    q = MultivariateNormal(m * x0, scale_tril=torch.linalg.cholesky(L @ L.T))
    # p: x_T = f_T, x_{t-1} = A_t x_t + B_t + σ_t f_t; v = (x_0, ..., x_T) = mu + M f, f ~ N(0, I_{T+1})
    M = torch.zeros(T + 1, T + 1, dtype=torch.float64)
    mu = torch.zeros(T + 1, dtype=torch.float64)
    M[T, T] = 1.0
    for s in range(T, 0, -1):
        t = torch.tensor([s])
        one = torch.ones(1, 1)
        zero = torch.zeros(1, 1)
        slope = d.p_mean_logvar(net, one, t)[0] - d.p_mean_logvar(net, zero, t)[0]
        mean0, log_var, _ = d.p_mean_logvar(net, zero, t)
        mu[s - 1] = slope.double().item() * mu[s] + mean0.double().item()
        M[s - 1] = slope.double().item() * M[s]
        M[s - 1, s - 1] = math.exp(0.5 * log_var.double().item())
    cov_p = M @ M.T
    # E_q ln N(v; mu, cov_p) with v = (x0, X), X ~ q: ln N(E v) - tr(cov_p^-1 Cov v) / 2
    mean_v = torch.cat([torch.tensor([x0], dtype=torch.float64), q.mean])
    cov_v = torch.zeros(T + 1, T + 1, dtype=torch.float64)
    cov_v[1:, 1:] = q.covariance_matrix
    p = MultivariateNormal(mu, cov_p)
    expected_log_p = p.log_prob(mean_v) - 0.5 * torch.trace(torch.linalg.solve(cov_p, cov_v))
    return (expected_log_p + q.entropy()).item()


@pytest.mark.parametrize("variance", ["fixed_small", "fixed_large"])
def test_the_bound_is_the_elbo_of_the_whole_chain(variance):
    """Eq. 13's sum of per-step KLs, averaged over its x_t draws, equals the ELBO of the
    linear-Gaussian chain computed from the two joint Gaussians."""
    d = GaussianDiffusion(linear_betas(5, 0.05, 0.4), variance=variance)
    net = LinearDenoiser(5)
    x0 = 0.6
    g = torch.Generator().manual_seed(3)
    bound = d.bound(net, torch.full((100_000, 1), x0), generator=g)
    estimate, se = bound.total.mean().item(), bound.total.std().item() / math.sqrt(100_000)
    assert estimate == pytest.approx(joint_gaussian_elbo(d, net, x0), abs=4 * se + 1e-4)
    assert bound.steps.shape == (100_000, 4)
    sampled = d.bound(net, torch.full((100_000, 1), x0), every_step=False, generator=g).total
    assert sampled.mean().item() == pytest.approx(estimate, abs=4 * sampled.std().item() / math.sqrt(100_000))


class GaussianOracle(nn.Module):
    """For data x_0 ~ N(m, s²) per dimension, the optimal ε̂(x_t) = E[ε | x_t] (or E[x_0 | x_t])."""

    def __init__(self, d: GaussianDiffusion, m: float, s: float, parametrization: str = "eps"):
        super().__init__()
        self.d, self.m, self.s, self.parametrization = d, m, s, parametrization

    def forward(self, xt, t):
        a = self.d.at("alpha_bar", t, xt)
        x0 = self.m + a.sqrt() * self.s**2 / (a * self.s**2 + 1 - a) * (xt - a.sqrt() * self.m)
        return (xt - a.sqrt() * x0) / (1 - a).sqrt() if self.parametrization == "eps" else x0


def test_the_loss_of_the_optimal_denoiser_is_the_posterior_variance_of_the_noise():
    d = GaussianDiffusion(beta_schedule("linear", 100))
    m, s = 0.3, 0.5
    g = torch.Generator().manual_seed(4)
    x0 = m + s * torch.randn(400_000, 1, generator=g)
    loss = d.loss(GaussianOracle(d, m, s), x0, generator=g).mean().item()
    a = d.alpha_bar.double()
    expected = (a * s**2 / (a * s**2 + 1 - a)).mean().item()  # Var[ε | x_t], averaged over uniform t
    assert loss == pytest.approx(expected, rel=0.01)
    x_loss = GaussianDiffusion(beta_schedule("linear", 100), parametrization="x")
    assert x_loss.loss(GaussianOracle(x_loss, m, s, "x"), x0, generator=g).mean().item() == pytest.approx(
        (s**2 * (1 - a) / (a * s**2 + 1 - a)).mean().item(), rel=0.01
    )


def test_both_parametrisations_give_the_same_reverse_step():
    d_eps = GaussianDiffusion(beta_schedule("cosine", 40))
    d_x = GaussianDiffusion(beta_schedule("cosine", 40), parametrization="x")
    xt, t = torch.randn(40, 2), torch.arange(1, 41)
    a = d_eps.p_mean_logvar(GaussianOracle(d_eps, 0.1, 0.7), xt, t)
    b = d_x.p_mean_logvar(GaussianOracle(d_x, 0.1, 0.7, "x"), xt, t)
    for u, v in zip(a, b):
        assert torch.allclose(u.expand_as(xt), v.expand_as(xt), atol=1e-4)


def test_a_learned_variance_spans_the_two_fixed_ones():
    d = GaussianDiffusion(linear_betas(20), variance="learned")
    xt, t = torch.randn(20, 1, 2, 2), torch.arange(1, 21)
    for v, fixed in ((-1.0, "log_small"), (1.0, "log_large")):
        net = lambda x, _t, v=v: torch.cat([torch.zeros_like(x), torch.full_like(x, v)], 1)  # noqa: E731
        _, log_var = d.predict(net, xt, t)
        assert torch.allclose(log_var, d.at(fixed, t, xt).expand_as(xt))
    with pytest.raises(AtlasError, match="2 channels"):
        d.predict(lambda x, _t: x, xt[:, :1], t)


def test_sampling_with_the_optimal_denoiser_recovers_the_data_distribution():
    d = GaussianDiffusion(beta_schedule("linear", 1000))
    m, s = 0.5, 0.3
    g = torch.Generator().manual_seed(5)
    x, kept = d.sample(GaussianOracle(d, m, s), (20_000, 1), generator=g, record=(1000, 500, 0))
    assert x.mean().item() == pytest.approx(m, abs=0.01)
    assert x.std().item() == pytest.approx(s, rel=0.03)
    assert torch.equal(kept[0], x) and set(kept) == {1000, 500, 0}
    assert kept[1000].std().item() == pytest.approx(1.0, rel=0.03)  # x_T ~ N(0, I)
    cold, _ = d.sample(GaussianOracle(d, m, s), (20_000, 1), temperature=0.5, generator=g)
    assert cold.std().item() < 0.8 * x.std().item()  # a lower temperature narrows the samples
    assert cold.mean().item() == pytest.approx(m, abs=0.02)


def test_a_small_denoiser_learns_nearly_the_optimal_loss():
    torch.manual_seed(0)
    d = GaussianDiffusion(beta_schedule("linear", 50))
    m, s = -0.4, 0.25

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Linear(2, 64), nn.SiLU(), nn.Linear(64, 64), nn.SiLU(), nn.Linear(64, 1))

        def forward(self, xt, t):
            return self.body(torch.cat([xt, (t[:, None].float() / 50)], 1))

    net = Net()
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(6)
    for _ in range(600):
        loss = d.loss(net, m + s * torch.randn(512, 1, generator=g), generator=g).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    x0 = m + s * torch.randn(100_000, 1, generator=g)
    with torch.no_grad():
        learned = d.loss(net, x0, generator=torch.Generator().manual_seed(7)).mean().item()
        best = d.loss(GaussianOracle(d, m, s), x0, generator=torch.Generator().manual_seed(7)).mean().item()
    assert best < 0.5  # the trivial predictor ε̂ = 0 scores 1
    assert learned - best < 0.05 * (1 - best)  # within 5% of the way from trivial to optimal
