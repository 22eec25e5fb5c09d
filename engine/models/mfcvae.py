"""MFCVAE, the Multi-Facet Clustering VAE (seed000 ch. 2, App. A; Falck et al. 2021).

J facets, each a mixture-of-Gaussians prior over its own latent (seed000 eq. 2.2):

    c_j ~ Cat(pi_j),   z_j | c_j ~ N(mu_jc, Sigma_jc),   x | z_1..z_J ~ p(x | f(z))

The encoder gives a diagonal Gaussian q(z_j|x) per facet and there is no network for
c: q(c_j|x) is the responsibility p(c_j|z_j) at one draw z_j ~ q(z_j|x) (the VaDE
trick, Theorem 2.2, eq. A.47).

Facet indices here run from 0 (the shallowest rung: style or, on colour data, the
object) to J-1 (the deepest rung, trained first). The thesis numbers them 1..J, so
"facet{j}" here is its z_{j+1}.

Architecture: a variational ladder (VLAE, eqs. A.60-A.66). The bottom-up backbone
branches one rung per facet at increasing depth; the top-down decoder starts from the
deepest facet and concatenates each shallower facet's rung, scaled by its fade-in
weight alpha_j, on the way down. Progressive training (App. A.4.3): facet j joins at
`facet_start_steps[j]` and alpha_j rises linearly from 0 to 1 over `fade_in_steps`;
alpha_j also weights facet j's two KL terms (eq. A.75).
"""

from __future__ import annotations

import math
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
from engine.models.blocks import MAX_CLUSTERS, MAX_LATENT_DIM, MAX_WIDTH, check_network, check_size
from engine.models.cluster_accuracy import cluster_accuracy
from engine.models.latents import checked_latents, leading_shape
from engine.models.likelihoods import make_likelihood
from engine.models.posteriors import DiagonalGaussian
from engine.numerics import gaussian_log_prob, logmeanexp
from engine.randomness import stream

SOFTPLUS_BETA = 10.0  # prior scales go through Softplus(beta=10), as in the authors' code


@dataclass
class MFCVAEConfig:
    input_shape: tuple[int, ...] = (3, 16, 16)
    facet_dims: tuple[int, ...] = (8, 3)  # dim z_j, shallowest facet first
    clusters: tuple[int, ...] = (10, 20)  # K_j
    arch: Literal["mlp", "conv"] = "mlp"
    hidden: tuple[int, ...] = (500, 500)  # mlp: backbone width at each rung (Table A.2: 500, 2000)
    channels: tuple[int, ...] = (32, 64)  # conv: one stride-2 backbone stage per rung (Table A.3: 64, 128)
    likelihood: Literal["bernoulli", "gaussian"] = "bernoulli"
    likelihood_sd: float | None = None  # gaussian only: fixed sd (Table A.1); None learns it per pixel
    covariance: Literal["diag", "full"] = "diag"  # of p(z_j | c_j)
    learn_pi: bool = True  # False fixes pi_j = 1/K_j (Table A.1, 3DShapes and SVHN)
    prior_var_init: float = 0.01  # initial diagonal of Sigma_jc (seed000 §1.5)
    fade_in_steps: int = 1000  # length of each facet's linear fade-in (A.4.3)
    facet_start_steps: tuple[int, ...] = ()  # step at which facet j joins; () = all from step 0
    head: int = 0  # > 0: a nonlinear layer of this width between the lowest rung and the output (see below)
    beta: tuple[float, ...] = ()  # weight on facet j's KL terms (beta-VAE style); () = 1 for every facet
    init_examples: int = 5000  # training inputs encoded to initialise the prior means
    dataset_size: int = 0  # N of the training set; the trainer fills it in
    family: str = field(default="mfcvae", init=False)

    def __post_init__(self):
        self.input_shape = tuple(int(s) for s in self.input_shape)
        self.facet_dims = tuple(int(d) for d in self.facet_dims)
        self.clusters = tuple(int(k) for k in self.clusters)
        self.hidden = tuple(int(h) for h in self.hidden)
        self.channels = tuple(int(c) for c in self.channels)
        self.facet_start_steps = tuple(int(s) for s in self.facet_start_steps)
        self.beta = tuple(float(b) for b in self.beta)
        if self.likelihood_sd is not None:
            self.likelihood_sd = float(self.likelihood_sd)
        n = len(self.facet_dims)
        if n == 0 or len(self.clusters) != n:
            raise AtlasError(
                f"give one latent dim and one cluster count per facet: facet_dims has {n} entries, "
                f"clusters has {len(self.clusters)}"
            )
        for d in self.facet_dims:
            check_size("a facet latent dim", d, MAX_LATENT_DIM)
        for k in self.clusters:
            check_size("a facet's cluster count", k, MAX_CLUSTERS)
        check_network("MFCVAE", self.input_shape, self.arch, (*self.hidden, *self.channels))
        widths = self.hidden if self.arch == "mlp" else self.channels
        if len(widths) != n:
            name = "hidden" if self.arch == "mlp" else "channels"
            raise AtlasError(f"{name} needs one entry per facet ({n}), got {list(widths)}")
        if self.arch == "conv":
            _, h, w = self.input_shape
            if h % 2 ** (n + 1) or w % 2 ** (n + 1):
                raise AtlasError(
                    f"a conv MFCVAE with {n} facets halves the image {n + 1} times; height and width must "
                    f"be multiples of {2 ** (n + 1)}, got {h}x{w}"
                )
        if self.covariance not in ("diag", "full"):
            raise AtlasError(f"unknown covariance {self.covariance!r}; choose 'diag' or 'full'")
        if not (self.prior_var_init > 0 and math.isfinite(self.prior_var_init)):
            raise AtlasError(f"prior_var_init must be a positive number, got {self.prior_var_init}")
        check_size("fade_in_steps", self.fade_in_steps, 10**9)
        if self.head:
            check_size("head", self.head, MAX_WIDTH)
        if self.beta and (len(self.beta) != n or not all(math.isfinite(b) and b >= 0 for b in self.beta)):
            raise AtlasError(f"beta needs one non-negative KL weight per facet ({n}), got {list(self.beta)}")
        if self.facet_start_steps and len(self.facet_start_steps) != n:
            raise AtlasError(f"facet_start_steps needs one step per facet ({n}), got {list(self.facet_start_steps)}")
        if any(s < 0 for s in self.facet_start_steps):
            raise AtlasError(f"facet_start_steps must be >= 0, got {list(self.facet_start_steps)}")
        check_size("init_examples", self.init_examples, 10**7)

    @classmethod
    def fields_from_data(cls, train_data) -> dict:
        return {"dataset_size": len(train_data)}

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        facets = "; ".join(
            f"facet{j}: {d} dims, K = {k}" for j, (d, k) in enumerate(zip(self.facet_dims, self.clusters))
        )
        return (
            f"{self.arch.upper()} ladder with {len(self.facet_dims)} facets ({facets}), {self.covariance} "
            f"mixture priors, {self.likelihood} likelihood"
        )


def fade_in_weights(step: int | float, starts: tuple[int, ...], length: int, n_facets: int) -> torch.Tensor:
    """alpha_j at `step`, shape (J,) (seed000 A.4.3): 0 before facet j's start, then a
    linear rise to 1 over `length` steps. A facet that starts at step 0 (the deepest one,
    trained alone first) has alpha = 1 throughout; no starts means every facet at 1."""
    if not starts:
        return torch.ones(n_facets)
    starts_t = torch.tensor(starts, dtype=torch.float32)
    alpha = ((float(step) - starts_t) / length).clamp(0.0, 1.0)
    return torch.where(starts_t == 0, torch.ones_like(alpha), alpha)


def softplus_inverse(y: float, beta: float = SOFTPLUS_BETA) -> float:
    return math.log(math.expm1(beta * y)) / beta


# -- the ladder networks -------------------------------------------------------------------
class MLPLadder(nn.Module):
    """Table A.2 for J facets: backbone b_j = Linear+ReLU to hidden[j]; encoder rung
    r_j = Linear(hidden[j] -> 2 d_j); decoder rung r_j = Linear(d_j -> hidden[j])+ReLU;
    decoder backbone b_j maps [from above, alpha_j r_j(z_j)] down to hidden[j-1] (or to
    the data logits at j = 0), so below the top its input is twice as wide (A.64)."""

    def __init__(self, config: MFCVAEConfig):
        super().__init__()
        n_in, widths, dims = math.prod(config.input_shape), config.hidden, config.facet_dims
        self.input_shape = config.input_shape
        below = (n_in, *widths[:-1])
        self.enc_backbone = nn.ModuleList(nn.Sequential(nn.Linear(a, b), nn.ReLU()) for a, b in zip(below, widths))
        self.enc_rungs = nn.ModuleList(nn.Linear(w, 2 * d) for w, d in zip(widths, dims))
        self.dec_rungs = nn.ModuleList(nn.Sequential(nn.Linear(d, w), nn.ReLU()) for d, w in zip(dims, widths))
        top = len(widths) - 1
        self.dec_backbone = nn.ModuleList(
            nn.Sequential(nn.Linear(w if j == top else 2 * w, below[j]), *([nn.ReLU()] if j else []))
            for j, w in enumerate(widths)
        )
        if config.head:  # see MFCVAEConfig.head
            w = widths[0] if top == 0 else 2 * widths[0]
            self.dec_backbone[0] = nn.Sequential(nn.Linear(w, config.head), nn.ReLU(), nn.Linear(config.head, n_in))

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        h, out = x.flatten(1), []
        for backbone, rung in zip(self.enc_backbone, self.enc_rungs):
            h = backbone(h)  # seed000 eq. A.60
            out.append(rung(h))  # eq. A.61: (batch, 2 d_j)
        return out

    def decode(self, z: list[torch.Tensor], alpha: torch.Tensor) -> torch.Tensor:
        top = len(z) - 1
        h = self.dec_backbone[top](self.dec_rungs[top](z[top]))  # eq. A.62
        for j in range(top - 1, -1, -1):
            h = self.dec_backbone[j](torch.cat([h, alpha[j] * self.dec_rungs[j](z[j])], -1))  # eq. A.64
        return h.view(-1, *self.input_shape)


class ConvLadder(nn.Module):
    """Table A.3 scaled down, with ELU: backbone b_j = Conv 4x4/2 to channels[j]; encoder
    rung r_j = Conv 4x4/2 + flatten + Linear(-> 2 d_j); decoder rung r_j = Linear(d_j ->
    channels[j] x side_j^2)+ELU; decoder backbone b_j = ConvT 4x4/2 from [from above,
    alpha_j r_j(z_j)] to channels[j-1] (or to the image at j = 0)."""

    def __init__(self, config: MFCVAEConfig):
        super().__init__()
        c_img, h, _ = config.input_shape
        chans, dims = config.channels, config.facet_dims
        below = (c_img, *chans[:-1])
        self.sides = [h // 2 ** (j + 1) for j in range(len(chans))]  # backbone output side per rung
        self.chans = chans

        def conv(a, b):
            return nn.Conv2d(a, b, 4, stride=2, padding=1)

        self.enc_backbone = nn.ModuleList(nn.Sequential(conv(a, b), nn.ELU()) for a, b in zip(below, chans))
        self.enc_rungs = nn.ModuleList(
            nn.Sequential(conv(c, c), nn.ELU(), nn.Flatten(), nn.Linear(c * (s // 2) ** 2, 2 * d))
            for c, s, d in zip(chans, self.sides, dims)
        )
        self.dec_rungs = nn.ModuleList(
            nn.Sequential(nn.Linear(d, c * s * s), nn.ELU()) for d, c, s in zip(dims, chans, self.sides)
        )
        top = len(chans) - 1
        self.dec_backbone = nn.ModuleList(
            nn.Sequential(
                nn.ConvTranspose2d(c if j == top else 2 * c, below[j], 4, stride=2, padding=1),
                *([nn.ELU()] if j else []),
            )
            for j, c in enumerate(chans)
        )
        if config.head:  # see MFCVAEConfig.head
            c = chans[0] if top == 0 else 2 * chans[0]
            self.dec_backbone[0] = nn.Sequential(
                nn.ConvTranspose2d(c, config.head, 4, stride=2, padding=1),
                nn.ELU(),
                nn.Conv2d(config.head, c_img, 3, padding=1),
            )

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        h, out = x, []
        for backbone, rung in zip(self.enc_backbone, self.enc_rungs):
            h = backbone(h)  # seed000 eq. A.60
            out.append(rung(h))  # eq. A.61
        return out

    def decode(self, z: list[torch.Tensor], alpha: torch.Tensor) -> torch.Tensor:
        def rung(j):
            return self.dec_rungs[j](z[j]).view(-1, self.chans[j], self.sides[j], self.sides[j])

        top = len(z) - 1
        h = self.dec_backbone[top](rung(top))  # eq. A.62
        for j in range(top - 1, -1, -1):
            h = self.dec_backbone[j](torch.cat([h, alpha[j] * rung(j)], 1))  # eq. A.64
        return h


# -- the model -----------------------------------------------------------------------------
class MFCVAE(nn.Module):
    """Multi-facet clustering VAE with a ladder encoder/decoder and MoG priors per facet."""

    def __init__(self, config: MFCVAEConfig):
        super().__init__()
        self.config = config
        self.net = MLPLadder(config) if config.arch == "mlp" else ConvLadder(config)
        self.likelihood = make_likelihood(config.likelihood, config.input_shape, config.likelihood_sd)
        self.latent_groups = [LatentGroup(f"facet{j}", (d,), "facet") for j, d in enumerate(config.facet_dims)]
        self.names = [g.name for g in self.latent_groups]
        # MoG prior per facet (seed000 §1.5): pi as logits, uniform at the start; means set
        # by `initialize`; variances (diag) or Cholesky diagonals (full) through softplus.
        self.pi_logits = nn.ParameterList(
            nn.Parameter(torch.zeros(k), requires_grad=config.learn_pi) for k in config.clusters
        )
        self.means = nn.ParameterList(
            nn.Parameter(torch.randn(k, d)) for k, d in zip(config.clusters, config.facet_dims)
        )
        if config.covariance == "diag":
            raw = softplus_inverse(config.prior_var_init)
            self.scale_raw = nn.ParameterList(
                nn.Parameter(torch.full((k, d), raw)) for k, d in zip(config.clusters, config.facet_dims)
            )
        else:  # Cholesky factor: softplus diagonal (std), free strictly-lower part, zero at init
            raw = softplus_inverse(math.sqrt(config.prior_var_init))
            self.scale_raw = nn.ParameterList(
                nn.Parameter(torch.diag_embed(torch.full((k, d), raw)))
                for k, d in zip(config.clusters, config.facet_dims)
            )
        self.register_buffer("step", torch.zeros((), dtype=torch.float32))

    # -- prior pieces --------------------------------------------------------------------------
    @property
    def alpha(self) -> torch.Tensor:
        """Fade-in weights alpha_j at the current training step, (J,)."""
        cfg = self.config
        return fade_in_weights(self.step.item(), cfg.facet_start_steps, cfg.fade_in_steps, len(cfg.clusters)).to(
            self.step.device
        )

    def set_step(self, step: int) -> None:
        self.step.fill_(float(step))

    def log_pi(self, j: int) -> torch.Tensor:
        return F.log_softmax(self.pi_logits[j], -1)

    def prior_variances(self, j: int) -> torch.Tensor:
        """diag: the variances (K_j, d_j); full: the covariances (K_j, d_j, d_j)."""
        if self.config.covariance == "diag":
            return F.softplus(self.scale_raw[j], beta=SOFTPLUS_BETA)
        tril = self.scale_tril(j)
        return tril @ tril.transpose(-1, -2)

    def scale_tril(self, j: int) -> torch.Tensor:
        """Cholesky factor of Sigma_jc, (K_j, d_j, d_j)."""
        if self.config.covariance == "diag":
            return torch.diag_embed(self.prior_variances(j).sqrt())
        raw = self.scale_raw[j]
        diag = F.softplus(torch.diagonal(raw, dim1=-2, dim2=-1), beta=SOFTPLUS_BETA)
        return torch.tril(raw, -1) + torch.diag_embed(diag)

    def component_log_prob(self, j: int, z: torch.Tensor) -> torch.Tensor:
        """log N(z_j; mu_jc, Sigma_jc) for every cluster c: z (..., d_j) -> (..., K_j)."""
        if self.config.covariance == "diag":
            var = self.prior_variances(j)
            return gaussian_log_prob(z.unsqueeze(-2), self.means[j], var.log()).sum(-1)
        mvn = torch.distributions.MultivariateNormal(self.means[j], scale_tril=self.scale_tril(j))
        return mvn.log_prob(z.unsqueeze(-2))

    def responsibilities_log(self, j: int, z: torch.Tensor) -> torch.Tensor:
        """log p(c_j | z_j) = log pi_c N(z; mu_c, Sigma_c) - log sum_c' (...) (eq. A.47), (..., K_j)."""
        return F.log_softmax(self.component_log_prob(j, z) + self.log_pi(j), -1)

    def prior_log_prob(self, j: int, z: torch.Tensor) -> torch.Tensor:
        """Mixture marginal log p(z_j) = logsumexp_c log pi_c N(z_j; mu_c, Sigma_c) (eq. A.6), (...)."""
        return torch.logsumexp(self.component_log_prob(j, z) + self.log_pi(j), -1)

    def gaussian_kl(self, j: int, q: DiagonalGaussian) -> torch.Tensor:
        """KL(q(z_j|x) || p(z_j|c)) for every c in closed form: (batch, K_j)."""
        m0, v0 = q.mean.unsqueeze(-2), q.logvar.exp().unsqueeze(-2)  # (batch, 1, d)
        if self.config.covariance == "diag":
            v1 = self.prior_variances(j)  # (K, d)
            kl = v0 / v1 + (self.means[j] - m0).pow(2) / v1 - 1.0 + v1.log() - q.logvar.unsqueeze(-2)
            return 0.5 * kl.sum(-1)
        tril = self.scale_tril(j)  # (K, d, d)
        d = m0.shape[-1]
        diff = (self.means[j] - m0).unsqueeze(-1)  # (batch, K, d, 1)
        maha = torch.linalg.solve_triangular(tril, diff, upper=False).pow(2).sum((-2, -1))
        trace = torch.linalg.solve_triangular(tril, torch.diag_embed(v0.sqrt()), upper=False).pow(2).sum((-2, -1))
        logdet1 = 2.0 * torch.diagonal(tril, dim1=-2, dim2=-1).log().sum(-1)
        return 0.5 * (trace + maha - d + logdet1 - q.logvar.sum(-1, keepdim=True))

    # -- the LatentModel interface ------------------------------------------------------------
    def encode(self, x: torch.Tensor) -> dict[str, DiagonalGaussian]:
        check_input_shape(x, self.config.input_shape)
        return {
            name: DiagonalGaussian.from_output(params, logvar_range=(-12.0, 8.0))
            for name, params in zip(self.names, self.net.encode(x))
        }

    def decode(self, z: Latents | torch.Tensor) -> torch.Tensor:
        return self.likelihood.mean(self._decoder_params(z))

    def sample(
        self, n: int, temperature: float = 1.0, generator: torch.Generator | None = None, **condition
    ) -> torch.Tensor:
        """n draws c_j ~ pi_j, z_j ~ N(mu_jc, temperature * Sigma_jc) decoded to the mode of
        p(x|z) (seed000 Fig. 2.6). `cluster_facet{j}=c` fixes facet j's cluster."""
        fixed = self._check_condition(condition)
        device = model_device(self)
        generator = stream(generator)
        z = {}
        for j, name in enumerate(self.names):
            if j in fixed:
                c = torch.full((n,), fixed[j], dtype=torch.long, device=device)
            else:
                c = torch.multinomial(self.log_pi(j).exp().expand(n, -1), 1, generator=generator).squeeze(-1)
            eps = torch.randn(n, self.config.facet_dims[j], 1, generator=generator, device=device)
            z[name] = self.means[j][c] + math.sqrt(temperature) * (self.scale_tril(j)[c] @ eps).squeeze(-1)
        return self.decode(z)

    @property
    def sample_conditions(self) -> dict[str, list[int]]:
        return {f"cluster_{name}": list(range(k)) for name, k in zip(self.names, self.config.clusters)}

    def elbo(self, x: torch.Tensor, k: int = 1, chunk: int | None = None) -> ELBOResult:
        """Per-example bound. k = 1: eq. 2.14 with q(c_j|x) from one draw (eq. A.47), the
        Gaussian KLs in closed form; kl holds KL_z + KL_c per facet. k > 1 (our addition):
        the importance-weighted bound with proposal q(z|x) and the mixture marginal prior."""
        check_importance_samples(k)
        q = self.encode(x)
        if k == 1:
            z = {name: q[name].rsample() for name in self.names}
            recon = self.likelihood.log_prob(x, self._decoder_params(z))
            kl = {}
            for j, name in enumerate(self.names):
                log_gamma = self.responsibilities_log(j, z[name])  # (batch, K_j)
                gamma = log_gamma.exp()
                kl_z = (gamma * self.gaussian_kl(j, q[name])).sum(-1)
                kl_c = (gamma * (log_gamma - self.log_pi(j))).sum(-1)
                kl[name] = kl_z + kl_c
            return ELBOResult(total=recon - sum(kl.values()), recon=recon, kl=kl)
        log_w, recon, kl = self.log_weights(x, k, chunk, q=q)
        kl = {name: v.mean(0) for name, v in kl.items()}
        return ELBOResult(total=logmeanexp(log_w, dim=0), recon=recon.mean(0), kl=kl, k=k)

    def log_weights(
        self, x: torch.Tensor, k: int, chunk: int | None = None, q: dict[str, DiagonalGaussian] | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """log w_i = log p(x|z_i) + sum_j [log p(z_ij) - log q(z_ij|x)] for k draws z_i ~ q(z|x),
        with log p(x|z_i) and the per-facet log q - log p; (k, batch) each (kl: per facet)."""
        q = q if q is not None else self.encode(x)
        chunk = chunk or max(1, 2**24 // max(1, x.shape[0] * math.prod(self.config.input_shape)))
        recon, kl = [], {name: [] for name in self.names}
        for start in range(0, k, chunk):
            z = {name: q[name].rsample(min(chunk, k - start)) for name in self.names}  # (c, batch, d_j)
            recon.append(self.likelihood.log_prob(x, self._decoder_params(z)))
            for j, name in enumerate(self.names):
                kl[name].append(q[name].log_prob(z[name]) - self.prior_log_prob(j, z[name]))
        recon = torch.cat(recon)
        kl = {name: torch.cat(v) for name, v in kl.items()}
        return recon - sum(kl.values()), recon, kl

    def log_joint(self, x: torch.Tensor, z: Latents | torch.Tensor) -> torch.Tensor:
        """log p(x, z) = log p(x|z) + sum_j log p(z_j), p(z_j) the facet's mixture marginal."""
        z = checked_latents(self, z)
        prior = sum(self.prior_log_prob(j, z[name]) for j, name in enumerate(self.names))
        return self.likelihood.log_prob(x, self._decoder_params(z)) + prior

    # -- clustering ------------------------------------------------------------------------------
    def cluster_probabilities(self, x: torch.Tensor, use_mean: bool = False) -> list[torch.Tensor]:
        """q(c_j|x) per facet, each (batch, K_j): p(c_j|z_j) at one draw z_j ~ q(z_j|x)
        (eq. A.47, L = 1), or at the posterior mean with use_mean=True."""
        q = self.encode(x)
        zs = [q[name].mean if use_mean else q[name].rsample() for name in self.names]
        return [self.responsibilities_log(j, z).exp() for j, z in enumerate(zs)]

    def predict_clusters(self, x: torch.Tensor, use_mean: bool = False) -> list[torch.Tensor]:
        """Hard assignment argmax_c q(c_j|x) per facet, each (batch,) int64."""
        return [p.argmax(-1) for p in self.cluster_probabilities(x, use_mean)]

    @torch.no_grad()
    def evaluation_metrics(self, test_data, n: int) -> dict[str, float]:
        """Unsupervised clustering accuracy of every facet against every categorical label
        (seed000 §1.8): {"acc/facet{j}/{label}": accuracy} over the first n test examples."""
        n = min(n, len(test_data))
        preds = [[] for _ in self.names]
        for start in range(0, n, 500):
            x = test_data.batch(torch.arange(start, min(start + 500, n))).to(model_device(self))
            for j, p in enumerate(self.predict_clusters(x)):
                preds[j].append(p.cpu())
        out = {}
        for j, name in enumerate(self.names):
            pred = torch.cat(preds[j]).numpy()
            for label, column in test_data.labels.items():
                if column.is_categorical:
                    acc = cluster_accuracy(pred, column.values[:n], self.config.clusters[j], len(column.categories))
                    out[f"acc/{name}/{label}"] = acc.accuracy
        return out

    # -- training --------------------------------------------------------------------------------
    @torch.no_grad()
    def initialize(self, train_data) -> None:
        """Prior means from a diagonal GaussianMixture fitted per facet to the untrained
        encoder's posterior means; variances stay at prior_var_init (seed000 §1.5)."""
        from sklearn.mixture import GaussianMixture

        n = min(len(train_data), self.config.init_examples)
        index = torch.randperm(len(train_data))[:n]
        means = {name: [] for name in self.names}
        for start in range(0, n, 500):
            x = train_data.batch(index[start : start + 500]).to(model_device(self))
            for name, q in self.encode(x).items():
                means[name].append(q.mean.cpu())
        for j, name in enumerate(self.names):
            k = self.config.clusters[j]
            if n < k:
                raise AtlasError(f"initialising {k} clusters needs at least {k} training examples, got {n}")
            z = torch.cat(means[name]).double().numpy()
            gmm = GaussianMixture(k, covariance_type="diag", random_state=0, max_iter=200).fit(z)
            self.means[j].copy_(torch.as_tensor(gmm.means_, dtype=self.means[j].dtype))

    def training_loss(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Minus the 5-term Monte Carlo ELBO of seed000 eq. A.48 (L = 1), gamma_jc = p(c|z_j):

            log p(x|z) + sum_j sum_c gamma_jc [log N(z_j|mu_jc, Sigma_jc) + log pi_jc]
                       - sum_j log q(z_j|x) - sum_j sum_c gamma_jc log gamma_jc

        grouped per facet into KL_z,j = log q(z_j|x) - sum_c gamma log N and
        KL_c,j = sum_c gamma (log gamma - log pi), each weighted by alpha_j (eq. A.75).
        log gamma comes exactly from log_softmax (the authors' code clamps gamma at 1e-6)."""
        q = self.encode(x)
        z = {name: q[name].rsample() for name in self.names}
        recon = self.likelihood.log_prob(x, self._decoder_params(z))  # term 1
        alpha = self.alpha
        metrics: dict[str, torch.Tensor] = {"recon": recon.mean()}
        kl_sum = torch.zeros_like(recon)
        weighted = torch.zeros_like(recon)
        for j, name in enumerate(self.names):
            log_n = self.component_log_prob(j, z[name])  # (batch, K_j)
            log_pi = self.log_pi(j)
            log_gamma = F.log_softmax(log_n + log_pi, -1)  # eq. A.47
            gamma = log_gamma.exp()
            kl_z = q[name].log_prob(z[name]) - (gamma * log_n).sum(-1)  # terms 4 and 2
            kl_c = (gamma * (log_gamma - log_pi)).sum(-1)  # terms 5 and 3
            kl_sum = kl_sum + kl_z + kl_c
            beta = self.config.beta[j] if self.config.beta else 1.0
            weighted = weighted + beta * alpha[j] * (kl_z + kl_c)
            metrics[f"kl/{name}"] = (kl_z + kl_c).mean()
            metrics[f"kl_z/{name}"] = kl_z.mean()
            metrics[f"kl_c/{name}"] = kl_c.mean()
            metrics[f"alpha/{name}"] = alpha[j]
        metrics["elbo"] = (recon - kl_sum).mean()
        loss = -(recon - weighted).mean()
        return loss, {name: v.detach() for name, v in metrics.items()}

    # -- helpers ---------------------------------------------------------------------------------
    def _decoder_params(self, z: Latents | torch.Tensor) -> torch.Tensor:
        z = checked_latents(self, z)
        zs = [z[name] for name in self.names]
        lead = leading_shape(z, self.latent_groups)
        flat = [t.expand(*lead, t.shape[-1]).reshape(-1, t.shape[-1]) for t in zs]
        out = self.net.decode(flat, self.alpha)
        return out.reshape(*lead, *self.config.input_shape)

    def _check_condition(self, condition: dict) -> dict[int, int]:
        fixed = {}
        allowed = self.sample_conditions
        for key, value in condition.items():
            if key not in allowed:
                raise AtlasError(f"unknown sampling condition {key!r}; this model accepts {', '.join(allowed)}")
            if value is None:
                continue
            if int(value) not in allowed[key]:
                raise AtlasError(f"{key} must be a cluster index in 0..{len(allowed[key]) - 1}, got {value!r}")
            fixed[self.names.index(key[len("cluster_") :])] = int(value)
        return fixed
