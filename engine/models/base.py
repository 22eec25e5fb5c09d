"""The interface every Latent Atlas model implements.

Generic pages and tools (sample grids, traversals, the latent map, HMC, importance
weights) talk to models only through :class:`LatentModel`, so a new family works with
all of them once it implements these few methods.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

import torch

from engine.numerics import gaussian_kl_elementwise, gaussian_log_prob

GroupKind = Literal["facet", "layer", "global", "local"]


@dataclass(frozen=True)
class LatentGroup:
    """A named block of latent variables: a facet, a layer of a hierarchy, ..."""

    name: str
    shape: tuple[int, ...]
    kind: GroupKind = "global"

    @property
    def size(self) -> int:
        return math.prod(self.shape)


@dataclass
class DiagonalGaussian:
    """N(mean, diag(exp(logvar))); tensors (..., dim)."""

    mean: torch.Tensor
    logvar: torch.Tensor

    @property
    def std(self) -> torch.Tensor:
        return torch.exp(0.5 * self.logvar)

    def rsample(self, n: int | None = None, temperature: float = 1.0) -> torch.Tensor:
        """Reparameterised draw, shape (n, ..., dim) if n is given else (..., dim)."""
        shape = self.mean.shape if n is None else (n, *self.mean.shape)
        eps = torch.randn(shape, device=self.mean.device, dtype=self.mean.dtype)
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


@dataclass
class ELBOResult:
    """Per-example terms of a variational bound, each of shape (batch,), in nats.

    total = recon - sum(kl.values()) for k = 1. For k > 1, total is the importance-
    weighted bound (seed003 eq. 2.1) and recon / kl are averages over the k draws,
    reported for display only.
    `extra` holds objective-specific scalars (e.g. the total-correlation estimate).
    """

    total: torch.Tensor
    recon: torch.Tensor
    kl: dict[str, torch.Tensor]
    k: int = 1
    extra: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def kl_total(self) -> torch.Tensor:
        return sum(self.kl.values())


Latents = dict[str, torch.Tensor]


@runtime_checkable
class LatentModel(Protocol):
    """A deep latent-variable model p(x, z) = p(x|z) p(z) with an encoder q(z|x).

    Latents are passed as {group name: tensor (..., batch, *group.shape)}; a single
    tensor is accepted where a model has one group. Extra leading dimensions (samples,
    chains) broadcast through decode and log_joint.
    """

    latent_groups: list[LatentGroup]

    def encode(self, x: torch.Tensor) -> dict[str, DiagonalGaussian]:
        """Posterior parameters per latent group for inputs x (batch, *shape)."""
        ...

    def decode(self, z: Latents | torch.Tensor) -> torch.Tensor:
        """Mean (mode) of p(x|z) in data space, shape (..., batch, *shape)."""
        ...

    def sample(
        self, n: int, temperature: float = 1.0, generator: torch.Generator | None = None, **condition
    ) -> torch.Tensor:
        """n prior samples decoded to data space, shape (n, *shape); the same `generator`
        state draws the same latent noise, so a grid can be reproduced."""
        ...

    def elbo(self, x: torch.Tensor, k: int = 1) -> ELBOResult:
        """The ELBO (k = 1) or the importance-weighted bound (k > 1) per example."""
        ...

    def log_joint(self, x: torch.Tensor, z: Latents | torch.Tensor) -> torch.Tensor:
        """log p(x, z), differentiable in z, shape (..., batch)."""
        ...


def posterior_means(model: LatentModel, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """E[z | x] for every latent group."""
    return {name: q.mean for name, q in model.encode(x).items()}


def reconstruct(model: LatentModel, x: torch.Tensor) -> torch.Tensor:
    """Decode the posterior means of x: the model's deterministic reconstruction."""
    return model.decode(posterior_means(model, x))


def sample_conditions(model: LatentModel) -> dict[str, list]:
    """The conditions a model's `sample` accepts, {name: allowed values}; {} if none."""
    return dict(getattr(model, "sample_conditions", {}) or {})


def check_input_shape(x: torch.Tensor, input_shape: tuple[int, ...]) -> None:
    """Refuse inputs whose per-example shape is not the model's, saying what was expected."""
    from engine.errors import AtlasError

    if tuple(x.shape[1:]) != tuple(input_shape):
        raise AtlasError(
            f"this model expects inputs of shape (batch, {', '.join(map(str, input_shape))}), got {tuple(x.shape)}"
        )


def model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device
