"""Exchangeable data models for the martingale checks: Z_i ~ Bernoulli(theta*) or
N(theta*, sd^2), i.i.d. (seed000 §4.3)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from engine.errors import AtlasError


def sample_observations(
    family: str, theta: torch.Tensor, m: int, generator: torch.Generator | None = None, sd: float = 1.0
) -> torch.Tensor:
    """m i.i.d. draws given each theta: theta (...) -> z (..., m)."""
    shape = (*theta.shape, m)
    # in place: (K, J, m) bootstrap tensors are large, and a bool -> float copy is slow
    if family == "bernoulli":
        return torch.rand(shape, generator=generator, dtype=theta.dtype).lt_(theta.unsqueeze(-1))
    if family == "gaussian":
        return torch.randn(shape, generator=generator, dtype=theta.dtype).mul_(sd).add_(theta.unsqueeze(-1))
    raise AtlasError(f"unknown observation family {family!r}: use 'bernoulli' or 'gaussian'")


def quantize(z: torch.Tensor, quantum: float | None) -> torch.Tensor:
    """Truncate toward zero to a multiple of quantum (0.1 mimics a language model's
    one-decimal tokens, as the authors' reference does: seed000 §4.2); None: unchanged."""
    if quantum is None:
        return z
    return torch.trunc(z / quantum) * quantum


@dataclass(frozen=True)
class BernoulliData:
    """Z_i ~ Bernoulli(theta), i.i.d."""

    theta: float
    family = "bernoulli"

    def __post_init__(self):
        if not 0.0 <= self.theta <= 1.0:
            raise AtlasError(f"a Bernoulli theta must lie in [0, 1], got {self.theta}")

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """z: (n,)"""
        return sample_observations("bernoulli", torch.tensor(float(self.theta)), n, generator)


@dataclass(frozen=True)
class GaussianData:
    """Z_i ~ N(theta, sd^2), i.i.d."""

    theta: float
    sd: float = 1.0
    family = "gaussian"

    def __post_init__(self):
        if not self.sd > 0:
            raise AtlasError(f"the Gaussian data sd must be positive, got {self.sd}")

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """z: (n,)"""
        return sample_observations("gaussian", torch.tensor(float(self.theta)), n, generator, sd=self.sd)
