"""The sequential-predictor protocol: the predictive distribution of the next observation.

A sequential predictor defines p_M(z_{t+1} | z_1..t) (seed000 §4.1). The path sampler
(`engine.sequence.paths.sample_paths`) and the martingale checks
(`engine.diagnostics.martingale`) only need three methods, all batched over contexts:

- ``start(context)``: ``context: (batch, n)`` -> a state that summarises each context;
- ``predictive(state)``: the distribution of the next observation, one per context;
- ``update(state, z)``: ``z: (batch,)`` -> the state with z appended to each context.

Extending a context by one observation is one ``update``, never a re-run over the whole
context: a conjugate model keeps sufficient statistics, a recurrent network its hidden
state, a causal transformer its key/value cache (``start`` runs the network once over the
context, ``update`` feeds one new token through the cache). The state is opaque to the
sampler; it may be a tensor, a tuple or any object.

``family`` says what the observations are: ``"bernoulli"`` (z in {0, 1}) or
``"gaussian"`` (real z). ``predictive`` returns a `BernoulliPredictive` or a
`GaussianPredictive`, or any object with the same attributes (``mean``,
``sample(generator)``).

Example: your own predictor, here a Laplace-smoothed running mean that forgets nothing::

    import torch
    from engine.sequence import BernoulliPredictive, sample_paths

    class RunningMean:
        family = "bernoulli"

        def start(self, context):                # context: (batch, n)
            ones = context.sum(-1)               # (batch,)
            count = torch.full_like(ones, context.shape[-1])
            return ones, count

        def predictive(self, state):
            ones, count = state
            return BernoulliPredictive((ones + 1) / (count + 2))

        def update(self, state, z):              # z: (batch,)
            ones, count = state
            return ones + z, count + 1

    observed = torch.tensor([1.0, 0, 0, 1, 1, 0, 1, 1])
    paths = sample_paths(RunningMean(), observed, m=50, paths=200)   # paths.z: (200, 50)

(That predictor is the exact Beta(1, 1)-Bernoulli model, `BetaBernoulli()`.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import torch

FAMILIES = ("bernoulli", "gaussian")


@dataclass
class BernoulliPredictive:
    """p(z_{t+1} = 1 | context) per context; prob: (batch,)."""

    prob: torch.Tensor
    family = "bernoulli"

    @property
    def mean(self) -> torch.Tensor:
        return self.prob

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        return (torch.rand(self.prob.shape, generator=generator, dtype=self.prob.dtype) < self.prob).to(self.prob.dtype)

    def shifted(self, delta: float) -> BernoulliPredictive:
        """The mean moved by delta, clipped to [0, 1]."""
        return BernoulliPredictive((self.prob + delta).clamp(0.0, 1.0))

    def sharpened(self, beta: float) -> BernoulliPredictive:
        """The mass function raised to beta and renormalised: sigmoid(beta * logit p)."""
        return BernoulliPredictive(torch.sigmoid(beta * torch.logit(self.prob)))


@dataclass
class GaussianPredictive:
    """N(mean, std^2) for z_{t+1} per context; mean, std: (batch,)."""

    mean: torch.Tensor
    std: torch.Tensor
    family = "gaussian"

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.mean + self.std * torch.randn(self.mean.shape, generator=generator, dtype=self.mean.dtype)

    def shifted(self, delta: float) -> GaussianPredictive:
        return GaussianPredictive(self.mean + delta, self.std)

    def sharpened(self, beta: float) -> GaussianPredictive:
        """The density raised to beta and renormalised: the variance divided by beta."""
        return GaussianPredictive(self.mean, self.std / beta**0.5)


Predictive = BernoulliPredictive | GaussianPredictive


class SequentialPredictor(Protocol):
    """p_M(z_{t+1} | z_1..t), batched over contexts, with an incremental state."""

    family: str

    def start(self, context: torch.Tensor) -> Any:
        """State for each row of ``context: (batch, n)``."""

    def predictive(self, state: Any) -> Predictive:
        """The distribution of the next observation for each context in the state."""

    def update(self, state: Any, z: torch.Tensor) -> Any:
        """The state after appending ``z: (batch,)`` to each context."""
