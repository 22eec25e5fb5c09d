"""UG-VAE, the Unsupervised Global VAE (seed002 ch. 4, App. A; Peis, Olmos & Artés-Rodríguez 2023).

A group X = {x_1..x_n} (in training, a random minibatch) shares one global latent beta; each
example has a local continuous z_i and a local discrete d_i (seed002 eqs. 4.1-4.4):

    beta ~ N(0, I),   d_i ~ Cat(1/K),   z_i | d_i, beta ~ N(mu_z^(d_i)(beta), Sigma_z^(d_i)(beta)),
    x_i | z_i, beta ~ p(x | decoder([z_i, beta]))

so beta moves the means and variances of every one of the K mixture components at once. One
small network per component maps beta to its (mean, log-variance); the K networks run together
as batched matrix products (`ComponentNetworks`). Their log-variances go through tanh, so the
prior variances stay in [e^-1, e] (seed002 §1.4, the authors' code).

Inference (eqs. 4.5-4.9): q(z_i | x_i) a diagonal Gaussian from a pre-encoder h(x_i);
q(d_i | z_i) = Cat(pi(z_i)); and q(beta | X, Z) the normalised product of one Gaussian "vote"
per example, N(mu_i, Sigma_i) from [h(x_i), pi(z_i)], which in closed form is a Gaussian with
precision sum_i Lambda_i and mean the precision-weighted mean of the votes (`gaussian_product`).

The bound (eqs. 4.10-4.11) of a group, with d_i enumerated over its K values, one draw z_i per
example and one draw beta per group:

    L(X) = sum_i [ log p(x_i | z_i, beta) - KL_z,i - KL(q(d_i | z_i) || Cat(1/K)) ] - KL(q(beta | X, Z) || N(0, I))
    KL_z,i = log q(z_i | x_i) - sum_k q(d_i = k | z_i) log p(z_i | d_i = k, beta)

KL_z,i is estimated at the drawn z_i with the entropy of q(z_i | x_i) in closed form, because
q(d | z) depends on that same draw; the authors' code instead weights the closed-form Gaussian
KLs by q(d | z) at the draw, which is not an unbiased estimate of the bound. Every term is in
nats and the beta KL, paid once per group, is divided equally among the group's examples in
`elbo`, so the per-example totals add up to the group bound.

Two ablations by config (seed002 §1.6, App. A): `variant="mlvae"` is UG-VAE with K = 1 (the
ML-VAE of the thesis's comparisons: a unimodal p(z | beta)), `variant="gmvae"` drops beta (a
Gaussian-mixture VAE whose K components are a learned table).

What a batch means here. Every method that takes inputs x (batch, *shape) treats the batch as
ONE group: `encode(x)` returns, for the group "beta", the group's posterior q(beta | X, Z) with
Z at the posterior means, repeated on every row (so generic pages that read per-row posteriors
work); `encode_group` / `encode_groups` return it once per group. `log_joint(x, z)`, on the
other hand, scores every row as a group of one, log p(x_i, z_i, beta_i), so that a per-row
sampler (HMC, importance weights) sees a proper density per row; `group_log_joint` is the joint
of rows that share one beta. `log_weights` (importance weights per row) follows log_joint:
each row a group of one, its beta drawn from the posterior of its own single vote.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
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
    MAX_CLUSTERS,
    MAX_LATENT_DIM,
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
from engine.numerics import LOG_2PI, gaussian_log_prob, logmeanexp, standard_normal_log_prob
from engine.randomness import stream

VARIANTS = ("ugvae", "mlvae", "gmvae")


@dataclass
class UGVAEConfig:
    input_shape: tuple[int, ...] = (1, 28, 28)  # (C, H, W) for images, (D,) for flat inputs
    variant: Literal["ugvae", "mlvae", "gmvae"] = "ugvae"
    local_dim: int = 20  # d, of z_i ([code] default dim_z)
    global_dim: int = 50  # g, of beta ([code] default dim_beta); unused by "gmvae"
    components: int = 10  # K, the values of d_i (the thesis: 10 on MNIST, 20 on CelebA); 1 for "mlvae"
    arch: Literal["mlp", "conv"] = "mlp"
    hidden: tuple[int, ...] = (256,)  # pre-encoder widths (Table A.1: Linear 784 -> 256); the decoder mirrors them
    channels: tuple[int, ...] = (32, 32, 64, 64)  # conv: one stride-2 4x4 layer each, while the image halves evenly
    cluster_hidden: int = 256  # phi_d: Linear d -> 256, tanh, Linear 256 -> K
    prior_hidden: int = 256  # theta_z^(k): Linear g -> 256, ReLU, Linear 256 -> 2 d, one per component
    likelihood: Literal["bernoulli", "gaussian"] = "bernoulli"
    likelihood_sd: float | None = None  # gaussian only: a fixed sd (the thesis: variance 0.2); None learns it
    family: str = field(default="ugvae", init=False)

    def __post_init__(self):
        self.input_shape = tuple(int(s) for s in self.input_shape)
        self.hidden = tuple(int(h) for h in self.hidden)
        self.channels = tuple(int(c) for c in self.channels)
        if self.likelihood_sd is not None:
            self.likelihood_sd = float(self.likelihood_sd)
        if self.variant not in VARIANTS:
            raise AtlasError(f"unknown UG-VAE variant {self.variant!r}; choose one of {', '.join(VARIANTS)}")
        check_size("local_dim", self.local_dim, MAX_LATENT_DIM)
        check_size("global_dim", self.global_dim, MAX_LATENT_DIM)
        check_size("components", self.components, MAX_CLUSTERS)
        check_size("cluster_hidden", self.cluster_hidden, MAX_WIDTH)
        check_size("prior_hidden", self.prior_hidden, MAX_WIDTH)
        if not self.hidden:
            raise AtlasError("hidden needs at least one width, the pre-encoder's output size (Table A.1: 256)")
        check_network("UG-VAE", self.input_shape, self.arch, (*self.hidden, *self.channels))
        if self.variant == "mlvae" and self.components != 1:
            raise AtlasError(
                f"the mlvae variant is UG-VAE with a single component; set components to 1 (got {self.components})"
            )
        if self.variant != "mlvae" and self.components < 2:
            raise AtlasError(
                f"the {self.variant} variant needs at least 2 components (got {self.components}); "
                "for one component use variant='mlvae'"
            )
        if self.likelihood_sd is not None and self.likelihood != "gaussian":
            raise AtlasError("likelihood_sd applies to the gaussian likelihood only; drop it or use 'gaussian'")

    @property
    def has_global(self) -> bool:
        """False for the "gmvae" ablation, which has no beta."""
        return self.variant != "gmvae"

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        name = {"ugvae": "UG-VAE", "mlvae": "ML-VAE (UG-VAE with K = 1)", "gmvae": "GMVAE (UG-VAE without beta)"}
        local = f"local z of {self.local_dim} dims, K = {self.components} components"
        global_ = f", global beta of {self.global_dim} dims shared by each batch" if self.has_global else ""
        return f"{name[self.variant]}: {self.arch.upper()} networks, {local}{global_}, {self.likelihood} likelihood"


def gaussian_product(mean: torch.Tensor, logvar: torch.Tensor, dim: int = -2) -> DiagonalGaussian:
    """The normalised product of diagonal Gaussians N(mean_i, exp(logvar_i)) along `dim`
    (seed002 eqs. 4.8-4.9): precision Lambda = sum_i Lambda_i and mean Lambda^-1 sum_i Lambda_i mu_i,
    computed in log space (log Lambda = logsumexp_i log Lambda_i) so that no precision overflows."""
    log_precision = -logvar
    weights = torch.softmax(log_precision, dim)  # Lambda_i / sum_j Lambda_j
    return DiagonalGaussian((weights * mean).sum(dim), -torch.logsumexp(log_precision, dim))


def gaussian_entropy(q: DiagonalGaussian) -> torch.Tensor:
    """H(q) summed over the last dim, (...)."""
    return 0.5 * (LOG_2PI + 1.0 + q.logvar).sum(-1)


class ComponentNetworks(nn.Module):
    """K independent networks Linear(n_in -> hidden), ReLU, Linear(hidden -> n_out), one per
    mixture component (seed002 eq. 4.3, theta_z^(k)), run together by batched matrix products:
    (..., n_in) -> (..., K, n_out). Initialised as K separate nn.Linear layers would be."""

    def __init__(self, k: int, n_in: int, hidden: int, n_out: int):
        super().__init__()
        self.w1 = nn.Parameter(torch.empty(k, n_in, hidden))
        self.b1 = nn.Parameter(torch.empty(k, hidden))
        self.w2 = nn.Parameter(torch.empty(k, hidden, n_out))
        self.b2 = nn.Parameter(torch.empty(k, n_out))
        for weight, bias, fan_in in ((self.w1, self.b1, n_in), (self.w2, self.b2, hidden)):
            bound = 1.0 / math.sqrt(fan_in)
            nn.init.uniform_(weight, -bound, bound)
            nn.init.uniform_(bias, -bound, bound)

    def forward(self, beta: torch.Tensor) -> torch.Tensor:
        h = torch.relu(torch.einsum("...i,kih->...kh", beta, self.w1) + self.b1)
        return torch.einsum("...kh,kho->...ko", h, self.w2) + self.b2


class UGVAE(nn.Module):
    """UG-VAE and its two ablations (config.variant); see the module docstring."""

    group_is_batch = True  # engine.models.base.GroupedBatch: a training batch is one group

    def __init__(self, config: UGVAEConfig):
        super().__init__()
        self.config = config
        shape, d, g, k = config.input_shape, config.local_dim, config.global_dim, config.components
        width = config.hidden[-1]
        decoder_in = d + g if config.has_global else d
        if config.arch == "mlp":
            n_in = math.prod(shape)
            self.pre_encoder = nn.Sequential(nn.Flatten(), mlp([n_in, *config.hidden], nn.ReLU), nn.ReLU())
            self.decoder = nn.Sequential(
                mlp([decoder_in, *reversed(config.hidden), n_in], nn.ReLU), nn.Unflatten(1, shape)
            )
        else:
            self.pre_encoder = nn.Sequential(ConvEncoder(shape, config.channels, config.hidden[:-1], width), nn.ReLU())
            self.decoder = ConvDecoder(shape, config.channels, tuple(reversed(config.hidden)), decoder_in)
        self.local_encoder = nn.Linear(width, 2 * d)  # phi_z, seed002 eq. 4.6
        # phi_d, eq. 4.7; with one component q(d | z) = 1 and there is nothing to learn
        self.cluster_encoder = (
            nn.Sequential(nn.Linear(d, config.cluster_hidden), nn.Tanh(), nn.Linear(config.cluster_hidden, k))
            if k > 1
            else None
        )
        if config.has_global:
            self.global_encoder = nn.Linear(width + k, 2 * g)  # phi_beta, eq. 4.8: one vote per example
            self.prior_networks = ComponentNetworks(k, g, config.prior_hidden, 2 * d)  # eq. 4.3
        else:  # gmvae: p(z | d) from a K x 2d table of means and (pre-tanh) log-variances
            self.prior_table = nn.Parameter(torch.cat([torch.randn(k, d), torch.zeros(k, d)], -1))
        self.likelihood = make_likelihood(config.likelihood, shape, config.likelihood_sd)
        self.latent_groups = [LatentGroup("z", (d,), "local")]
        if config.has_global:
            self.latent_groups.append(LatentGroup("beta", (g,), "global"))

    # -- the pieces ---------------------------------------------------------------------------
    def local_posterior(self, h: torch.Tensor) -> DiagonalGaussian:
        """q(z_i | x_i) from the pre-encoded inputs h (n, width) (seed002 eq. 4.6)."""
        return DiagonalGaussian.from_output(self.local_encoder(h))

    def cluster_log_probs(self, z: torch.Tensor) -> torch.Tensor:
        """log q(d | z) (eq. 4.7): (..., d) -> (..., K)."""
        if self.cluster_encoder is None:
            return z.new_zeros(*z.shape[:-1], 1)
        return F.log_softmax(self.cluster_encoder(z), -1)

    def global_posterior(self, h: torch.Tensor, pi: torch.Tensor) -> DiagonalGaussian:
        """q(beta | X, Z) of every group: h (..., n, width) and pi = q(d | z) (..., n, K) give one
        Gaussian vote per example (eq. 4.8), multiplied over the n examples (eq. 4.9): (..., g)."""
        votes = DiagonalGaussian.from_output(self.global_encoder(torch.cat([h, pi], -1)))
        return gaussian_product(votes.mean, votes.logvar, dim=-2)

    def prior_params(self, beta: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, log-variance) of p(z | d = k, beta) for every k (eq. 4.3): beta (..., g) ->
        each (..., K, d); for "gmvae" (beta None) the table, (K, d). The log-variances are
        tanh-bounded, so the variances lie in [e^-1, e] (seed002 §1.4, [code])."""
        out = self.prior_table if beta is None else self.prior_networks(beta)
        mean, raw = out.chunk(2, -1)
        return mean, torch.tanh(raw)

    def component_log_probs(self, z: torch.Tensor, beta: torch.Tensor | None) -> torch.Tensor:
        """log p(z | d = k, beta) for every k: z (..., d), beta (..., g) broadcasting -> (..., K)."""
        mean, logvar = self.prior_params(beta)
        return gaussian_log_prob(z.unsqueeze(-2), mean, logvar).sum(-1)

    def local_prior_log_prob(self, z: torch.Tensor, beta: torch.Tensor | None) -> torch.Tensor:
        """log p(z | beta) = logsumexp_k [log p(z | d = k, beta) - log K], d marginalised by
        enumeration (eqs. 4.3-4.4): (...)."""
        return torch.logsumexp(self.component_log_probs(z, beta), -1) - math.log(self.config.components)

    def local_kl(
        self, q: DiagonalGaussian, z: torch.Tensor, beta: torch.Tensor | None, log_pi: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The two local KL terms of eq. 4.11 with d_i enumerated, at a draw z (..., d) of q:
        KL_z = -H(q(z | x)) - sum_k pi_k log p(z | d = k, beta) and KL_d = KL(q(d | z) || Cat(1/K)),
        each (...). Their negative sum is at most H(q(z | x)) + log p(z | beta), with equality when
        pi is the exact posterior p(d | z, beta) (Gibbs' inequality)."""
        pi = log_pi.exp()
        kl_z = -gaussian_entropy(q) - (pi * self.component_log_probs(z, beta)).sum(-1)
        kl_d = (pi * (log_pi + math.log(self.config.components))).sum(-1)
        return kl_z, kl_d

    # -- the LatentModel interface ------------------------------------------------------------
    def encode(self, x: torch.Tensor) -> dict[str, DiagonalGaussian]:
        """q(z_i | x_i) per row and, for the group "beta", the posterior q(beta | X, Z) of the
        whole batch as ONE group (Z at the posterior means; pi = q(d | E[z])), repeated on every
        row: (batch, g)."""
        check_input_shape(x, self.config.input_shape)
        h = self.pre_encoder(x)
        q_z = self.local_posterior(h)
        out = {"z": q_z}
        if self.config.has_global:
            q_beta = self.global_posterior(h, self.cluster_log_probs(q_z.mean).exp())
            n = x.shape[0]
            out["beta"] = DiagonalGaussian(q_beta.mean.expand(n, -1), q_beta.logvar.expand(n, -1))
        return out

    def encode_group(self, x: torch.Tensor) -> DiagonalGaussian:
        """q(beta | X, Z) of the group x (n, *shape), Z at the posterior means: (g,)."""
        q = self.encode_groups(x, x.shape[0])
        return DiagonalGaussian(q.mean[0], q.logvar[0])

    def encode_groups(self, x: torch.Tensor, group_size: int) -> DiagonalGaussian:
        """q(beta | X_j, Z_j) of every group of `group_size` consecutive rows of x
        (n_groups * group_size, *shape): (n_groups, g)."""
        self._require_global("a group posterior")
        check_input_shape(x, self.config.input_shape)
        n = x.shape[0]
        if group_size < 1 or n == 0 or n % group_size:
            raise AtlasError(
                f"encode_groups needs a positive number of whole groups: {n} inputs do not split into groups "
                f"of {group_size}; pass n_groups * group_size rows"
            )
        h = self.pre_encoder(x)
        pi = self.cluster_log_probs(self.local_posterior(h).mean).exp()
        return self.global_posterior(h.view(n // group_size, group_size, -1), pi.view(n // group_size, group_size, -1))

    def cluster_probabilities(self, x: torch.Tensor) -> torch.Tensor:
        """q(d | E[z | x]) per row, (batch, K)."""
        check_input_shape(x, self.config.input_shape)
        return self.cluster_log_probs(self.local_posterior(self.pre_encoder(x)).mean).exp()

    def decode(self, z: Latents | torch.Tensor) -> torch.Tensor:
        """Mean of p(x | z, beta) (eq. 4.2) for {"z": (..., batch, d), "beta": (..., batch, g)};
        the leading shapes broadcast. (..., batch, *shape)"""
        return self.likelihood.mean(self._decoder_params(z))

    def sample(
        self,
        n: int,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
        component: int | None = None,
        beta: torch.Tensor | None = None,
        **condition,
    ) -> torch.Tensor:
        """One group of n draws sharing ONE beta ~ N(0, I) (or the given `beta`, (g,)); each
        d_i ~ Cat(1/K) (or the given `component`) and z_i ~ p(z | d_i, beta) (eqs. 4.1-4.4),
        decoded to the mean of p(x | z, beta): (n, *shape). `temperature` scales the standard
        deviations of both draws."""
        if condition:
            raise AtlasError(
                f"unknown sampling condition(s) {', '.join(sorted(condition))}; this model accepts component and beta"
            )
        cfg = self.config
        device = model_device(self)
        generator = stream(generator)
        if cfg.has_global:
            if beta is None:
                beta = temperature * torch.randn(cfg.global_dim, generator=generator, device=device)
            else:
                beta = self._checked_beta(beta).to(device)
        elif beta is not None:
            self._require_global("a beta condition")
        if component is None:
            d = torch.randint(cfg.components, (n,), generator=generator, device=device)
        else:
            d = torch.full((n,), self._checked_component(component), dtype=torch.long, device=device)
        mean, logvar = self.prior_params(beta)  # (K, d)
        eps = torch.randn(n, cfg.local_dim, generator=generator, device=device)
        z = mean[d] + temperature * (0.5 * logvar[d]).exp() * eps
        return self.decode(self._latents(z, beta))

    @property
    def sample_conditions(self) -> dict[str, list[int]]:
        """{"component": 0..K-1}; `sample` also takes a `beta` (g,) for the group."""
        return {"component": list(range(self.config.components))}

    def elbo(self, x: torch.Tensor, k: int = 1, chunk: int | None = None) -> ELBOResult:
        """The bound per example of the batch taken as ONE group. k = 1: eqs. 4.10-4.11, kl
        {"z", "d", "beta"} with the group's beta KL shared equally by its rows, so the totals
        add up to the group bound. k > 1 (our addition): the importance-weighted bound of the
        group, log mean_s p(X, Z_s, beta_s) / q(Z_s, beta_s | X) with d marginalised in p, divided
        equally among the rows ("gmvae", without beta: each row's own bound); recon and kl are
        averages over the draws for display, and "d" is 0 there (d is inside log p(z | beta))."""
        check_importance_samples(k)
        if k == 1:
            recon, kl_z, kl_d, kl_beta = self._group_terms(x)
            kl = {"z": kl_z, "d": kl_d}
            if self.config.has_global:
                kl["beta"] = (kl_beta / x.shape[0]).expand_as(recon)
            return ELBOResult(total=recon - sum(kl.values()), recon=recon, kl=kl)
        rows, recon, kl_z, group = self._log_weights(x, k, chunk)  # (k, n), (k, n), (k, n), (k,)
        n = x.shape[0]
        if self.config.has_global:
            total = (logmeanexp(rows.sum(-1) + group, dim=0) / n).expand(n)
        else:
            total = logmeanexp(rows, dim=0)
        kl = {"z": kl_z.mean(0), "d": torch.zeros_like(total)}
        if self.config.has_global:
            kl["beta"] = (-group.mean(0) / n).expand(n)
        return ELBOResult(total=total, recon=recon.mean(0), kl=kl, k=k)

    def log_weights(
        self, x: torch.Tensor, k: int, chunk: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """Importance weights with each row a group of one, as `log_joint` scores it: k draws
        z_i ~ q(z | x_i) and beta_i ~ q(beta | {x_i}, {z_i}) (eq. 4.8 with the row's single vote),
        log w = log p(x_i, z_i, beta_i) - log q(z_i | x_i) - log q(beta_i | x_i, z_i), whose
        log-mean-exp over the draws bounds log p(x_i) of the example on its own (d marginalised).
        Returns (log w, log p(x | z, beta), {"z": log q(z | x) - log p(z | beta), "beta":
        log q(beta) - log p(beta)}), each (k, batch); "gmvae" has no "beta". The bound of the batch
        as one group is elbo(x, k)."""
        check_importance_samples(k)
        check_input_shape(x, self.config.input_shape)
        chunk = chunk or max(1, 2**24 // max(1, x.shape[0] * math.prod(self.config.input_shape)))
        h = self.pre_encoder(x)
        q_z = self.local_posterior(h)
        recon, kl_z, kl_beta = [], [], []
        for start in range(0, k, chunk):
            z = q_z.rsample(min(chunk, k - start))  # (c, n, d)
            beta = None
            if self.config.has_global:  # every row its own group: a product of one vote, (c, n, g)
                pi = self.cluster_log_probs(z).exp()
                q_beta = self.global_posterior(h.expand(len(z), -1, -1).unsqueeze(-2), pi.unsqueeze(-2))
                beta = q_beta.rsample()
                kl_beta.append(q_beta.log_prob(beta) - standard_normal_log_prob(beta))
            recon.append(self.likelihood.log_prob(x, self._decoder_params(self._latents(z, beta))))
            kl_z.append(q_z.log_prob(z) - self.local_prior_log_prob(z, beta))
        recon, kl = torch.cat(recon), {"z": torch.cat(kl_z)}
        if kl_beta:
            kl["beta"] = torch.cat(kl_beta)
        return recon - sum(kl.values()), recon, kl

    def log_joint(self, x: torch.Tensor, z: Latents | torch.Tensor) -> torch.Tensor:
        """log p(x_i, z_i, beta_i) with d marginalised, each row a group of one with its own
        beta_i (a proper density per row, for HMC and importance weights); z {"z": (..., batch,
        d), "beta": (..., batch, g)}, differentiable in both. (..., batch)"""
        z = checked_latents(self, z)
        beta = z.get("beta")
        out = self.likelihood.log_prob(x, self._decoder_params(z)) + self.local_prior_log_prob(z["z"], beta)
        if beta is not None:
            out = out + standard_normal_log_prob(beta)
        return out

    def group_log_joint(self, x: torch.Tensor, z: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
        """log p(X, Z, beta) of the rows of x (n, *shape) as one group sharing beta (eq. 4.1), d
        marginalised: z (..., n, d), beta (..., g) -> (...); log p(beta) is counted once."""
        self._require_global("a group joint")
        latents = checked_latents(self, {"z": z, "beta": beta.unsqueeze(-2)})  # beta (..., 1, g) for every row
        rows = self.likelihood.log_prob(x, self._decoder_params(latents))
        rows = rows + self.local_prior_log_prob(latents["z"], latents["beta"])
        return rows.sum(-1) + standard_normal_log_prob(beta)

    # -- training ---------------------------------------------------------------------------------
    def training_loss(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Minus the group bound of eq. 4.10 divided by the group size, the batch being the group
        (random minibatches in the thesis; a structured order gives structured groups); metrics are
        per-example means, "kl/beta" the group's beta KL divided by the group size."""
        recon, kl_z, kl_d, kl_beta = self._group_terms(x)
        n = x.shape[0]
        elbo = (recon - kl_z - kl_d).sum() - kl_beta
        metrics = {
            "elbo": elbo / n,
            "recon": recon.mean(),
            "kl/z": kl_z.mean(),
            "kl/d": kl_d.mean(),
            "kl/beta": kl_beta / n,
        }
        return -elbo / n, {name: v.detach() for name, v in metrics.items()}

    # -- helpers ----------------------------------------------------------------------------------
    def _group_terms(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(recon, KL_z, KL_d) per row (n,) and the group's KL_beta () of eqs. 4.10-4.11, with one
        draw z_i per row and one draw beta for the group."""
        check_input_shape(x, self.config.input_shape)
        h = self.pre_encoder(x)
        q_z = self.local_posterior(h)
        z = q_z.rsample()
        log_pi = self.cluster_log_probs(z)
        beta, kl_beta = None, x.new_zeros(())
        if self.config.has_global:
            q_beta = self.global_posterior(h, log_pi.exp())
            beta = q_beta.rsample()
            kl_beta = q_beta.kl_to_standard_normal()
        kl_z, kl_d = self.local_kl(q_z, z, beta, log_pi)
        recon = self.likelihood.log_prob(x, self._decoder_params(self._latents(z, beta)))
        return recon, kl_z, kl_d, kl_beta

    def _log_weights(
        self, x: torch.Tensor, k: int, chunk: int | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """For k draws (Z_s, beta_s) ~ q(Z | X) q(beta | X, Z_s): the per-row parts
        log p(x_i | z_is, beta_s) + log p(z_is | beta_s) - log q(z_is | x_i) (k, n), with its
        recon and log q - log p parts, and the group part log p(beta_s) - log q(beta_s | X, Z_s) (k,)."""
        check_input_shape(x, self.config.input_shape)
        n = x.shape[0]
        chunk = chunk or max(1, 2**24 // max(1, n * math.prod(self.config.input_shape)))
        h = self.pre_encoder(x)
        q_z = self.local_posterior(h)
        recon, kl_z, group = [], [], []
        for start in range(0, k, chunk):
            z = q_z.rsample(min(chunk, k - start))  # (c, n, d)
            beta = None
            if self.config.has_global:
                q_beta = self.global_posterior(h.expand(len(z), -1, -1), self.cluster_log_probs(z).exp())  # (c, g)
                beta = q_beta.rsample()
                group.append(standard_normal_log_prob(beta) - q_beta.log_prob(beta))
                beta = beta.unsqueeze(-2)  # (c, 1, g): one beta per draw, shared by the rows
            recon.append(self.likelihood.log_prob(x, self._decoder_params(self._latents(z, beta))))
            kl_z.append(q_z.log_prob(z) - self.local_prior_log_prob(z, beta))
        recon, kl_z = torch.cat(recon), torch.cat(kl_z)
        group = torch.cat(group) if group else recon.new_zeros(k)
        return recon - kl_z, recon, kl_z, group

    def _latents(self, z: torch.Tensor, beta: torch.Tensor | None) -> Latents:
        return {"z": z} if beta is None else {"z": z, "beta": beta}

    def _decoder_params(self, z: Latents | torch.Tensor) -> torch.Tensor:
        z = checked_latents(self, z)
        lead = leading_shape(z, self.latent_groups)
        flat = torch.cat([t.expand(*lead, t.shape[-1]) for t in z.values()], -1)
        out = self.decoder(flat.reshape(-1, flat.shape[-1]))
        return out.reshape(*lead, *self.config.input_shape)

    def _require_global(self, what: str) -> None:
        if not self.config.has_global:
            raise AtlasError(f"the gmvae variant has no global latent beta, so it has no {what}; use variant 'ugvae'")

    def _checked_component(self, component) -> int:
        k = self.config.components
        if isinstance(component, bool) or not isinstance(component, numbers.Integral) or not 0 <= component < k:
            raise AtlasError(f"component must be an integer in 0..{k - 1}, got {component!r}")
        return int(component)

    def _checked_beta(self, beta) -> torch.Tensor:
        g = self.config.global_dim
        beta = torch.as_tensor(beta, dtype=torch.float32)
        if beta.shape != (g,) or not torch.isfinite(beta).all():
            raise AtlasError(f"beta must be {g} finite numbers, got shape {tuple(beta.shape)}")
        return beta


# -- the views of seed002 Figs. 4.4 and 4.7 -------------------------------------------------------
@torch.no_grad()
def global_local_grid(
    model: UGVAE,
    component: int,
    n_rows: int = 7,
    n_cols: int = 7,
    beta_span: float = 1.5,
    z_span: float = 3.0,
    betas: torch.Tensor | None = None,
) -> torch.Tensor:
    """The two-axis traversal of seed002 Fig. 4.4 for one mixture component d, interpolated in
    the prior. Row r holds beta_r, which moves from -beta_span to +beta_span on every dimension at
    once ([code]: 7 steps, +-1.5), or the given `betas` ((n_rows,) levels applied to every
    dimension, or (n_rows, g) vectors). Column c holds z = mu_z^(d)(beta_r) + t_c (1, ..., 1), t_c
    from -z_span to +z_span: every dimension of z at once around the component's mean for that
    row's beta (the thesis: +-3). Returns the decoded means, row by row: (n_rows * n_cols, *shape)."""
    model._require_global("global/local grid")
    component = model._checked_component(component)
    g = model.config.global_dim
    if n_cols < 1 or (betas is None and n_rows < 1):
        raise AtlasError(f"a grid needs at least one row and one column, got {n_rows} x {n_cols}")
    device = model_device(model)
    if betas is None:
        betas = torch.linspace(-beta_span, beta_span, n_rows, device=device)
    betas = torch.as_tensor(betas, dtype=torch.float32, device=device)
    if betas.dim() == 1:
        betas = betas[:, None].expand(-1, g)
    if betas.dim() != 2 or betas.shape[1] != g or len(betas) == 0:
        raise AtlasError(f"betas must be (rows,) levels or (rows, {g}) vectors, got shape {tuple(betas.shape)}")
    mean, _ = model.prior_params(betas)  # (rows, K, d)
    steps = torch.linspace(-z_span, z_span, n_cols, device=device)
    z = mean[:, component, None, :] + steps[None, :, None]  # (rows, cols, d)
    beta = betas[:, None, :].expand(-1, n_cols, -1)
    return model.decode({"z": z, "beta": beta}).reshape(-1, *model.config.input_shape)


@torch.no_grad()
def alignment_grid(
    model: UGVAE, group_a: torch.Tensor, group_b: torch.Tensor, n: int = 7, index_a: int = 0, index_b: int = 0
) -> torch.Tensor:
    """The domain-alignment grid of seed002 Fig. 4.7a: beta_a and beta_b are the posterior means
    of q(beta | X, Z) of the two groups (eq. 4.8), z_a and z_b the posterior means of q(z | x) of
    example index_a of group_a and index_b of group_b (eq. 4.6). Row r decodes beta linearly
    interpolated from beta_a to beta_b, column c z from z_a to z_b: (n * n, *shape), row by row."""
    if n < 2:
        raise AtlasError(f"an interpolation grid needs at least 2 steps, got {n}")
    for name, group, index in (("group_a", group_a, index_a), ("group_b", group_b, index_b)):
        if not 0 <= index < len(group):
            raise AtlasError(f"index into {name} must be in 0..{len(group) - 1}, got {index}")
    beta_a, beta_b = model.encode_group(group_a).mean, model.encode_group(group_b).mean
    z_a = model.encode(group_a[index_a : index_a + 1])["z"].mean[0]
    z_b = model.encode(group_b[index_b : index_b + 1])["z"].mean[0]
    t = torch.linspace(0.0, 1.0, n, device=beta_a.device)[:, None]
    betas = (1 - t) * beta_a + t * beta_b  # (n, g)
    zs = (1 - t) * z_a + t * z_b  # (n, d)
    latents = {"z": zs[None, :, :].expand(n, -1, -1), "beta": betas[:, None, :].expand(-1, n, -1)}
    return model.decode(latents).reshape(-1, *model.config.input_shape)
