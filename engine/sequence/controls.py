"""Controls that break the martingale property in known ways, wrapped around any predictor
whose predictive has ``shifted`` and ``sharpened`` (both built-in families do).

- `Biased`: the predictive mean plus delta (clipped to [0, 1] for Bernoulli). Each imputed
  observation pushes the posterior further, so the predictive drifts by about
  delta * log((n + m) / n) over a path: T1 turns negative (seed000 §4.5).
- `Sharpened`: the predictive raised to the power beta > 1 and renormalised
  (Bernoulli: sigmoid(beta * logit p); Gaussian: variance / beta). Predictions are pulled
  toward the nearer end, so paths drift away from 1/2: detected by T1 on short paths.

Exponential forgetting and fractional posteriors are parameters of the conjugate models
(`BetaBernoulli(forget=0.95)`, `BetaBernoulli(alpha=2.0)`), see `engine.sequence.conjugate`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from engine.errors import AtlasError
from engine.sequence.predictor import Predictive, SequentialPredictor


class _Wrapped:
    """Delegates the family, the context state and its updates to ``self.base``; a control
    changes only the predictive."""

    base: SequentialPredictor

    @property
    def family(self) -> str:
        return self.base.family

    def start(self, context: torch.Tensor) -> Any:
        return self.base.start(context)

    def update(self, state: Any, z: torch.Tensor) -> Any:
        return self.base.update(state, z)


@dataclass(frozen=True)
class Biased(_Wrapped):
    """p_M(. | z_1..t) of ``base`` with its mean moved by ``delta``."""

    base: SequentialPredictor
    delta: float

    def predictive(self, state: Any) -> Predictive:
        return self.base.predictive(state).shifted(self.delta)


@dataclass(frozen=True)
class Sharpened(_Wrapped):
    """p_M(. | z_1..t) of ``base`` raised to the power ``beta`` and renormalised."""

    base: SequentialPredictor
    beta: float

    def __post_init__(self):
        if not self.beta > 0:
            raise AtlasError(f"the sharpening power beta must be positive (> 1 sharpens), got {self.beta}")

    def predictive(self, state: Any) -> Predictive:
        return self.base.predictive(state).sharpened(self.beta)
