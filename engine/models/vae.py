"""The VAE family: MLP or convolutional encoder/decoder, Bernoulli or Gaussian
likelihood, and three objectives:

- "elbo":       the evidence lower bound (Kingma & Welling 2014);
- "beta-vae":   recon - beta * KL (seed001 Def 4.1);
- "beta-tcvae": ELBO - (beta - 1) * TC(q(z)) (seed001 Def 4.3, eq. 4.6), the total
                correlation estimated on each minibatch by stratified sampling
                (engine.models.total_correlation).

`elbo(x, k)` with k > 1 is the importance-weighted bound (seed003 eq. 2.1).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Literal

import torch
from torch import nn

from engine.errors import AtlasError
from engine.models.base import (
    ELBOResult,
    LatentGroup,
    Latents,
    check_importance_samples,
    check_input_shape,
    model_device,
)
from engine.models.blocks import MAX_LATENT_DIM, ConvDecoder, ConvEncoder, check_network, check_size, mlp
from engine.models.latents import checked_latents
from engine.models.likelihoods import make_likelihood
from engine.models.posteriors import DiagonalGaussian
from engine.models.total_correlation import total_correlation
from engine.numerics import logmeanexp, standard_normal_log_prob
from engine.randomness import stream


@dataclass
class VAEConfig:
    input_shape: tuple[int, ...] = (1, 8, 8)  # (C, H, W) for images, (D,) for tables
    latent_dim: int = 8
    arch: Literal["mlp", "conv"] = "mlp"
    hidden: tuple[int, ...] = (256, 128)  # MLP widths, or the conv head's dense width(s)
    channels: tuple[int, ...] = (32, 32, 64, 64)  # conv: one stride-2 layer each, while size allows
    likelihood: Literal["bernoulli", "gaussian"] = "bernoulli"
    objective: Literal["elbo", "beta-vae", "beta-tcvae"] = "elbo"
    beta: float = 1.0
    tc_estimator: Literal["mss", "mws"] = "mss"
    dataset_size: int = 0  # N for the TC estimator; the trainer fills it in
    family: str = field(default="vae", init=False)

    def __post_init__(self):
        self.input_shape = tuple(int(s) for s in self.input_shape)
        self.hidden = tuple(int(h) for h in self.hidden)
        self.channels = tuple(int(c) for c in self.channels)
        check_size("latent_dim", self.latent_dim, MAX_LATENT_DIM)
        check_network("VAE", self.input_shape, self.arch, (*self.hidden, *self.channels))
        if self.objective not in ("elbo", "beta-vae", "beta-tcvae"):
            raise AtlasError(f"unknown objective {self.objective!r}; choose 'elbo', 'beta-vae' or 'beta-tcvae'")
        if not math.isfinite(self.beta) or self.beta < 0:
            raise AtlasError(f"beta must be a finite number >= 0, got {self.beta}")

    @classmethod
    def fields_from_data(cls, train_data) -> dict:
        return {"dataset_size": len(train_data)}

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        objective = {
            "elbo": "the ELBO",
            "beta-vae": f"the β-VAE objective (β = {self.beta:g})",
            "beta-tcvae": f"the β-TCVAE objective (β = {self.beta:g})",
        }[self.objective]
        return f"{self.arch.upper()} encoder and decoder, {self.likelihood} likelihood, trained with {objective}"


class VAE(nn.Module):
    """A single-group Gaussian VAE: q(z|x) = N(mu(x), diag sigma^2(x)), p(z) = N(0, I)."""

    masked_likelihood = True  # log_joint takes a mask (engine.models.base.MaskedLikelihood)

    def __init__(self, config: VAEConfig):
        super().__init__()
        self.config = config
        shape, d = config.input_shape, config.latent_dim
        if config.arch == "mlp":
            n_in = math.prod(shape)
            self.encoder = nn.Sequential(nn.Flatten(), mlp([n_in, *config.hidden, 2 * d]))
            self.decoder = nn.Sequential(mlp([d, *reversed(config.hidden), n_in]), nn.Unflatten(1, shape))
        else:
            self.encoder = ConvEncoder(shape, config.channels, config.hidden, 2 * d)
            self.decoder = ConvDecoder(shape, config.channels, tuple(reversed(config.hidden)), d)
        self.likelihood = make_likelihood(config.likelihood, shape)
        self.latent_groups = [LatentGroup("z", (d,), "global")]

    # -- the LatentModel interface -------------------------------------------------
    def encode(self, x: torch.Tensor) -> dict[str, DiagonalGaussian]:
        check_input_shape(x, self.config.input_shape)
        return {"z": DiagonalGaussian.from_output(self.encoder(x), logvar_range=(-12.0, 8.0))}

    def decode(self, z: Latents | torch.Tensor) -> torch.Tensor:
        return self.likelihood.mean(self._decoder_params(z))

    def sample(self, n: int, temperature: float = 1.0, generator: torch.Generator | None = None) -> torch.Tensor:
        z = torch.randn(n, self.config.latent_dim, generator=stream(generator), device=model_device(self))
        return self.decode(temperature * z)

    def elbo(self, x: torch.Tensor, k: int = 1, chunk: int | None = None) -> ELBOResult:
        """Per-example ELBO (k = 1, analytic KL) or IWAE bound (k > 1).

        For k > 1 the k importance samples are processed `chunk` at a time (default:
        as many as fit about 2^24 decoded values) so that k = 5,000 fits in memory.
        """
        check_importance_samples(k)
        q = self.encode(x)["z"]
        if k == 1:
            z = q.rsample()
            recon = self.likelihood.log_prob(x, self._decoder_params(z))
            kl = q.kl_to_standard_normal()
            return ELBOResult(total=recon - kl, recon=recon, kl={"z": kl})
        log_w, recon, kl = self.log_weights(x, k, chunk, q=q)
        return ELBOResult(total=logmeanexp(log_w, dim=0), recon=recon.mean(0), kl={"z": kl.mean(0)}, k=k)

    def log_weights(
        self, x: torch.Tensor, k: int, chunk: int | None = None, q: DiagonalGaussian | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """log w_i = log p(x, z_i) - log q(z_i | x) for k draws z_i ~ q(z|x), with its two
        parts log p(x|z_i) and log q(z_i|x) - log p(z_i); each (k, batch)."""
        q = q if q is not None else self.encode(x)["z"]
        chunk = chunk or max(1, 2**24 // max(1, x.shape[0] * math.prod(self.config.input_shape)))
        recon, kl = [], []
        for start in range(0, k, chunk):
            z = q.rsample(min(chunk, k - start))  # (c, batch, d)
            recon.append(self.likelihood.log_prob(x, self._decoder_params(z)))
            kl.append(q.log_prob(z) - standard_normal_log_prob(z))
        recon, kl = torch.cat(recon), torch.cat(kl)
        return recon - kl, recon, kl

    def log_joint(self, x: torch.Tensor, z: Latents | torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """log p(x, z); with `mask` (batch, *shape) of 0/1, log p(x_observed, z)."""
        z = checked_latents(self, z)["z"]
        return self.likelihood.log_prob(x, self._decoder_params(z), mask) + standard_normal_log_prob(z)

    # -- training ---------------------------------------------------------------------
    def training_loss(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Scalar loss to minimise and detached per-batch metrics (means over the batch)."""
        cfg = self.config
        q = self.encode(x)["z"]
        z = q.rsample()
        recon = self.likelihood.log_prob(x, self._decoder_params(z))
        kl = q.kl_to_standard_normal()
        elbo = recon - kl
        metrics = {"elbo": elbo.mean(), "recon": recon.mean(), "kl/z": kl.mean()}
        if cfg.objective == "elbo":
            objective = elbo
        elif cfg.objective == "beta-vae":
            objective = recon - cfg.beta * kl
        else:
            n = max(cfg.dataset_size, x.shape[0])
            tc = total_correlation(z, q.mean, q.logvar, n, cfg.tc_estimator)
            objective = elbo - (cfg.beta - 1.0) * tc  # seed001 eq. 4.6
            metrics["tc"] = tc.mean()
        loss = -objective.mean()
        return loss, {name: v.detach() for name, v in metrics.items()}

    # -- helpers ------------------------------------------------------------------------
    def _decoder_params(self, z: Latents | torch.Tensor) -> torch.Tensor:
        z = checked_latents(self, z)["z"]
        lead = z.shape[:-1]
        out = self.decoder(z.reshape(-1, z.shape[-1]))
        return out.reshape(*lead, *self.config.input_shape)
