"""The distributions an encoder returns for a latent group, one entry per value of the group's last dim.

Every posterior reads the same way, so generic code works on any family:

    q.mean, q.stddev        (..., dim)
    q.rsample(n)            a reparameterised draw, (n, ..., dim), or (..., dim) for n = None
    q.log_prob(z)           log q(z) summed over the last dim, (...)
    q.kl_to(p)              KL(q || p) summed over the last dim, (...)

- `DiagonalGaussian`: N(mean, diag exp(logvar)), the families' usual posterior.
- `Laplace`: independent Laplace(loc, scale) (TD-VAE's z1, Bijecta's q(s | z)).
- `Categorical`: a one-hot categorical whose rsample draws from its Concrete (Gumbel-softmax)
  relaxation (GM-DGM's y, RRVQ-VAE's codes, UG-VAE's d).
- `GeneralisedGaussian`: independent GG(loc, scale, power) (Bijecta's sources, seed001 §3.1).
- `GaussianMixturePosterior`: sum_k w_k N(mean_k, var_k), q(z | x) with a discrete latent
  summed out (GM-DGM and the SSVAE); it has no closed-form KL.

Laplace and Categorical are torch.distributions with these calling conventions added; KL
goes through torch's `kl_divergence` registry, where the GeneralisedGaussian's KL is registered.
A network's output becomes a posterior in `from_output` and nowhere else, so the split into
location and log-scale and the clamp of the log-scale are written once.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
import torch.distributions as D
from torch.distributions import constraints
from torch.distributions.utils import broadcast_all

from engine.numerics import gaussian_kl_elementwise, gaussian_log_prob
from engine.randomness import forked_global, stream

LOGVAR_RANGE = (-12.0, 8.0)  # clamp of a Gaussian's log-variance from a network
LOG_SCALE_RANGE = (-6.0, 4.0)  # the same range for a log standard deviation or log-scale


@runtime_checkable
class Posterior(Protocol):
    """What generic code may read from any family's q(z_g | x); tensors (..., dim)."""

    @property
    def mean(self) -> torch.Tensor: ...

    @property
    def stddev(self) -> torch.Tensor: ...

    def rsample(self, n: int | None = None) -> torch.Tensor: ...

    def log_prob(self, z: torch.Tensor) -> torch.Tensor: ...


def _sample_shape(n: int | Sequence[int] | None) -> torch.Size:
    """n draws as torch's sample_shape; a sequence passes through (torch calls rsample with one)."""
    if n is None:
        return torch.Size()
    return torch.Size((n,)) if isinstance(n, int) else torch.Size(n)


@dataclass
class DiagonalGaussian:
    """N(mean, diag(exp(logvar))); tensors (..., dim)."""

    mean: torch.Tensor
    logvar: torch.Tensor

    @classmethod
    def from_output(
        cls, h: torch.Tensor, logvar_range: tuple[float, float] = LOGVAR_RANGE, dim: int = -1
    ) -> DiagonalGaussian:
        """A network's output (..., 2 d, ...) along `dim`: the first half the mean, the second
        the log-variance, clamped to `logvar_range`."""
        mean, logvar = h.chunk(2, dim=dim)
        return cls(mean, logvar.clamp(*logvar_range))

    @property
    def std(self) -> torch.Tensor:
        return torch.exp(0.5 * self.logvar)

    @property
    def stddev(self) -> torch.Tensor:
        """`std` under the name torch.distributions use, which every posterior has."""
        return self.std

    def rsample(self, n: int | None = None, temperature: float = 1.0) -> torch.Tensor:
        """Reparameterised draw, shape (n, ..., dim) if n is given else (..., dim)."""
        shape = self.mean.shape if n is None else (n, *self.mean.shape)
        eps = torch.randn(shape, generator=stream(), device=self.mean.device, dtype=self.mean.dtype)
        return self.mean + temperature * self.std * eps

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log N(z; mean, var) summed over the last dim; z broadcasts against mean."""
        return gaussian_log_prob(z, self.mean, self.logvar).sum(-1)

    def kl_to(self, other: DiagonalGaussian) -> torch.Tensor:
        """KL(self || other) summed over the last dim, in closed form."""
        return gaussian_kl_elementwise(self.mean, self.logvar, other.mean, other.logvar).sum(-1)

    def kl_to_standard_normal(self) -> torch.Tensor:
        """KL(N(mean, var) || N(0, I)) summed over the last dim, in closed form."""
        return 0.5 * (self.mean.pow(2) + self.logvar.exp() - 1.0 - self.logvar).sum(-1)


class Laplace(D.Independent):
    """Laplace(loc, scale) independently per entry of the last dim: density
    exp(-|z - loc| / scale) / (2 scale); mean loc, stddev sqrt(2) scale."""

    def __init__(self, loc: torch.Tensor, scale: torch.Tensor):
        super().__init__(D.Laplace(loc, scale, validate_args=False), 1, validate_args=False)

    @classmethod
    def from_output(cls, h: torch.Tensor, log_scale_range: tuple[float, float] = LOG_SCALE_RANGE) -> Laplace:
        """A network's output (..., 2 d): the location, then the log-scale clamped to `log_scale_range`."""
        loc, log_scale = h.chunk(2, dim=-1)
        return cls(loc, log_scale.clamp(*log_scale_range).exp())

    def rsample(self, n: int | Sequence[int] | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        """A reparameterised draw by the inverse CDF, loc - scale sign(u) log(1 - |u|) with
        u ~ U(-1, 1), from the current random stream (torch's own draws from the global generator)."""
        loc, scale = self.base_dist.loc, self.base_dist.scale
        shape = _sample_shape(n) + loc.shape
        u = torch.rand(shape, generator=stream(generator), dtype=loc.dtype, device=loc.device)
        u = (2 * u - 1).clamp(torch.finfo(loc.dtype).eps - 1, 1 - torch.finfo(loc.dtype).eps)
        return loc - scale * u.sign() * torch.log1p(-u.abs())

    def kl_to(self, other: D.Distribution) -> torch.Tensor:
        """KL(self || other) summed over the last dim, through torch's registry."""
        return D.kl_divergence(self, other)


class Categorical(D.OneHotCategorical):
    """A categorical over the last dim (K categories) with one-hot values; mean = probs,
    stddev = sqrt(probs (1 - probs)). `rsample` draws from the Concrete / Gumbel-softmax
    relaxation (Maddison et al. 2017; Jang et al. 2017), differentiable in the logits."""

    has_rsample = True

    def __init__(self, logits: torch.Tensor):
        super().__init__(logits=logits, validate_args=False)

    def rsample(
        self, n: int | Sequence[int] | None = None, temperature: float = 1.0, hard: bool = False
    ) -> torch.Tensor:
        """A relaxed one-hot draw (n, ..., K) on the simplex, sharper as `temperature` falls;
        `hard` returns the one-hot argmax with the relaxed draw's gradient (straight through)."""
        t = torch.as_tensor(temperature, dtype=self.logits.dtype, device=self.logits.device)
        y = D.RelaxedOneHotCategorical(t, logits=self.logits, validate_args=False).rsample(_sample_shape(n))
        if hard:
            one_hot = torch.zeros_like(y).scatter_(-1, y.argmax(-1, keepdim=True), 1.0)
            y = one_hot - y.detach() + y
        return y

    def hard_sample(
        self, n: int | Sequence[int] | None = None, temperature: float = 1.0, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Exact one-hot draws (n, ..., K) from softmax(logits / temperature) by the Gumbel-max
        trick, with noise from the current random stream (or `generator`); not differentiable."""
        shape = _sample_shape(n) + self.logits.shape
        g = stream(generator)
        device = g.device if g is not None else self.logits.device  # a CPU generator draws for a GPU model too
        u = torch.rand(shape, generator=g, dtype=self.logits.dtype, device=device).to(self.logits.device)
        gumbel = -torch.log(-torch.log(u.clamp(1e-20, 1.0 - 1e-7)))
        index = (self.logits / temperature + gumbel).argmax(-1, keepdim=True)
        return torch.zeros(shape, dtype=self.logits.dtype, device=self.logits.device).scatter_(-1, index, 1.0)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """sum_k value_k log p_k: log p of a one-hot value; for a relaxed (soft) value, the
        log-probabilities weighted by it. (...)"""
        return (value * self.logits).sum(-1)

    def kl_to(self, other: D.Distribution) -> torch.Tensor:
        """KL(self || other) = sum_k p_k (log p_k - log q_k), through torch's registry."""
        return D.kl_divergence(self, other)


@dataclass
class GaussianMixturePosterior:
    """sum_k w_k N(means_k, diag exp(logvars_k)): q(z | x) = sum_y q(y | x) q(z | x, y) of a
    model with a discrete latent y summed out. log_weights (..., K); means, logvars (..., K, dim)."""

    log_weights: torch.Tensor
    means: torch.Tensor
    logvars: torch.Tensor

    @property
    def mean(self) -> torch.Tensor:
        return (self.log_weights.exp().unsqueeze(-1) * self.means).sum(-2)

    @property
    def stddev(self) -> torch.Tensor:
        """By the law of total variance: E_k[var_k] + Var_k[mean_k], per dimension."""
        w = self.log_weights.exp().unsqueeze(-1)
        second = (w * (self.logvars.exp() + self.means.square())).sum(-2)
        return (second - self.mean.square()).clamp_min(0).sqrt()

    def rsample(self, n: int | None = None) -> torch.Tensor:
        """Draws (n, ..., dim): a component from the weights, then a reparameterised Gaussian
        (differentiable in the components' parameters, not in the weights)."""
        shape = _sample_shape(n)
        k = self.log_weights.shape[-1]
        flat = self.log_weights.exp().reshape(-1, k)
        pick = torch.multinomial(flat, shape.numel() or 1, replacement=True, generator=stream())  # (rows, n)
        pick = pick.T.reshape(*(shape or (1,)), *self.log_weights.shape[:-1])
        index = pick[..., None, None].expand(*pick.shape, 1, self.means.shape[-1])
        mean = self.means.expand(*pick.shape, *self.means.shape[-2:]).gather(-2, index).squeeze(-2)
        logvar = self.logvars.expand(*pick.shape, *self.logvars.shape[-2:]).gather(-2, index).squeeze(-2)
        z = DiagonalGaussian(mean, logvar).rsample()
        return z if shape else z.squeeze(0)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log sum_k w_k N(z; means_k, var_k); z (..., dim) broadcasts against the batch."""
        per = gaussian_log_prob(z.unsqueeze(-2), self.means, self.logvars).sum(-1)
        return torch.logsumexp(self.log_weights + per, -1)


class GeneralisedGaussian(D.Distribution):
    """GG(loc, scale, power) independently per entry of the last dim (seed001 §3.1):

        f(z) = power / (2 scale Gamma(1 / power)) exp(-(|z - loc| / scale)^power)

    power 2 is N(loc, scale^2 / 2), power 1 is Laplace(loc, scale), large powers tend to
    the uniform on [loc - scale, loc + scale]; scipy.stats.gennorm(power, loc, scale)."""

    arg_constraints = {"loc": constraints.real, "scale": constraints.positive, "power": constraints.positive}
    support = constraints.independent(constraints.real, 1)
    has_rsample = True

    def __init__(self, loc: torch.Tensor, scale: torch.Tensor | float, power: torch.Tensor | float):
        self.loc, self.scale, self.power = broadcast_all(loc, scale, power)
        shape = self.loc.shape
        super().__init__(shape[:-1], shape[-1:], validate_args=False)

    @property
    def mean(self) -> torch.Tensor:
        return self.loc

    @property
    def variance(self) -> torch.Tensor:
        """scale^2 Gamma(3 / power) / Gamma(1 / power)."""
        p = self.power
        return self.scale.pow(2) * torch.exp(torch.lgamma(3.0 / p) - torch.lgamma(1.0 / p))

    def _log_normaliser(self) -> torch.Tensor:
        """log (power / (2 scale Gamma(1 / power))), elementwise."""
        p = self.power
        return p.log() - math.log(2.0) - self.scale.log() - torch.lgamma(1.0 / p)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        return (self._log_normaliser() - ((z - self.loc).abs() / self.scale).pow(self.power)).sum(-1)

    def entropy(self) -> torch.Tensor:
        """1 / power - log (power / (2 scale Gamma(1 / power))) per entry, summed."""
        return (1.0 / self.power - self._log_normaliser()).sum(-1)

    def rsample(self, n: int | Sequence[int] | None = None) -> torch.Tensor:
        """z = loc + scale * sign * g^(1 / power) with g ~ Gamma(1 / power, 1) and a fair random
        sign: (|z - loc| / scale)^power is then Gamma(1 / power) distributed, which is the GG.
        The Gamma draw is reparameterised, so the draw is differentiable in all three parameters."""
        shape = _sample_shape(n)
        generator = stream()
        with forked_global(generator):  # torch draws Gamma variates from the global generator only
            g = D.Gamma(1.0 / self.power, torch.ones_like(self.power), validate_args=False).rsample(shape)
        sign = torch.where(torch.rand(g.shape, generator=generator, dtype=g.dtype, device=g.device) < 0.5, -1.0, 1.0)
        return self.loc + self.scale * sign * g.pow(1.0 / self.power)

    def kl_to(self, other: D.Distribution) -> torch.Tensor:
        """KL(self || other) summed over the last dim, through torch's registry."""
        return D.kl_divergence(self, other)


@D.register_kl(GeneralisedGaussian, GeneralisedGaussian)
def _kl_generalised_gaussians(q: GeneralisedGaussian, p: GeneralisedGaussian) -> torch.Tensor:
    """KL(q || p) in closed form for a common location (the usual case: zero-centred sources):

        log(p_q s_p Gamma(1/p_p) / (p_p s_q Gamma(1/p_q))) - 1/p_q
            + (s_q / s_p)^p_p Gamma((p_p + 1) / p_q) / Gamma(1 / p_q)

    from E_q[(|z - loc| / s_q)^a] = Gamma((a + 1) / p_q) / Gamma(1 / p_q). With different
    locations there is no closed form; estimate it from `rsample` and `log_prob`."""
    if not torch.equal(q.loc, p.loc):
        raise NotImplementedError(
            "the KL between generalised Gaussians has a closed form for a common location only; "
            "estimate it by Monte Carlo: (q.log_prob(z) - p.log_prob(z)).mean(0) with z = q.rsample(n)"
        )
    pq, pp = q.power, p.power
    moment = torch.exp(pp * (q.scale.log() - p.scale.log()) + torch.lgamma((pp + 1.0) / pq) - torch.lgamma(1.0 / pq))
    return (q._log_normaliser() - p._log_normaliser() - 1.0 / pq + moment).sum(-1)
