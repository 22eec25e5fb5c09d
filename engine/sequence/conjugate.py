"""Conjugate sequential predictors: the exact Bayesian models and two controls built on them.

Both families keep the weighted sufficient statistics of the context,

    count_t = sum_i w_i,   total_t = sum_i w_i z_i,   w_i = alpha * forget^(t - i),

so `update` is O(1) per path: count <- forget * count + alpha, total <- forget * total + alpha * z.

- ``alpha = 1, forget = 1``: the exact Bayesian posterior predictive. `BetaBernoulli`:
  p_t = (a + s_t) / (a + b + t); `NormalNormal`: N(mu_t, obs_var + v_t) with the Normal
  posterior N(mu_t, v_t) of the mean. These are martingales (seed000 Example 5.2).
- ``alpha != 1``: the fractional (alpha-) posterior, likelihood raised to alpha, i.e. a
  posterior computed as if every observation were seen alpha times (seed000 §4.3,
  "n_ref = alpha n"). Known behaviour: for Bernoulli it is a Polya urn with reinforcement
  alpha, exchangeable and equal in law to Bayes with the prior Beta(a/alpha, b/alpha), so
  it passes T1/T2 and its martingale posterior is Bayes-like; for Gaussian the predictive
  mean stays a martingale but the predictive variance obs_var + v_t no longer matches how
  much the mean will move, a drift of E[z^2] of order (alpha - 1)/n. As a *reference*
  (`posterior(observed)` with alpha = 0.5 or 2) it gives the fractional-Bayes T3 curves.
- ``forget < 1``: exponential forgetting, weights forget^(age) on past observations (seed000
  §4.5: p = (1 + sum lambda^(t-i) z_i) / (2 + sum lambda^(t-i)) for Beta(1, 1)). Not a
  martingale unless forget = 1; with lambda = 0.95 the drift is too small for T1/T2 at J = 200
  but the martingale posterior is far wider than the Bayes posterior, which T3 detects.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from scipy.special import betaincinv, ndtri

from engine.errors import AtlasError
from engine.sequence.predictor import BernoulliPredictive, GaussianPredictive


@dataclass
class ConjugateState:
    """Weighted sufficient statistics per context; tensors (batch,)."""

    count: torch.Tensor  # sum_i w_i
    total: torch.Tensor  # sum_i w_i z_i


def _weighted_stats(context: torch.Tensor, alpha: float, forget: float) -> ConjugateState:
    """context: (..., n) -> weighted statistics (...), weights alpha * forget^(n - i)."""
    n = context.shape[-1]
    age = torch.arange(n - 1, -1, -1, dtype=context.dtype)  # (n,): n-1 for z_1, ..., 0 for z_n
    w = alpha * forget**age
    return ConjugateState(count=w.sum().expand(context.shape[:-1]).clone(), total=(context * w).sum(-1))


def _check_weights(alpha: float, forget: float) -> None:
    if not alpha > 0:
        raise AtlasError(f"the fractional-posterior power alpha must be positive, got {alpha}")
    if not 0 < forget <= 1:
        raise AtlasError(f"the forgetting factor must lie in (0, 1] (1 = no forgetting), got {forget}")


def _gamma(concentration: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    # torch.distributions.Gamma cannot take a generator; this is the sampler it calls.
    return torch._standard_gamma(concentration, generator=generator)


@dataclass
class BetaPosterior:
    """Beta(a, b) per batch element; a, b: (...)."""

    a: torch.Tensor
    b: torch.Tensor

    @property
    def mean(self) -> torch.Tensor:
        return self.a / (self.a + self.b)

    def sample(self, shape: tuple[int, ...], generator: torch.Generator | None = None) -> torch.Tensor:
        """theta: (*shape, ...) as G_a / (G_a + G_b), G ~ Gamma."""
        full = (*shape, *self.a.shape)
        ga = _gamma(self.a.expand(full).contiguous(), generator)
        gb = _gamma(self.b.expand(full).contiguous(), generator)
        return ga / (ga + gb)

    def interval(self, level: float = 0.95) -> tuple[torch.Tensor, torch.Tensor]:
        """The central credible interval, (low, high) each (...)."""
        q = (1 - level) / 2
        a, b = self.a.double().numpy(), self.b.double().numpy()
        return torch.as_tensor(betaincinv(a, b, q)), torch.as_tensor(betaincinv(a, b, 1 - q))


@dataclass
class NormalPosterior:
    """N(mean, var) per batch element; mean, var: (...)."""

    mean: torch.Tensor
    var: torch.Tensor

    def sample(self, shape: tuple[int, ...], generator: torch.Generator | None = None) -> torch.Tensor:
        """theta: (*shape, ...)"""
        full = (*shape, *self.mean.shape)
        return self.mean + self.var.sqrt() * torch.randn(full, generator=generator, dtype=self.mean.dtype)

    def interval(self, level: float = 0.95) -> tuple[torch.Tensor, torch.Tensor]:
        half = float(ndtri(0.5 + level / 2)) * self.var.sqrt()
        return self.mean - half, self.mean + half


@dataclass(frozen=True)
class BetaBernoulli:
    """Beta(a, b) prior, Bernoulli likelihood; exact Bayes when alpha = forget = 1."""

    a: float = 1.0
    b: float = 1.0
    alpha: float = 1.0  # likelihood power (fractional posterior)
    forget: float = 1.0  # weight forget^(age) on past observations
    family: ClassVar[str] = "bernoulli"

    def __post_init__(self):
        if not (self.a > 0 and self.b > 0):
            raise AtlasError(f"a Beta prior needs a > 0 and b > 0, got a={self.a}, b={self.b}")
        _check_weights(self.alpha, self.forget)

    def start(self, context: torch.Tensor) -> ConjugateState:
        return _weighted_stats(context, self.alpha, self.forget)

    def update(self, state: ConjugateState, z: torch.Tensor) -> ConjugateState:
        return ConjugateState(self.forget * state.count + self.alpha, self.forget * state.total + self.alpha * z)

    def predictive(self, state: ConjugateState) -> BernoulliPredictive:
        return BernoulliPredictive(self.posterior_from_stats(state.count, state.total).mean)

    def posterior_from_stats(self, count, total) -> BetaPosterior:
        """Beta(a + total, b + count - total) from (weighted) counts of trials and ones."""
        count, total = torch.as_tensor(count), torch.as_tensor(total)
        return BetaPosterior(self.a + total, self.b + count - total)

    def posterior(self, observed: torch.Tensor) -> BetaPosterior:
        """The posterior given observed: (..., n), with this model's alpha and forgetting."""
        s = _weighted_stats(observed, self.alpha, self.forget)
        return self.posterior_from_stats(s.count, s.total)


@dataclass(frozen=True)
class NormalNormal:
    """N(mean, var) prior on theta, N(theta, obs_var) likelihood with obs_var known;
    exact Bayes when alpha = forget = 1."""

    mean: float = 0.0
    var: float = 100.0
    obs_var: float = 1.0
    alpha: float = 1.0
    forget: float = 1.0
    family: ClassVar[str] = "gaussian"

    def __post_init__(self):
        if not (self.var > 0 and self.obs_var > 0):
            raise AtlasError(f"prior and observation variances must be positive, got {self.var}, {self.obs_var}")
        _check_weights(self.alpha, self.forget)

    def start(self, context: torch.Tensor) -> ConjugateState:
        return _weighted_stats(context, self.alpha, self.forget)

    def update(self, state: ConjugateState, z: torch.Tensor) -> ConjugateState:
        return ConjugateState(self.forget * state.count + self.alpha, self.forget * state.total + self.alpha * z)

    def predictive(self, state: ConjugateState) -> GaussianPredictive:
        post = self.posterior_from_stats(state.count, state.total)
        return GaussianPredictive(post.mean, (self.obs_var + post.var).sqrt())

    def posterior_from_stats(self, count, total) -> NormalPosterior:
        """precision = 1/var + count/obs_var, mean = (mean/var + total/obs_var) / precision."""
        count, total = torch.as_tensor(count), torch.as_tensor(total)
        precision = 1.0 / self.var + count / self.obs_var
        return NormalPosterior((self.mean / self.var + total / self.obs_var) / precision, 1.0 / precision)

    def posterior(self, observed: torch.Tensor) -> NormalPosterior:
        s = _weighted_stats(observed, self.alpha, self.forget)
        return self.posterior_from_stats(s.count, s.total)


Reference = BetaBernoulli | NormalNormal

# The priors of the exchangeable sequences the in-context learner is trained on (seed000
# §4.5): theta ~ Beta(1, 1) with z_i ~ Bernoulli(theta), and theta ~ N(0, 1) with
# z_i ~ N(theta, 1). Each is also the Bayes-optimal predictor for its own data.
PRIORS: dict[str, Reference] = {
    "bernoulli": BetaBernoulli(a=1.0, b=1.0),
    "gaussian": NormalNormal(mean=0.0, var=1.0, obs_var=1.0),
}


def reference_model(family: str) -> Reference:
    """The authors' reference models for the martingale checks (seed000 §4.2):
    Beta(1, 1)-Bernoulli, and N(theta, 1) with the prior N(0, 100)."""
    if family == "bernoulli":
        return BetaBernoulli(1.0, 1.0)
    if family == "gaussian":
        return NormalNormal(0.0, 100.0, 1.0)
    raise AtlasError(f"no reference model for family {family!r}: use 'bernoulli' or 'gaussian'")
