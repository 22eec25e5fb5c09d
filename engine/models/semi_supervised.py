"""Semi-unsupervised learning (seed001 ch. 2): GM-DGM and its baseline, the SSVAE (M2).

Both models share the posterior q(y, z | x) = q(y | x) q(z | x, y), a classifier over K
components and a Gaussian over z given the input and a component, and the objective of
seed001 eq. 2.10, to maximise:

    E_{(x, y) ~ D_l} [ L_l(x, y) + alpha log q(y | x) ] + E_{x ~ D_u} [ L_u(x) ]

    L_l(x, y) = E_{q(z|x,y)} [ log p(x, y, z) - log q(z | x, y) ]
    L_u(x)    = E_{q(y|x)} [ L_l(x, y) ] + H(q(y | x))

They differ in the generative model:

- GM-DGM: p(x | z) p(z | y) p(y), p(z | y) = N(mu_y, diag exp(logvar_y)) from a K x d_z
  look-up table of means and log-variances (App. A.1): z is a mixture indexed by y;
- SSVAE:  p(x | y, z) p(y) p(z), p(z) = N(0, I): y enters only through the decoder.

y is marginalised exactly by enumerating its K values (the default), or, as the thesis
trains, by one Gumbel-softmax draw per input at temperature tau (its raw relaxed value, not
straight-through). The thesis says only that tau is fixed or deterministically annealed; here it
falls geometrically from `temperature` to `temperature_min` over `anneal_steps` training steps,
tau(t) = tau_0 (tau_min / tau_0)^min(t / anneal_steps, 1), and stays fixed when they are equal. p(y) is uniform, or the "on purpose" prior of seed001 §1.5: half the
mass on the n_l labelled classes, half on the n_aug extra components.

As latent-variable models (families "gmdgm" and "ssvae") y is summed out: the one latent
group is z, with q(z | x) the mixture sum_y q(y | x) q(z | x, y), log p(x, z) =
log sum_y p(y) p(z | y) p(x | y, z), and decode(z) the mean of p(x | z) (for the SSVAE the
p(y)-weighted mean over y, since there z and y are independent a priori). What depends on y
(the y x z grid, samples of one component, the classifier) is its own method.

Preprocessing of seed001 App. A.1: `binarise` draws a fresh binary image from the grey
values at every training step (dynamic binarisation), and `min_pixel_sd` > 0 scores only
the pixels whose standard deviation over the training set exceeds it (the others decode to
their training mean).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from engine.errors import AtlasError
from engine.models.base import ELBOResult, LatentGroup, Latents, check_importance_samples, model_device
from engine.models.blocks import mlp
from engine.models.cluster_accuracy import cluster_accuracy
from engine.models.latents import checked_latents
from engine.models.likelihoods import make_likelihood
from engine.models.posteriors import DiagonalGaussian, GaussianMixturePosterior
from engine.numerics import gaussian_kl_elementwise, gaussian_log_prob, logmeanexp
from engine.randomness import stream


def on_purpose_log_prior(labelled_classes: int, components: int) -> torch.Tensor:
    """log p(y) of seed001 §1.5: 1 / (2 n_l) on each of the first n_l components (the
    labelled classes), 1 / (2 n_aug) on each of the n_aug = K - n_l others. (K,)"""
    n_aug = components - labelled_classes
    if labelled_classes < 1 or n_aug < 1:
        raise AtlasError(
            f"the on-purpose prior needs labelled classes and extra components: got {labelled_classes} "
            f"labelled classes among {components} components"
        )
    p = torch.cat([torch.full((labelled_classes,), 0.5 / labelled_classes), torch.full((n_aug,), 0.5 / n_aug)])
    return p.log()


@dataclass
class SemiSupervisedConfig:
    input_shape: tuple[int, ...] = (64,)
    model: Literal["gmdgm", "ssvae"] = "gmdgm"
    components: int = 10  # K, the values of y
    latent_dim: int = 10  # d_z
    hidden: int = 500  # units per hidden layer (Table A.1)
    likelihood: Literal["bernoulli", "gaussian"] = "bernoulli"
    prior: Literal["uniform", "on-purpose"] = "uniform"
    labelled_classes: int = 0  # n_l, for the on-purpose prior
    alpha: float = 1.0  # weight of log q(y | x) on labelled data (seed001 eq. 2.10; no value given there)
    marginalise: Literal["enumerate", "gumbel"] = "enumerate"
    temperature: float = 1.0  # tau of the Gumbel-softmax draw at the first step
    temperature_min: float | None = None  # tau after anneal_steps (None: no annealing)
    anneal_steps: int = 10_000
    binarise: bool = False  # dynamic binarisation of the training inputs (App. A.1)
    min_pixel_sd: float = 0.0  # > 0: score only the pixels varying more than this (App. A.1: 0.1)

    def __post_init__(self):
        self.input_shape = tuple(int(s) for s in self.input_shape)
        if self.model not in ("gmdgm", "ssvae"):
            raise AtlasError(f"model must be 'gmdgm' or 'ssvae', got {self.model!r}")
        for name in ("components", "latent_dim", "hidden"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise AtlasError(f"{name} must be a positive integer, got {value!r}")
        if self.components < 2:
            raise AtlasError(f"components must be at least 2, got {self.components}")
        if self.prior not in ("uniform", "on-purpose"):
            raise AtlasError(f"prior must be 'uniform' or 'on-purpose', got {self.prior!r}")
        if self.marginalise not in ("enumerate", "gumbel"):
            raise AtlasError(f"marginalise must be 'enumerate' or 'gumbel', got {self.marginalise!r}")
        if not self.temperature > 0:
            raise AtlasError(f"temperature must be positive, got {self.temperature}")
        if self.temperature_min is not None and not 0 < self.temperature_min <= self.temperature:
            raise AtlasError(
                f"temperature_min must be in (0, temperature={self.temperature}], got {self.temperature_min}"
            )
        if not isinstance(self.anneal_steps, int) or self.anneal_steps < 1:
            raise AtlasError(f"anneal_steps must be a positive integer, got {self.anneal_steps!r}")
        if not (math.isfinite(self.alpha) and self.alpha >= 0):
            raise AtlasError(f"alpha must be a number >= 0, got {self.alpha}")
        if not 0 <= self.min_pixel_sd < 1:
            raise AtlasError(f"min_pixel_sd must be in [0, 1), got {self.min_pixel_sd}")

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        prior = (
            f"the on-purpose p(y) ({self.labelled_classes} labelled classes)"
            if self.prior == "on-purpose"
            else "uniform p(y)"
        )
        tau = f"tau {self.temperature}" + (
            f" -> {self.temperature_min} over {self.anneal_steps} steps" if self.temperature_min is not None else ""
        )
        how = "enumerated" if self.marginalise == "enumerate" else f"one Gumbel-softmax draw, {tau}"
        shape = "p(x|z) p(z|y) p(y)" if self.model == "gmdgm" else "p(x|y,z) p(y) p(z)"
        return (
            f"{self.model.upper()} {shape}, K = {self.components} components, d_z = {self.latent_dim}, MLPs of "
            f"{self.hidden} units, {prior}, y {how}, alpha {self.alpha}"
        )


@dataclass
class GMDGMConfig(SemiSupervisedConfig):
    """The family "gmdgm": z a Gaussian mixture indexed by y."""

    def __post_init__(self):
        if self.model != "gmdgm":
            raise AtlasError(f"the gmdgm family builds model 'gmdgm'; for {self.model!r} use the family {self.model!r}")
        super().__post_init__()


@dataclass
class SSVAEConfig(SemiSupervisedConfig):
    """The family "ssvae": Kingma et al.'s M2."""

    model: Literal["gmdgm", "ssvae"] = "ssvae"

    def __post_init__(self):
        if self.model != "ssvae":
            raise AtlasError(f"the ssvae family builds model 'ssvae'; for {self.model!r} use the family {self.model!r}")
        super().__post_init__()


class SemiSupervisedVAE(nn.Module):
    """GM-DGM or SSVAE (config.model) on flat inputs (batch, D)."""

    def __init__(self, config: SemiSupervisedConfig):
        super().__init__()
        self.config = config
        d, k, dz, h = math.prod(config.input_shape), config.components, config.latent_dim, config.hidden
        self.classifier = mlp([d, h, h, k])  # q(y | x)
        self.posterior = mlp([d + k, h, h, 2 * dz])  # q(z | x, y): mean and log-variance share the layers
        if config.model == "gmdgm":
            self.prior_mean = nn.Parameter(torch.randn(k, dz))  # the K x d_z look-up tables of p(z | y)
            self.prior_logvar = nn.Parameter(torch.zeros(k, dz))
            self.decoder = mlp([dz, h, h, d])  # p(x | z)
        else:
            self.decoder = mlp([dz + k, h, h, d])  # p(x | y, z)
        self.likelihood = make_likelihood(config.likelihood, (d,))
        log_py = (
            on_purpose_log_prior(config.labelled_classes, k)
            if config.prior == "on-purpose"
            else torch.full((k,), -math.log(k))
        )
        self.register_buffer("log_py", log_py)
        self.register_buffer("pixel_mask", torch.ones(d))  # 1 where a pixel is scored
        self.register_buffer("pixel_mean", torch.zeros(d))  # what an unscored pixel decodes to
        self.latent_groups = [LatentGroup("z", (dz,), "global")]
        self.tau = config.temperature

    def set_step(self, step: int) -> None:
        """The Gumbel-softmax temperature of training step `step` (the annealing schedule)."""
        c = self.config
        if c.temperature_min is not None:
            self.tau = c.temperature * (c.temperature_min / c.temperature) ** min(step / c.anneal_steps, 1.0)

    # -- the pieces ---------------------------------------------------------------------------
    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """log q(y | x), (batch, K)."""
        return F.log_softmax(self.classifier(x.flatten(1)), -1)

    def q_z(self, x: torch.Tensor, y: torch.Tensor) -> DiagonalGaussian:
        """q(z | x, y) for y one-hot or relaxed (batch, K)."""
        return DiagonalGaussian.from_output(self.posterior(torch.cat([x.flatten(1), y], -1)))

    def p_z(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, log-variance) of p(z | y) for y (batch, K): the table rows y picks (GM-DGM,
        y @ table for a relaxed y) or N(0, I) (SSVAE)."""
        if self.config.model == "gmdgm":
            return y @ self.prior_mean, y @ self.prior_logvar
        zeros = y.new_zeros(y.shape[0], self.config.latent_dim)
        return zeros, zeros

    def decoder_params(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.decoder(z if self.config.model == "gmdgm" else torch.cat([z, y], -1))

    # -- the bounds ---------------------------------------------------------------------------
    def labelled_bound(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """L_l(x, y) with one reparameterised z and the Gaussian KL in closed form:
        E_q[log p(x | z [, y])] - KL(q(z | x, y) || p(z | y)) + log p(y); y (batch, K). (batch,)"""
        q = self.q_z(x, y)
        z = q.rsample()
        recon = self.likelihood.log_prob(x.flatten(1), self.decoder_params(z, y), self.pixel_mask)
        p_mean, p_logvar = self.p_z(y)
        kl = gaussian_kl_elementwise(q.mean, q.logvar, p_mean, p_logvar).sum(-1)
        return recon - kl + y @ self.log_py

    def _every_y(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Every input once per value of y: flat inputs (K n, D), value-major, and their one-hot
        ys (K n, K); a (K n,) result reshapes to (K, n)."""
        n, k = x.shape[0], self.config.components
        eye = torch.eye(k, dtype=x.dtype, device=x.device)
        return x.flatten(1).repeat(k, 1), eye.repeat_interleave(n, 0)

    def unlabelled_bound(self, x: torch.Tensor) -> torch.Tensor:
        """L_u(x) = sum_y q(y | x) L_l(x, y) + H(q(y | x)), every y enumerated; or, with
        marginalise="gumbel", L_l at one relaxed draw of y plus the entropy. (batch,)"""
        log_qy = self.classify(x)
        qy = log_qy.exp()
        entropy = -(qy * log_qy).sum(-1)
        k = self.config.components
        if self.config.marginalise == "gumbel":
            y = F.gumbel_softmax(log_qy, tau=self.tau, hard=False)
            return self.labelled_bound(x, y) + entropy
        xs, ys = self._every_y(x)
        bounds = self.labelled_bound(xs, ys).view(k, x.shape[0]).T  # (n, K)
        return (qy * bounds).sum(-1) + entropy

    def objective(
        self, x_labelled: torch.Tensor, y_labelled: torch.Tensor, x_unlabelled: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The negative of eq. 2.10 on one labelled and one unlabelled batch (either may be
        empty): -(mean [L_l + alpha log q(y | x)] over D_l + mean L_u over D_u). y_labelled
        holds class indices (batch,)."""
        terms, metrics = [], {}
        if len(x_labelled):
            y = F.one_hot(y_labelled.long(), self.config.components).to(x_labelled.dtype)
            ll = self.labelled_bound(x_labelled, y)
            log_q = (self.classify(x_labelled) * y).sum(-1)
            terms.append((ll + self.config.alpha * log_q).mean())
            metrics.update(labelled_bound=ll.mean().detach(), classifier_log_q=log_q.mean().detach())
        if len(x_unlabelled):
            lu = self.unlabelled_bound(x_unlabelled)
            terms.append(lu.mean())
            metrics["unlabelled_bound"] = lu.mean().detach()
        if not terms:
            raise AtlasError("the objective needs a labelled or an unlabelled batch; both were empty")
        return -sum(terms), metrics

    # -- training --------------------------------------------------------------------------------
    def training_loss(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """No labels: the unlabelled bound alone (the US regime)."""
        return self.labelled_training_loss(x, x[:0], torch.zeros(0, dtype=torch.long, device=x.device))

    def labelled_training_loss(
        self, x: torch.Tensor, x_labelled: torch.Tensor, y_labelled: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if self.config.binarise:  # a fresh binary image per step (dynamic binarisation)
            x, x_labelled = torch.bernoulli(x), torch.bernoulli(x_labelled)
        if len(y_labelled) and not (0 <= int(y_labelled.min()) and int(y_labelled.max()) < self.config.components):
            raise AtlasError(
                f"labels must be classes 0..{self.config.components - 1} of the model's {self.config.components} "
                f"components, got values up to {int(y_labelled.max())}; raise components"
            )
        return self.objective(x_labelled, y_labelled, x)

    @torch.no_grad()
    def initialize(self, train_data) -> None:
        """With min_pixel_sd > 0, the pixels scored and the training means (App. A.1)."""
        if self.config.min_pixel_sd <= 0:
            return
        x = train_data.batch(torch.arange(min(len(train_data), 60_000))).flatten(1).double()
        self.pixel_mean.copy_(x.mean(0).float())
        self.pixel_mask.copy_((x.std(0) > self.config.min_pixel_sd).float())
        if not self.pixel_mask.any():
            raise AtlasError(f"no pixel varies by more than min_pixel_sd={self.config.min_pixel_sd}; lower it")

    # -- the latent-variable model, y summed out ---------------------------------------------------
    def _image(self, flat: torch.Tensor) -> torch.Tensor:
        """Flat means (..., D) -> (..., *input_shape), unscored pixels at their training mean."""
        flat = torch.where(self.pixel_mask.bool(), flat, self.pixel_mean)
        return flat.reshape(*flat.shape[:-1], *self.config.input_shape)

    def _all_y(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """z (..., d_z) repeated for every value of y: (..., K, d_z) and the one-hot ys (..., K, K)."""
        k = self.config.components
        eye = torch.eye(k, dtype=z.dtype, device=z.device)
        return z.unsqueeze(-2).expand(*z.shape[:-1], k, z.shape[-1]), eye.expand(*z.shape[:-1], k, k)

    def encode(self, x: torch.Tensor) -> dict[str, GaussianMixturePosterior]:
        """q(z | x) = sum_y q(y | x) q(z | x, y), every y enumerated."""
        flat = x.flatten(1)
        n, k = flat.shape[0], self.config.components
        q = self.q_z(*self._every_y(flat))
        means, logvars = (t.view(k, n, -1).transpose(0, 1) for t in (q.mean, q.logvar))
        return {"z": GaussianMixturePosterior(self.classify(flat), means, logvars)}

    def decode(self, z: Latents | torch.Tensor) -> torch.Tensor:
        """The mean of p(x | z): GM-DGM's decoder; for the SSVAE sum_y p(y) E[x | y, z]."""
        z = checked_latents(self, z)["z"]
        if self.config.model == "gmdgm":
            return self._image(self.likelihood.mean(self.decoder(z)))
        zs, ys = self._all_y(z)
        means = self.likelihood.mean(self.decoder(torch.cat([zs, ys], -1)))  # (..., K, D)
        return self._image((self.log_py.exp().unsqueeze(-1) * means).sum(-2))

    def decode_y(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The mean of p(x | y, z) (GM-DGM: p(x | z), whatever y); z (..., d_z), y (...,) classes."""
        onehot = F.one_hot(y.long(), self.config.components).to(z.dtype)
        return self._image(self.likelihood.mean(self.decoder_params(z, onehot)))

    def log_joint(self, x: torch.Tensor, z: Latents | torch.Tensor) -> torch.Tensor:
        """log p(x, z) = log sum_y p(y) p(z | y) p(x | y, z), (..., batch)."""
        recon, prior = self._log_terms(x, checked_latents(self, z)["z"])
        return recon + prior

    def _log_terms(self, x: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(log p(x | z), log p(z)) with y summed out: GM-DGM p(z) = sum_y p(y) N(mu_y, var_y);
        SSVAE p(x | z) = sum_y p(y) p(x | y, z), since y and z are independent a priori."""
        flat = x.flatten(1)
        if self.config.model == "gmdgm":
            per_y = gaussian_log_prob(z.unsqueeze(-2), self.prior_mean, self.prior_logvar).sum(-1)  # (..., batch, K)
            recon = self.likelihood.log_prob(flat, self.decoder(z), self.pixel_mask)
            return recon, torch.logsumexp(self.log_py + per_y, -1)
        zs, ys = self._all_y(z)
        per_y = self.likelihood.log_prob(flat.unsqueeze(-2), self.decoder(torch.cat([zs, ys], -1)), self.pixel_mask)
        prior = gaussian_log_prob(z, torch.zeros_like(z), torch.zeros_like(z)).sum(-1)
        return torch.logsumexp(self.log_py + per_y, -1), prior

    def log_weights(
        self, x: torch.Tensor, k: int, chunk: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(log w, log p(x | z), log q(z | x) - log p(z)) for k draws z from the mixture
        q(z | x), each (k, batch); `chunk` draws at a time bound the memory."""
        check_importance_samples(k)
        q = self.encode(x)["z"]
        chunk = chunk or max(
            1, 2**22 // max(1, x.shape[0] * self.config.components * math.prod(self.config.input_shape))
        )
        recon, kl = [], []
        for start in range(0, k, chunk):
            z = q.rsample(min(chunk, k - start))  # (c, batch, d_z)
            r, prior = self._log_terms(x, z)
            recon.append(r)
            kl.append(q.log_prob(z) - prior)
        recon, kl = torch.cat(recon), torch.cat(kl)
        return recon - kl, recon, kl

    def elbo(self, x: torch.Tensor, k: int = 1) -> ELBOResult:
        """k = 1: the unlabelled bound L_u(x) with y enumerated, as recon - KL_z - KL_y with
        KL_z = E_q(y|x) KL(q(z|x,y) || p(z|y)) and KL_y = KL(q(y|x) || p(y)). k > 1: the
        importance-weighted bound with the mixture q(z | x) as proposal (kl["z"] then the
        mean of log q(z | x) - log p(z) over the draws, y summed out of both)."""
        check_importance_samples(k)
        flat = x.flatten(1)
        if k > 1:
            log_w, recon, kl = self.log_weights(flat, k)
            return ELBOResult(total=logmeanexp(log_w, dim=0), recon=recon.mean(0), kl={"z": kl.mean(0)}, k=k)
        n, kk = flat.shape[0], self.config.components
        log_qy = self.classify(flat)
        qy = log_qy.exp()
        xs, ys = self._every_y(flat)
        q = self.q_z(xs, ys)
        z = q.rsample()
        recon = self.likelihood.log_prob(xs, self.decoder_params(z, ys), self.pixel_mask).view(kk, n).T
        p_mean, p_logvar = self.p_z(ys)
        kl_z = gaussian_kl_elementwise(q.mean, q.logvar, p_mean, p_logvar).sum(-1).view(kk, n).T
        kl = {"z": (qy * kl_z).sum(-1), "y": (qy * (log_qy - self.log_py)).sum(-1)}
        recon = (qy * recon).sum(-1)
        return ELBOResult(total=recon - kl["z"] - kl["y"], recon=recon, kl=kl)

    def sample(
        self, n: int, temperature: float = 1.0, generator: torch.Generator | None = None, component: int | None = None
    ) -> torch.Tensor:
        """n draws of the mean of p(x | y, z): y ~ p(y) (or the given component), z ~ p(z | y)."""
        k, device = self.config.components, model_device(self)
        generator = stream(generator)
        if component is None:
            y = torch.multinomial(self.log_py.exp().expand(n, -1), 1, generator=generator).squeeze(-1)
        else:
            if component not in range(k):
                raise AtlasError(f"component must be one of 0..{k - 1}, got {component!r}")
            y = torch.full((n,), int(component), dtype=torch.long, device=device)
        mean, logvar = self.p_z(F.one_hot(y, k).float())
        eps = torch.randn(n, self.config.latent_dim, generator=generator, device=device)
        return self.decode_y(mean + math.sqrt(temperature) * (0.5 * logvar).exp() * eps, y)

    @property
    def sample_conditions(self) -> dict[str, list[int]]:
        return {"component": list(range(self.config.components))}

    @torch.no_grad()
    def evaluation_metrics(self, test_data, n: int) -> dict[str, float]:
        """Cluster accuracy of argmax q(y | x) with the majority mapping (seed001 eq. 2.11)
        against every categorical label: {"acc/{label}": accuracy}."""
        n = min(n, len(test_data))
        pred = torch.cat(
            [
                self.classify(test_data.batch(torch.arange(s, min(s + 500, n))).to(model_device(self))).argmax(-1).cpu()
                for s in range(0, n, 500)
            ]
        )
        return {
            f"acc/{label}": cluster_accuracy(
                pred, col.values[:n], self.config.components, len(col.categories), method="majority"
            ).accuracy
            for label, col in test_data.labels.items()
            if col.is_categorical
        }
