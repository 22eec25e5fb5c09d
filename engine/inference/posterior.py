"""The latent posterior p(z | x) ∝ p(x | z) p(z) of any `LatentModel` as a flat target for
the samplers, started from its encoder:

    post = latent_posterior(model, x)                 # x (batch, *shape)
    result = sample_hmc(post.log_prob, post.initial(chains=8))
    latents = post.to_latents(result.samples)         # ready for model.decode

For hierarchical models (groups of kind "layer") it runs in the prior's noise space eps
(seed002 eq. 5.5, §5.2.4).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch

from engine.errors import AtlasError
from engine.hamiltonian import LogProb, standard_normal
from engine.models.base import LatentModel, MaskedLikelihood, NoiseSpace
from engine.models.latents import flatten_latents, split_latents


@dataclass
class LatentPosterior:
    """p(z | x) ∝ p(x | z) p(z) of a model as a flat target for the samplers.

    log_prob: (batch, chains, dim) -> (batch, chains); mean/std (batch, dim): the
    encoder's Gaussian in the sampling space (z, or the prior noise eps for a
    hierarchical model); to_latents maps flat samples (..., batch, chains, dim) to the
    model's latents {group: (..., chains, batch, size)}, ready for `model.decode`."""

    log_prob: LogProb
    mean: torch.Tensor
    std: torch.Tensor
    to_latents: Callable[[torch.Tensor], dict[str, torch.Tensor]]
    space: Literal["z", "noise"]
    names: list[str]
    sizes: list[int]

    def initial(self, chains: int, inflation: float = 1.0, seed: int = 0) -> torch.Tensor:
        """Starting points (batch, chains, dim) drawn from the encoder's Gaussian, its
        standard deviation multiplied by `inflation`."""
        g = torch.Generator(device=self.mean.device).manual_seed(seed)
        mean = self.mean.unsqueeze(1).expand(-1, chains, -1)
        return mean + inflation * self.std.unsqueeze(1) * standard_normal(mean, g)


def latent_posterior(model: LatentModel, x: torch.Tensor, mask: torch.Tensor | None = None) -> LatentPosterior:
    """The posterior of `model` given inputs x (batch, *shape), started from its encoder.

    Flat models: target log p(x, z) = log p(x|z) + log p(z) over the groups concatenated.
    Hierarchical models (any group of kind "layer"): the chain runs over the prior noise
    eps, z_l = mu_l(z_<l) + sigma_l(z_<l) eps_l, with target
    log p(x | z(eps)) + log N(eps; 0, I) (seed002 §2.5, eq. 5.5, §5.2.4).
    mask (batch, *shape) of 0/1: the posterior given the observed entries only,
    p(z | x_observed) (inpainting); the encoder then sees x with the rest set to 0.
    """
    groups = model.latent_groups
    names, sizes = [g.name for g in groups], [g.size for g in groups]
    hierarchical = any(g.kind == "layer" for g in groups)
    if hierarchical and not isinstance(model, NoiseSpace):
        raise AtlasError(
            f"{type(model).__name__} is hierarchical but has no noise-space parameterisation "
            "(encode_noise, log_joint_noise, latents_from_noise); HMC directly on its layers fails (seed002 §5.2.4)"
        )
    if mask is not None:
        if hierarchical or not isinstance(model, MaskedLikelihood):
            raise AtlasError(f"{type(model).__name__} cannot condition on part of an input; inpaint with a VAE")
        mask = mask.to(x.dtype).expand_as(x)
    seen = x if mask is None else x * mask
    with torch.no_grad():
        q = model.encode_noise(seen) if hierarchical else model.encode(seen)
    mean = flatten_latents({n: qn.mean for n, qn in q.items()}, groups)  # (batch, dim)
    std = flatten_latents({n: qn.stddev for n, qn in q.items()}, groups)
    joint = model.log_joint_noise if hierarchical else model.log_joint
    extra = {} if mask is None else {"mask": mask}

    def split(z):  # (..., batch, chains, dim) -> {name: (..., chains, batch, size)}
        return split_latents(z.transpose(-3, -2), groups)

    def log_prob(z):  # (batch, chains, dim) -> (batch, chains)
        return joint(x, split(z), **extra).transpose(0, 1)

    def to_latents(z):
        with torch.no_grad():
            return model.latents_from_noise(split(z)) if hierarchical else split(z)

    return LatentPosterior(log_prob, mean, std, to_latents, "noise" if hierarchical else "z", names, sizes)
