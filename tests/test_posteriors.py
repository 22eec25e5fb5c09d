"""The posteriors of engine.models.posteriors against SciPy, torch.distributions and closed
forms: densities, moments, entropies, KLs (numerical integration where there is no
reference implementation), and that each rsample draws from its distribution (KS tests)."""

import math

import numpy as np
import pytest
import torch
from scipy import integrate, stats

from engine.models.posteriors import Categorical, DiagonalGaussian, GeneralisedGaussian, Laplace, Posterior


@pytest.fixture(autouse=True)
def float64():
    """Compare with SciPy in double precision."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def examples():
    """One of each posterior over a batch of 3 and a last dim of 4."""
    g = torch.Generator().manual_seed(0)
    loc = torch.randn(3, 4, generator=g)
    scale = torch.rand(3, 4, generator=g) + 0.5
    return {
        "gaussian": DiagonalGaussian(loc, 2 * scale.log()),
        "laplace": Laplace(loc, scale),
        "categorical": Categorical(loc),
        "generalised": GeneralisedGaussian(loc, scale, torch.tensor([1.0, 2.0, 3.5, 10.0])),
    }


@pytest.mark.parametrize("name", ["gaussian", "laplace", "categorical", "generalised"])
def test_every_posterior_reads_the_same_way(name):
    q = examples()[name]
    assert isinstance(q, Posterior)
    assert q.mean.shape == q.stddev.shape == (3, 4)
    assert q.rsample().shape == (3, 4) and q.rsample(5).shape == (5, 3, 4)
    assert q.log_prob(q.rsample(5)).shape == (5, 3)  # summed over the last dim


def test_diagonal_gaussian_from_a_network_output_splits_and_clamps_once():
    h = torch.tensor([[0.5, -1.0, -100.0, 100.0], [1.0, 2.0, 0.3, -0.2]])
    q = DiagonalGaussian.from_output(h)
    torch.testing.assert_close(q.mean, h[:, :2])
    torch.testing.assert_close(q.logvar, torch.tensor([[-12.0, 8.0], [0.3, -0.2]]))
    assert DiagonalGaussian.from_output(h, logvar_range=(-12.0, 6.0)).logvar[0, 1] == 6.0
    channels = torch.randn(2, 6, 3, 3)  # (batch, 2 zdim, R, R): split along the channels
    q = DiagonalGaussian.from_output(channels, dim=1)
    torch.testing.assert_close(q.mean, channels[:, :3])
    assert q.stddev is not None and torch.equal(q.stddev, q.std)
    torch.testing.assert_close(q.std, torch.exp(0.5 * channels[:, 3:].clamp(-12.0, 8.0)))


def test_diagonal_gaussian_density_and_kl_against_torch():
    q, p = examples()["gaussian"], DiagonalGaussian(torch.zeros(3, 4), torch.full((3, 4), 0.7))
    tq = torch.distributions.Normal(q.mean, q.std)
    tp = torch.distributions.Normal(p.mean, p.std)
    z = torch.randn(2, 3, 4)
    torch.testing.assert_close(q.log_prob(z), tq.log_prob(z).sum(-1))
    torch.testing.assert_close(q.kl_to(p), torch.distributions.kl_divergence(tq, tp).sum(-1))


def test_laplace_against_scipy():
    q = examples()["laplace"]
    loc, scale = q.base_dist.loc.numpy(), q.base_dist.scale.numpy()
    z = torch.randn(2, 3, 4) * 2
    want = stats.laplace.logpdf(z.numpy(), loc, scale).sum(-1)
    np.testing.assert_allclose(q.log_prob(z).numpy(), want, rtol=1e-12)
    np.testing.assert_allclose(q.stddev.numpy(), stats.laplace.std(loc, scale), rtol=1e-12)
    np.testing.assert_allclose(q.entropy().numpy(), stats.laplace.entropy(loc, scale).sum(-1), rtol=1e-12)
    torch.manual_seed(0)
    draws = q.rsample(4000)[:, 1, 2].numpy()
    assert stats.kstest(draws, stats.laplace(loc[1, 2], scale[1, 2]).cdf).pvalue > 0.01


def test_laplace_kl_against_numerical_integration():
    q, p = Laplace(torch.tensor([0.3]), torch.tensor([0.8])), Laplace(torch.tensor([-0.5]), torch.tensor([1.7]))
    fq, fp = stats.laplace(0.3, 0.8), stats.laplace(-0.5, 1.7)
    want, _ = integrate.quad(lambda s: fq.pdf(s) * (fq.logpdf(s) - fp.logpdf(s)), -60, 60, points=[-0.5, 0.3])
    assert q.kl_to(p).item() == pytest.approx(want, rel=1e-8)


def test_laplace_from_a_network_output_clamps_its_log_scale():
    q = Laplace.from_output(torch.tensor([[1.0, -2.0, -50.0, 0.5]]))
    torch.testing.assert_close(q.mean, torch.tensor([[1.0, -2.0]]))
    torch.testing.assert_close(q.base_dist.scale, torch.tensor([[math.exp(-6.0), math.exp(0.5)]]))


def test_categorical_moments_density_entropy_and_kl():
    logits = torch.tensor([[0.2, -1.0, 1.5], [0.0, 0.0, 0.0]])
    q, p = Categorical(logits), Categorical(torch.tensor([1.0, 0.5, -0.3]).expand(2, 3))
    probs = torch.softmax(logits, -1)
    torch.testing.assert_close(q.mean, probs)
    torch.testing.assert_close(q.stddev, (probs * (1 - probs)).sqrt())  # of each one-hot entry
    one_hot = torch.eye(3)[[2, 0]]
    torch.testing.assert_close(q.log_prob(one_hot), probs.log()[[0, 1], [2, 0]])
    np.testing.assert_allclose(q.entropy().numpy(), stats.entropy(probs.numpy(), axis=-1), rtol=1e-12)
    want = stats.entropy(probs.numpy(), p.probs.numpy(), axis=-1)
    np.testing.assert_allclose(q.kl_to(p).numpy(), want, rtol=1e-12)


def test_categorical_relaxed_draws_pick_each_category_with_its_probability():
    """The argmax of a Concrete draw is a Gumbel-max draw: category k with probability p_k at
    any temperature (Maddison et al. 2017, Prop. 1); lower temperatures sit nearer the corners."""
    q = Categorical(torch.tensor([0.2, -1.0, 1.5]))
    torch.manual_seed(0)
    n = 20000
    for temperature in (2.0, 0.5):
        y = q.rsample(n, temperature=temperature)
        assert y.shape == (n, 3) and torch.allclose(y.sum(-1), torch.ones(n))
        counts = np.bincount(y.argmax(-1).numpy(), minlength=3)
        assert stats.chisquare(counts, n * q.probs.numpy()).pvalue > 0.01
    assert q.rsample(n, temperature=0.1).max(-1).values.mean() > q.rsample(n, temperature=2.0).max(-1).values.mean()


def test_categorical_hard_draws_are_one_hot_with_the_relaxed_gradient():
    logits = torch.tensor([0.2, -1.0, 1.5], requires_grad=True)
    torch.manual_seed(1)
    y = Categorical(logits).rsample(8, temperature=0.5, hard=True)
    assert set(y.detach().unique().tolist()) == {0.0, 1.0} and torch.equal(y.detach().sum(-1), torch.ones(8))
    (y * torch.arange(3.0)).sum().backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0


POWERS = [1.0, 2.0, 3.5, 10.0]


@pytest.mark.parametrize("power", POWERS)
def test_generalised_gaussian_density_moments_and_entropy_against_scipy(power):
    loc, scale = torch.tensor([[0.3, -1.0]]), torch.tensor([[0.7, 2.0]])
    q = GeneralisedGaussian(loc, scale, power)
    ref = stats.gennorm(power, loc.numpy(), scale.numpy())
    z = torch.linspace(-4, 4, 9)[:, None, None].expand(9, 1, 2)
    np.testing.assert_allclose(q.log_prob(z).numpy(), ref.logpdf(z.numpy()).sum(-1), rtol=1e-12)
    np.testing.assert_allclose(q.mean.numpy(), ref.mean(), rtol=1e-12)
    np.testing.assert_allclose(q.variance.numpy(), ref.var(), rtol=1e-10)
    np.testing.assert_allclose(q.stddev.numpy(), ref.std(), rtol=1e-10)
    np.testing.assert_allclose(q.entropy().numpy(), ref.entropy().sum(-1), rtol=1e-10)


def test_generalised_gaussian_with_power_two_is_a_gaussian_and_with_power_one_a_laplace():
    loc, scale = torch.tensor([0.3, -1.0]), torch.tensor([0.7, 2.0])
    z = torch.randn(5, 2)
    gaussian = DiagonalGaussian(loc, torch.log(scale.pow(2) / 2))
    torch.testing.assert_close(GeneralisedGaussian(loc, scale, 2.0).log_prob(z), gaussian.log_prob(z))
    torch.testing.assert_close(GeneralisedGaussian(loc, scale, 1.0).log_prob(z), Laplace(loc, scale).log_prob(z))


@pytest.mark.parametrize("power", POWERS)
def test_generalised_gaussian_draws_follow_its_distribution(power):
    q = GeneralisedGaussian(torch.tensor([0.3]), torch.tensor([0.7]), power)
    torch.manual_seed(0)
    draws = q.rsample(4000)[:, 0].numpy()
    assert stats.kstest(draws, stats.gennorm(power, 0.3, 0.7).cdf).pvalue > 0.01


def test_generalised_gaussian_draws_are_differentiable_in_every_parameter():
    loc, scale, power = (torch.tensor([v], requires_grad=True) for v in (0.3, 0.7, 2.5))
    torch.manual_seed(0)
    GeneralisedGaussian(loc, scale, power).rsample(64).pow(2).mean().backward()
    for t in (loc, scale, power):
        assert t.grad is not None and torch.isfinite(t.grad).all() and t.grad.abs().item() > 0
    # d E[z^2] / d scale by the reparameterisation against the closed form 2 scale Gamma(3/p) / Gamma(1/p)
    scale = torch.tensor([0.7], requires_grad=True)
    torch.manual_seed(1)
    GeneralisedGaussian(torch.zeros(1), scale, 2.5).rsample(200_000).pow(2).mean().backward()
    want = 2 * 0.7 * math.gamma(3 / 2.5) / math.gamma(1 / 2.5)
    assert scale.grad.item() == pytest.approx(want, rel=0.02)


@pytest.mark.parametrize(
    ("q_args", "p_args"), [((0.7, 1.0), (1.0, 10.0)), ((1.3, 2.0), (0.6, 1.0)), ((1.0, 3.0), (1.0, 3.0))]
)
def test_generalised_gaussian_kl_against_numerical_integration(q_args, p_args):
    loc = 0.4
    q = GeneralisedGaussian(torch.tensor([loc]), *(torch.tensor([a]) for a in q_args))
    p = GeneralisedGaussian(torch.tensor([loc]), *(torch.tensor([a]) for a in p_args))
    fq = stats.gennorm(q_args[1], loc, q_args[0])
    fp = stats.gennorm(p_args[1], loc, p_args[0])
    want, _ = integrate.quad(lambda s: fq.pdf(s) * (fq.logpdf(s) - fp.logpdf(s)), loc - 30, loc + 30, points=[loc])
    assert q.kl_to(p).item() == pytest.approx(want, rel=1e-7, abs=1e-10)
    torch.testing.assert_close(torch.distributions.kl_divergence(q, p), q.kl_to(p))


def test_generalised_gaussian_kl_between_different_locations_says_to_estimate_it():
    q = GeneralisedGaussian(torch.tensor([0.0]), 1.0, 2.0)
    p = GeneralisedGaussian(torch.tensor([1.0]), 1.0, 2.0)
    with pytest.raises(NotImplementedError, match="Monte Carlo"):
        q.kl_to(p)
