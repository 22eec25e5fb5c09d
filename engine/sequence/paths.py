"""Continuation paths z_{n+1..n+m} from a sequential predictor, all J paths at once
(seed000 §4.5, Algorithm A step 2 and Algorithm B)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from engine.errors import AtlasError
from engine.sequence.data import quantize
from engine.sequence.predictor import FAMILIES, SequentialPredictor


@dataclass
class Paths:
    """J sampled continuations of each observed sequence.

    observed: (..., n); z: (..., J, m), z[..., j, i] = z^(j)_{n+i+1};
    predictive_mean: (..., J, m + 1), the predictive mean E_M[Z_{n+i+1} | context] after i
    imputed steps, i = 0..m (theta_{n+i} of the Doob fan; for Bernoulli p_M(Z = 1 | ctx)).
    """

    observed: torch.Tensor
    z: torch.Tensor
    predictive_mean: torch.Tensor
    family: str
    permuted: bool
    quantum: float | None

    @property
    def n(self) -> int:
        return self.observed.shape[-1]

    @property
    def m(self) -> int:
        return self.z.shape[-1]


def check_observed(observed: torch.Tensor, family: str) -> torch.Tensor:
    """observed as a float tensor (..., n), checked for the family; AtlasError if not."""
    if family not in FAMILIES:
        raise AtlasError(f"unknown observation family {family!r}: use one of {FAMILIES}")
    observed = torch.as_tensor(observed, dtype=torch.get_default_dtype())
    if observed.dim() == 0:
        raise AtlasError("observed data must be a sequence z_1..z_n (a 1-d tensor), got a scalar")
    if not torch.isfinite(observed).all():
        raise AtlasError("observed data contain NaN or infinite values; remove them first")
    if family == "bernoulli" and not ((observed == 0) | (observed == 1)).all():
        raise AtlasError("Bernoulli observations must be 0 or 1; recode the data or choose the Gaussian family")
    return observed


def sample_paths(
    predictor: SequentialPredictor,
    observed: torch.Tensor,
    m: int,
    paths: int = 200,
    *,
    permute: bool = True,
    quantum: float | None = None,
    generator: torch.Generator | None = None,
) -> Paths:
    """Draw ``paths`` continuations of length ``m`` after ``observed: (..., n)``.

    Each path starts from its own random permutation of z_1..z_n when ``permute`` (the
    martingale checks, seed000 §4.3), from the given order otherwise (the T3 study). All
    paths advance together: one ``predictive`` and one ``update`` call per step on a batch
    of (...) x J contexts. ``quantum`` truncates each sampled Gaussian value (0.1 mimics
    one-decimal tokens) before it is recorded and fed back.
    """
    observed = check_observed(observed, predictor.family)
    if m < 2:
        raise AtlasError(f"paths need at least m = 2 steps (T1 compares two halves), got m = {m}")
    if paths < 1:
        raise AtlasError(f"need at least one path, got {paths}")
    batch, n = observed.shape[:-1], observed.shape[-1]
    contexts = observed.unsqueeze(-2).expand(*batch, paths, n)  # (..., J, n)
    if permute:
        order = torch.rand(contexts.shape, generator=generator).argsort(-1)
        contexts = contexts.gather(-1, order)
    flat = contexts.reshape(math.prod(batch) * paths, n)

    state = predictor.start(flat)
    z_steps, mean_steps = [], []
    for _ in range(m):
        pred = predictor.predictive(state)
        z = quantize(pred.sample(generator), quantum)  # (B J,)
        mean_steps.append(pred.mean)
        z_steps.append(z)
        state = predictor.update(state, z)
    mean_steps.append(predictor.predictive(state).mean)
    return Paths(
        observed=observed,
        z=torch.stack(z_steps, -1).reshape(*batch, paths, m),
        predictive_mean=torch.stack(mean_steps, -1).reshape(*batch, paths, m + 1),
        family=predictor.family,
        permuted=permute,
        quantum=quantum,
    )
