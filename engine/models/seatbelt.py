"""The Seatbelt-VAE (seed001 Def 5.1): a hierarchical VAE whose top layer's aggregate
posterior is penalised for its total correlation.

Layers z^1 (next to the data) ... z^L (top), of sizes `layer_dims`, bottom first (the
seed takes the last L entries of its z_sizes list, seed001 §4.6).

- Generative model (seed001 eq. 5.3):
      p(x, z) = p(x | z^1, ..., z^L) · prod_{i<L} p(z^i | z^{i+1}) · p(z^L),   p(z^L) = N(0, I).
  The likelihood conditions on every layer (the decoder reads their concatenation);
  each p(z^i | z^{i+1}) is a diagonal Gaussian from an MLP.
- Posterior, a bottom-up chain (seed001 eq. 5.4):
      q(z | x) = q(z^1 | x) · prod_{i<L} q(z^{i+1} | z^i, x).
  x enters every link through shared encoder features h(x): the link's MLP reads
  [z^i, h(x)] (the seed leaves open how x enters, §4.6 [ambig]).
- Objective to maximise (seed001 eq. 5.9):
      ELBO - (beta - 1) · TC(q(z^L)),
  the total correlation of the top layer's aggregate posterior estimated on the minibatch
  from the top layer's conditionals q(z^L_k | z^{L-1}_j, x_j) at the batch's sampled
  chains (seed001 eq. D.27) by engine.models.total_correlation ("mss", or the seed's
  "mws"). L = 1 is the beta-TCVAE (Def 4.3), beta = 1 the plain hierarchical VAE.

The single-sample ELBO scores one ancestral draw of the chain: log p(x | z) plus, for each
layer i < L, log q(z^i | .) - log p(z^i | z^{i+1}) at the draw, and for the top layer the
KL(q(z^L | z^{L-1}, x) || N(0, I)) in closed form given the draw below it (so that L = 1
is exactly the VAE's analytic-KL ELBO). `log_weights` scores every layer at the draw.

The inter-layer maps are MLPs with two hidden layers (seed001 §4.6) with SiLU and no
batchnorm: these small networks train well without it, and each example's densities then
do not depend on the rest of its batch (HMC and the importance weights score one input).

`encode` is deterministic: each link is conditioned on the posterior mean of the layer
below, q(z^1 | x), q(z^2 | E[z^1], x), ... (the "mean path"); sampling goes through
`posterior_chain`. HMC runs in the prior's noise space (`encode_noise`, `log_joint_noise`,
`latents_from_noise`), z^L = eps_L, z^i = mu_i(z^{i+1}) + sigma_i(z^{i+1}) eps_i.
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
from engine.models.blocks import (
    MAX_LATENT_DIM,
    MAX_LAYERS,
    MAX_WIDTH,
    ConvDecoder,
    ConvEncoder,
    check_network,
    check_size,
    mlp,
)
from engine.models.latents import checked_latents, leading_shape
from engine.models.likelihoods import make_likelihood
from engine.models.posteriors import DiagonalGaussian
from engine.models.total_correlation import total_correlation
from engine.numerics import logmeanexp, standard_normal_log_prob
from engine.randomness import stream


@dataclass
class SeatbeltConfig:
    input_shape: tuple[int, ...] = (1, 8, 8)  # (C, H, W) for images, (D,) for tables
    layer_dims: tuple[int, ...] = (8, 4)  # sizes of z^1 (bottom) ... z^L (top)
    arch: Literal["mlp", "conv"] = "mlp"
    hidden: tuple[int, ...] = (
        256,
        128,
    )  # encoder trunk widths, the last one the size of h(x); the decoder mirrors them
    channels: tuple[int, ...] = (32, 32, 64, 64)  # conv: one stride-2 layer each, while size allows
    link_hidden: int = 128  # width of the two hidden layers of every q(z^{i+1}|z^i, x) and p(z^i|z^{i+1})
    likelihood: Literal["bernoulli", "gaussian"] = "bernoulli"
    likelihood_sd: float | None = None  # gaussian only: a fixed sd (the seed's 0.1); None learns one per dimension
    beta: float = 1.0  # weight of the top layer's TC is beta - 1 (seed001 eq. 5.9)
    tc_estimator: Literal["mss", "mws"] = "mss"
    dataset_size: int = 0  # N for the TC estimator; the trainer fills it in
    family: str = field(default="seatbelt", init=False)

    def __post_init__(self):
        self.input_shape = tuple(int(s) for s in self.input_shape)
        self.layer_dims = tuple(self.layer_dims)
        self.hidden = tuple(int(h) for h in self.hidden)
        self.channels = tuple(int(c) for c in self.channels)
        if not 1 <= len(self.layer_dims) <= MAX_LAYERS:
            raise AtlasError(
                f"layer_dims must list 1 to {MAX_LAYERS} layer sizes, bottom first (e.g. [8, 4]), got {list(self.layer_dims)}"
            )
        for d in self.layer_dims:
            check_size("every entry of layer_dims", d, MAX_LATENT_DIM)
        if not self.hidden:
            raise AtlasError("hidden must list at least one width: the last is the size of the encoder features h(x)")
        check_size("link_hidden", self.link_hidden, MAX_WIDTH)
        check_network("Seatbelt-VAE", self.input_shape, self.arch, (*self.hidden, *self.channels))
        if self.likelihood_sd is not None:
            self.likelihood_sd = float(self.likelihood_sd)
        make_likelihood(self.likelihood, self.input_shape, self.likelihood_sd)  # refuses a bad name or sd
        if not isinstance(self.beta, (int, float)) or not math.isfinite(self.beta) or self.beta < 0:
            raise AtlasError(f"beta must be a finite number >= 0, got {self.beta!r}")
        if self.tc_estimator not in ("mss", "mws"):
            raise AtlasError(f"unknown total-correlation estimator {self.tc_estimator!r}; use 'mss' or 'mws'")
        if not isinstance(self.dataset_size, int) or self.dataset_size < 0:
            raise AtlasError(
                f"dataset_size must be an integer >= 0 (the trainer fills it in), got {self.dataset_size!r}"
            )

    @property
    def names(self) -> list[str]:
        return [f"z{i + 1}" for i in range(len(self.layer_dims))]

    @classmethod
    def fields_from_data(cls, train_data) -> dict:
        return {"dataset_size": len(train_data)}

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        layers = " → ".join(str(d) for d in self.layer_dims)
        return (
            f"Seatbelt-VAE with {len(self.layer_dims)} latent layer(s) of sizes {layers} (bottom to top), "
            f"{self.arch.upper()} encoder and decoder, {self.likelihood} likelihood, trained with the ELBO minus "
            f"(β − 1) × the top layer's total correlation (β = {self.beta:g})"
        )


class SeatbeltVAE(nn.Module):
    """Hierarchical Gaussian VAE with a bottom-up posterior chain and a top-down prior."""

    masked_likelihood = True  # log_joint takes a mask (engine.models.base.MaskedLikelihood)

    def __init__(self, config: SeatbeltConfig):
        super().__init__()
        self.config = config
        shape, dims, width = config.input_shape, config.layer_dims, config.link_hidden
        n_features = config.hidden[-1]
        if config.arch == "mlp":
            n_in = math.prod(shape)
            self.features = nn.Sequential(nn.Flatten(), mlp([n_in, *config.hidden]), nn.SiLU())  # h(x)
        else:
            self.features = nn.Sequential(
                ConvEncoder(shape, config.channels, config.hidden[:-1], n_features), nn.SiLU()
            )
        self.posterior_bottom = nn.Linear(n_features, 2 * dims[0])  # q(z^1 | x)
        # posterior_links[i]: q(z^{i+2} | z^{i+1}, x); prior_links[i]: p(z^{i+1} | z^{i+2}) (z^1 = index 0)
        self.posterior_links = nn.ModuleList(
            mlp([dims[i] + n_features, width, width, 2 * dims[i + 1]]) for i in range(len(dims) - 1)
        )
        self.prior_links = nn.ModuleList(mlp([dims[i + 1], width, width, 2 * dims[i]]) for i in range(len(dims) - 1))
        if config.arch == "mlp":
            self.decoder = nn.Sequential(mlp([sum(dims), *reversed(config.hidden), n_in]), nn.Unflatten(1, shape))
        else:
            self.decoder = ConvDecoder(shape, config.channels, tuple(reversed(config.hidden)), sum(dims))
        self.likelihood = make_likelihood(config.likelihood, shape, config.likelihood_sd)
        self.names = config.names
        self.latent_groups = [LatentGroup(name, (d,), "layer") for name, d in zip(self.names, dims)]

    # -- the two chains ---------------------------------------------------------------
    def posterior_chain(
        self, x: torch.Tensor, n: int | None = None, use_mean: bool = False, h: torch.Tensor | None = None
    ) -> tuple[list[torch.Tensor], list[DiagonalGaussian]]:
        """Ancestral draws z^1 ~ q(z^1 | x), z^{i+1} ~ q(z^{i+1} | z^i, x), bottom up, and the
        conditional Gaussians they came from; n chains per example give (n, batch, d), None
        gives (batch, d). use_mean: each link conditioned on the mean below, no noise."""
        if h is None:
            check_input_shape(x, self.config.input_shape)
            h = self.features(x)  # (batch, features)
        q = DiagonalGaussian.from_output(self.posterior_bottom(h))
        if n is not None:
            q = DiagonalGaussian(q.mean.expand(n, *q.mean.shape), q.logvar.expand(n, *q.logvar.shape))
        qs, zs = [q], [q.mean if use_mean else q.rsample()]
        for link in self.posterior_links:
            below = zs[-1]
            q = DiagonalGaussian.from_output(link(torch.cat([below, h.expand(*below.shape[:-1], h.shape[-1])], -1)))
            qs.append(q)
            zs.append(q.mean if use_mean else q.rsample())
        return zs, qs

    def prior_of(self, i: int, above: torch.Tensor) -> DiagonalGaussian:
        """p(z^{i+1} | z^{i+2}) given the layer above (0-based: i = 0 is the bottom layer's prior)."""
        return DiagonalGaussian.from_output(self.prior_links[i](above))

    # -- the LatentModel interface ----------------------------------------------------
    def encode(self, x: torch.Tensor) -> dict[str, DiagonalGaussian]:
        """The layers' posteriors along the mean path: q(z^1 | x), then each q(z^{i+1} | z^i, x)
        at z^i = its posterior mean, so the result is deterministic in x."""
        _, qs = self.posterior_chain(x, use_mean=True)
        return dict(zip(self.names, qs))

    def decode(self, z: Latents | torch.Tensor) -> torch.Tensor:
        return self.likelihood.mean(self._decoder_params(self._layers(z)))

    def sample(self, n: int, temperature: float = 1.0, generator: torch.Generator | None = None) -> torch.Tensor:
        """Ancestral prior samples from the top, every layer's noise scaled by `temperature`."""
        device = model_device(self)
        eps = {
            g.name: temperature * torch.randn(n, g.size, generator=stream(generator), device=device)
            for g in reversed(self.latent_groups)
        }
        return self.decode(self.latents_from_noise(eps))

    def elbo(self, x: torch.Tensor, k: int = 1, chunk: int | None = None) -> ELBOResult:
        """Per-example ELBO (k = 1, one chain, the top layer's KL in closed form) or IWAE
        bound (k > 1, seed003 eq. 2.1) with recon and the per-layer KL averaged over draws."""
        check_importance_samples(k)
        if k == 1:
            zs, qs = self.posterior_chain(x)
            recon, kl = self._chain_terms(x, zs, qs, analytic_top=True)
            return ELBOResult(total=recon - sum(kl.values()), recon=recon, kl=kl)
        recon, kl = self._draws(x, k, chunk)
        log_w = recon - sum(kl.values())
        return ELBOResult(
            total=logmeanexp(log_w, dim=0), recon=recon.mean(0), kl={name: v.mean(0) for name, v in kl.items()}, k=k
        )

    def log_weights(
        self, x: torch.Tensor, k: int, chunk: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """log w_i = log p(x, z_i) - log q(z_i | x) for k ancestral draws of the chain, with its
        two parts log p(x | z_i) and log q(z_i | x) - log p(z_i); each (k, batch)."""
        recon, kl = self._draws(x, k, chunk)
        kl_total = sum(kl.values())
        return recon - kl_total, recon, kl_total

    def log_joint(self, x: torch.Tensor, z: Latents | torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """log p(x | z^1..z^L) + sum_{i<L} log p(z^i | z^{i+1}) + log N(z^L; 0, I); z values
        (..., batch, d) -> (..., batch). With `mask` (batch, *shape) of 0/1, log p(x_observed, z)."""
        zs = self._layers(z)
        recon = self.likelihood.log_prob(x, self._decoder_params(zs), mask)
        return recon + self._log_prior(zs)

    # -- the prior's noise space, where HMC runs (seed002 §2.5, §5.2.4) ---------------
    def encode_noise(self, x: torch.Tensor) -> dict[str, DiagonalGaussian]:
        """`encode`'s Gaussians mapped to the noise eps_i = (z^i - mu_i(z^{i+1})) / sigma_i(z^{i+1})
        of each layer, the layers above at their posterior means."""
        q = list(self.encode(x).values())
        out = {self.names[-1]: q[-1]}
        for i in range(len(q) - 1):
            p = self.prior_of(i, q[i + 1].mean)
            out[self.names[i]] = DiagonalGaussian((q[i].mean - p.mean) / p.std, q[i].logvar - p.logvar)
        return {name: out[name] for name in self.names}

    def latents_from_noise(self, eps: Latents) -> Latents:
        """z(eps) by the prior's top-down pass; eps values (..., batch, d) -> z alike."""
        e = self._layers(eps)
        zs = [e[-1]]
        for i in reversed(range(len(e) - 1)):
            p = self.prior_of(i, zs[0])
            zs.insert(0, p.mean + p.std * e[i])
        return dict(zip(self.names, zs))

    def log_joint_noise(self, x: torch.Tensor, eps: Latents) -> torch.Tensor:
        """HMC's target in noise space, log p(x | z(eps)) + sum_i log N(eps_i; 0, I); it equals
        log_joint(x, z(eps)) + the log-determinant sum log sigma_i of dz/deps."""
        zs = list(self.latents_from_noise(eps).values())
        recon = self.likelihood.log_prob(x, self._decoder_params(zs))
        return recon + sum(standard_normal_log_prob(e) for e in self._layers(eps))

    # -- training -----------------------------------------------------------------------
    def training_loss(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Minus the Seatbelt objective (seed001 eq. 5.9) averaged over the batch, and
        detached metrics: elbo, recon, kl/<layer>, tc (the top layer's, eq. D.27)."""
        cfg = self.config
        zs, qs = self.posterior_chain(x)
        recon, kl = self._chain_terms(x, zs, qs, analytic_top=True)
        elbo = recon - sum(kl.values())
        metrics = {"elbo": elbo.mean(), "recon": recon.mean()}
        metrics.update({f"kl/{name}": v.mean() for name, v in kl.items()})
        objective = elbo
        if x.shape[0] > 1 or cfg.beta != 1.0:  # a batch of one has no aggregate posterior to measure
            n = max(cfg.dataset_size, x.shape[0])
            tc = total_correlation(zs[-1], qs[-1].mean, qs[-1].logvar, n, cfg.tc_estimator)  # seed001 eq. D.27
            objective = elbo - (cfg.beta - 1.0) * tc  # seed001 eq. 5.9
            metrics["tc"] = tc.mean()
        return -objective.mean(), {name: v.detach() for name, v in metrics.items()}

    # -- helpers ------------------------------------------------------------------------
    def _chain_terms(
        self, x: torch.Tensor, zs: list[torch.Tensor], qs: list[DiagonalGaussian], analytic_top: bool
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """log p(x | z) and each layer's log q - log p at a drawn chain, (..., batch) each; the
        top layer's in closed form given the draw below it if `analytic_top`."""
        recon = self.likelihood.log_prob(x, self._decoder_params(zs))
        kl = {
            name: qs[i].log_prob(zs[i]) - self.prior_of(i, zs[i + 1]).log_prob(zs[i])
            for i, name in enumerate(self.names[:-1])
        }
        top = qs[-1]
        kl[self.names[-1]] = (
            top.kl_to_standard_normal() if analytic_top else top.log_prob(zs[-1]) - standard_normal_log_prob(zs[-1])
        )
        return recon, kl

    def _draws(self, x: torch.Tensor, k: int, chunk: int | None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """log p(x | z) (k, batch) and each layer's log q - log p (k, batch) for k chains,
        drawn `chunk` at a time (default: about 2^24 decoded values at once)."""
        check_input_shape(x, self.config.input_shape)
        h = self.features(x)
        chunk = chunk or max(1, 2**24 // max(1, x.shape[0] * math.prod(self.config.input_shape)))
        recon, kl = [], []
        for start in range(0, k, chunk):
            zs, qs = self.posterior_chain(x, min(chunk, k - start), h=h)
            r, parts = self._chain_terms(x, zs, qs, analytic_top=False)
            recon.append(r)
            kl.append(parts)
        return torch.cat(recon), {name: torch.cat([part[name] for part in kl]) for name in self.names}

    def _log_prior(self, zs: list[torch.Tensor]) -> torch.Tensor:
        prior = standard_normal_log_prob(zs[-1])
        for i in range(len(zs) - 1):
            prior = prior + self.prior_of(i, zs[i + 1]).log_prob(zs[i])
        return prior

    def _decoder_params(self, zs: list[torch.Tensor]) -> torch.Tensor:
        z = torch.cat(zs, -1)  # (..., batch, sum of layer sizes)
        lead = z.shape[:-1]
        out = self.decoder(z.reshape(-1, z.shape[-1]))
        return out.reshape(*lead, *self.config.input_shape)

    def _layers(self, z: Latents | torch.Tensor) -> list[torch.Tensor]:
        """Latents {layer name: (..., batch, d)} as a list bottom first, checked, their leading
        shapes broadcast to one."""
        z = checked_latents(self, z)
        lead = leading_shape(z, self.latent_groups)
        return [t.expand(*lead, t.shape[-1]) for t in z.values()]
