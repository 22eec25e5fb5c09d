"""The network pythae builds for its VAE-type models when given no custom encoder or decoder,
so that a saved pythae model loads by name (engine/adapters/pythae.py converts the folder).

pythae's default pair is one hidden layer of 512 ReLU units each way: the encoder maps the
flattened input to a mean (`encoder.embedding`) and a log-variance (`encoder.log_var`), the
decoder maps z back through a sigmoid. Its two reconstruction losses are likelihoods:
"bce" is a Bernoulli with the sigmoid's input as logits, "mse" (half the summed squared
error) is a unit-variance Gaussian around the sigmoid's output, up to the constant
D/2 log 2 pi, which the atlas keeps so that bounds are in nats. The prior is N(0, I) and
the objectives the atlas trains are the VAE family's (elbo, beta-vae, beta-tcvae); an
adapted run records pythae's own objective in `pythae_model` and is explored, not resumed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from engine.errors import AtlasError
from engine.models.vae import VAE, VAEConfig
from engine.numerics import LOG_2PI

HIDDEN = 512  # pythae's default MLP width (pythae.models.nn.default_architectures)


@dataclass
class PythaeVAEConfig(VAEConfig):
    reconstruction_loss: Literal["bce", "mse"] = "mse"
    pythae_model: str = "VAE"  # the pythae class it was trained as, for the record
    hidden: tuple[int, ...] = (HIDDEN,)
    family: str = field(default="pythae-vae", init=False)

    def __post_init__(self):
        super().__post_init__()
        if self.arch != "mlp" or self.hidden != (HIDDEN,):
            raise AtlasError(f"pythae's default network is an MLP with one layer of {HIDDEN} units each way")
        if self.reconstruction_loss not in ("bce", "mse"):
            raise AtlasError(
                f"reconstruction_loss must be 'bce' or 'mse' (pythae's two), got {self.reconstruction_loss!r}"
            )
        self.likelihood = "bernoulli" if self.reconstruction_loss == "bce" else "gaussian"

    def summary(self) -> str:
        loss = {"bce": "Bernoulli", "mse": "unit-variance Gaussian"}[self.reconstruction_loss]
        return f"pythae {self.pythae_model}: its default MLP ({HIDDEN} ReLU units each way), {loss} likelihood"


class PythaeEncoder(nn.Module):
    def __init__(self, n_in: int, latent_dim: int):
        super().__init__()
        self.layers = nn.ModuleList([nn.Sequential(nn.Linear(n_in, HIDDEN), nn.ReLU())])
        self.embedding = nn.Linear(HIDDEN, latent_dim)
        self.log_var = nn.Linear(HIDDEN, latent_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.layers[0](x.flatten(1))
        return torch.cat([self.embedding(h), self.log_var(h)], dim=-1)


class PythaeDecoder(nn.Module):
    """Returns the sigmoid's input: logits for "bce", the mean's pre-image for "mse"."""

    def __init__(self, latent_dim: int, n_out: int):
        super().__init__()
        self.layers = nn.ModuleList(
            [nn.Sequential(nn.Linear(latent_dim, HIDDEN), nn.ReLU()), nn.Sequential(nn.Linear(HIDDEN, n_out))]
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.layers[1](self.layers[0](z))


class SigmoidGaussian(nn.Module):
    """N(x; sigmoid(params), 1) per dimension: pythae's "mse" loss with its constant."""

    def __init__(self, event_shape: tuple[int, ...]):
        super().__init__()
        self.event_dims = len(event_shape)

    def log_prob(self, x: torch.Tensor, params: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        lp = -0.5 * (LOG_2PI + (x - torch.sigmoid(params)).pow(2))
        if mask is not None:
            lp = lp * mask
        return lp.flatten(-self.event_dims).sum(-1)

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(params)


class PythaeVAE(VAE):
    """The atlas VAE on pythae's default network and likelihoods (see the module docstring)."""

    def __init__(self, config: PythaeVAEConfig):
        super().__init__(config)
        n = math.prod(config.input_shape)
        self.encoder = PythaeEncoder(n, config.latent_dim)
        self.decoder = PythaeDecoder(config.latent_dim, n)
        if config.reconstruction_loss == "mse":
            self.likelihood = SigmoidGaussian(config.input_shape)
