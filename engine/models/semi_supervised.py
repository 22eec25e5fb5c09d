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
straight-through). p(y) is uniform, or the "on purpose" prior of seed001 §1.5: half the
mass on the n_l labelled classes, half on the n_aug extra components.

This module holds the two models' shared computation; it is not yet a registered family
(the trainer's labelled stream comes with it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from engine.errors import AtlasError
from engine.models.blocks import mlp
from engine.models.likelihoods import make_likelihood
from engine.models.posteriors import DiagonalGaussian
from engine.numerics import gaussian_kl_elementwise


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
    temperature: float = 1.0  # tau of the Gumbel-softmax draw

    def __post_init__(self):
        self.input_shape = tuple(int(s) for s in self.input_shape)
        if self.model not in ("gmdgm", "ssvae"):
            raise AtlasError(f"model must be 'gmdgm' or 'ssvae', got {self.model!r}")
        if self.components < 2:
            raise AtlasError(f"components must be at least 2, got {self.components}")
        if self.marginalise not in ("enumerate", "gumbel"):
            raise AtlasError(f"marginalise must be 'enumerate' or 'gumbel', got {self.marginalise!r}")
        if not self.temperature > 0:
            raise AtlasError(f"temperature must be positive, got {self.temperature}")


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
        recon = self.likelihood.log_prob(x.flatten(1), self.decoder_params(z, y))
        p_mean, p_logvar = self.p_z(y)
        kl = gaussian_kl_elementwise(q.mean, q.logvar, p_mean, p_logvar).sum(-1)
        return recon - kl + y @ self.log_py

    def unlabelled_bound(self, x: torch.Tensor) -> torch.Tensor:
        """L_u(x) = sum_y q(y | x) L_l(x, y) + H(q(y | x)), every y enumerated; or, with
        marginalise="gumbel", L_l at one relaxed draw of y plus the entropy. (batch,)"""
        log_qy = self.classify(x)
        qy = log_qy.exp()
        entropy = -(qy * log_qy).sum(-1)
        k = self.config.components
        if self.config.marginalise == "gumbel":
            y = F.gumbel_softmax(log_qy, tau=self.config.temperature, hard=False)
            return self.labelled_bound(x, y) + entropy
        n = x.shape[0]
        eye = torch.eye(k, dtype=x.dtype, device=x.device)
        xs = x.flatten(1).repeat(k, 1)  # (K n, D): every input once per value of y
        ys = eye.repeat_interleave(n, 0)
        bounds = self.labelled_bound(xs, ys).view(k, n).T  # (n, K)
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
