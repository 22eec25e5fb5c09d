"""Observation models p(x | z) for decoders: the decoder emits `params`, these turn
them into log-likelihoods (summed over all data dimensions) and a mean."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from engine.errors import AtlasError
from engine.numerics import gaussian_log_prob


class Bernoulli(nn.Module):
    """x in [0, 1]; params are logits. For grey values this is the usual (unnormalised
    continuous) Bernoulli cross-entropy."""

    def __init__(self, event_shape: tuple[int, ...]):
        super().__init__()
        self.event_dims = len(event_shape)

    def log_prob(self, x: torch.Tensor, logits: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x: (batch, *event); logits: (..., batch, *event) -> (..., batch). mask (batch,
        *event) of 0/1 counts only the observed entries (inpainting)."""
        nll = F.binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none")
        if mask is not None:
            nll = nll * mask
        return -nll.flatten(-self.event_dims).sum(-1)

    def mean(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(logits)


class Gaussian(nn.Module):
    """x real; params are means. The variance is one learned log-variance per data
    dimension, or, given `sd`, fixed at sd^2 everywhere (seed000 Table A.1: sd 0.6 on
    3DShapes, 0.3 on SVHN). A fixed variance is a buffer, so checkpoints keep their layout."""

    def __init__(self, event_shape: tuple[int, ...], init_logvar: float = -2.0, sd: float | None = None):
        super().__init__()
        if sd is None:
            self.logvar = nn.Parameter(torch.full(event_shape, init_logvar))
        else:
            self.register_buffer("logvar", torch.full(event_shape, 2.0 * math.log(sd)))

    def log_prob(self, x: torch.Tensor, mean: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x: (batch, *event); mean: (..., batch, *event) -> (..., batch). mask (batch,
        *event) of 0/1 counts only the observed entries (inpainting)."""
        logvar = self.logvar.clamp(-9.0, 5.0)
        lp = gaussian_log_prob(x, mean, logvar)
        if mask is not None:
            lp = lp * mask
        return lp.flatten(-self.logvar.dim()).sum(-1)

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        return params


def make_likelihood(name: str, event_shape: tuple[int, ...], sd: float | None = None) -> nn.Module:
    """`sd` fixes a Gaussian's standard deviation (None learns one per dimension)."""
    if sd is not None and not (math.isfinite(sd) and 1e-3 <= sd <= 10.0):
        raise AtlasError(f"likelihood_sd must be a number between 0.001 and 10, got {sd}")
    if name == "bernoulli":
        if sd is not None:
            raise AtlasError("likelihood_sd applies to the gaussian likelihood only; drop it or use 'gaussian'")
        return Bernoulli(event_shape)
    if name == "gaussian":
        return Gaussian(event_shape, sd=sd)
    raise AtlasError(f"unknown likelihood {name!r}; choose 'bernoulli' or 'gaussian'")
