"""TD-VAE and TD-IWAE: a two-layer top-down VAE with a sparse, overcomplete z1 and a linear
decoder (seed003 §3.2, §4, §5.1; spec seed003_004 §2.4–2.6).

    p(x, z1, z2) = N(x; W z1 + c, 0.4^2 I) · Laplace(z1; mu(z2), b(z2)) · N(z2; 0, I)
    q(z1, z2 | x) = Laplace(z1; mu(x, z2), b(x, z2)) · N(z2; m(x), s(x)^2)

Networks, all dense with softplus and no residual connections, a separate MLP for every
location and every scale (the thesis gives no widths; here `hidden` sets the feature MLPs
a: x -> l_x and c: z2 -> l_z, and `head_hidden` the hidden layers of every location/scale
head; the thesis-sized preset uses 1,000 and 500 units):

    recognition  a: x -> l_x;  b: l_x -> (m, s) of q(z2|x);  c: z2 -> l_z;
                 d: [l_x, l_z] -> (mu, b) of q(z1|x, z2)
    generation   z2 -> (mu, b) of p(z1|z2); the single linear layer z1 -> x.

Scales are softplus outputs plus 1e-3, so a unit's scale can fall towards zero without the
clamp of a log-scale.

Objectives:
- family "tdvae": the top-down ELBO with analytic KLs (eqs. 3.2–3.6): the Gaussian KL of z2
  and the Laplace–Laplace KL of z1 at one draw of z2, with beta on the z2 term only;
- family "tdiwae": the importance-weighted bound of eq. 4.2 over k joint draws, with beta
  inside each log-weight on log p(z2) - log q(z2|x) (thesis §4); k = 1 is the TD-VAE
  objective in expectation (its KLs estimated from the draw instead of computed).
beta rises linearly from `beta_start` to 1 over `beta_steps` training steps (thesis: 0.1 -> 1
over half of training) and is 1 in every evaluation.

Generic pages read q(z1 | x) at the mean of q(z2 | x) (`encode`). HMC runs in the prior's
noise (`NoiseSpace`): z2 = eps2 and z1 = mu(z2) + b(z2) F^-1(Phi(eps1)), standard normal noise
mapped to Laplace noise through the two CDFs. Posterior samples of the
pair (the z2 scatter, the z1 correlations) come from `posterior_samples`: ancestral draws for
TD-VAE, sampling-importance-resampling over k proposals (Algorithm 2) for TD-IWAE.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from engine.errors import AtlasError
from engine.models.base import ELBOResult, LatentGroup, Latents, check_importance_samples, check_input_shape
from engine.models.blocks import MAX_LATENT_DIM, check_network, check_size, mlp
from engine.models.latents import checked_latents
from engine.models.likelihoods import Gaussian
from engine.models.posteriors import DiagonalGaussian, Laplace
from engine.numerics import logmeanexp, standard_normal_log_prob
from engine.randomness import stream

MIN_SCALE = 1e-3
MAX_TRAINING_K = 1024


@dataclass
class TDVAEConfig:
    input_shape: tuple[int, ...] = (1, 20, 20)
    z1_dim: int = 450
    z2_dim: int = 20
    hidden: tuple[int, ...] = (1000,)  # MLPs a (x -> l_x) and c (z2 -> l_z); the last width is l's
    head_hidden: tuple[int, ...] = (500,)  # hidden layers of each location and scale head
    likelihood_sd: float = 0.4  # sigma of p(x | z1) (thesis §5.1)
    beta_start: float = 0.1  # beta on the z2 term at step 0 ...
    beta_steps: int = 0  # ... rising linearly to 1 over this many steps (0: beta = 1 throughout)
    k: int = 1  # importance samples of the training objective (tdiwae)
    family: str = field(default="tdvae", init=False)

    def __post_init__(self):
        self.input_shape = tuple(int(s) for s in self.input_shape)
        self.hidden = tuple(int(h) for h in self.hidden)
        self.head_hidden = tuple(int(h) for h in self.head_hidden)
        check_size("z1_dim", self.z1_dim, MAX_LATENT_DIM)
        check_size("z2_dim", self.z2_dim, MAX_LATENT_DIM)
        if not self.hidden:
            raise AtlasError("hidden must list at least one width: the last is the size of the features l_x and l_z")
        check_network(self.family.upper(), self.input_shape, "mlp", (*self.hidden, *self.head_hidden))
        if not (math.isfinite(self.likelihood_sd) and 1e-3 <= self.likelihood_sd <= 10):
            raise AtlasError(f"likelihood_sd must be a number between 0.001 and 10, got {self.likelihood_sd}")
        if not (math.isfinite(self.beta_start) and 0 <= self.beta_start <= 1):
            raise AtlasError(f"beta_start must be a number in [0, 1], got {self.beta_start}")
        if not isinstance(self.beta_steps, int) or isinstance(self.beta_steps, bool) or self.beta_steps < 0:
            raise AtlasError(f"beta_steps must be a whole number of training steps >= 0, got {self.beta_steps!r}")
        check_size("k", self.k, MAX_TRAINING_K)
        if self.family == "tdvae" and self.k != 1:
            raise AtlasError(
                f"the tdvae family trains the ELBO with analytic KLs (k = 1); for k = {self.k} use the family 'tdiwae'"
            )

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        beta = (
            f"beta on the z2 term {self.beta_start:g} -> 1 over {self.beta_steps:,} steps"
            if self.beta_steps
            else "beta 1"
        )
        objective = "the ELBO with analytic KLs" if self.family == "tdvae" else f"the TD-IWAE bound with k = {self.k}"
        return (
            f"top-down VAE, z1 {self.z1_dim} Laplace, z2 {self.z2_dim} Gaussian, linear decoder with "
            f"sigma {self.likelihood_sd:g}, softplus MLPs {list(self.hidden)} / heads {list(self.head_hidden)}; "
            f"trained on {objective}, {beta}"
        )


@dataclass
class TDIWAEConfig(TDVAEConfig):
    """The family "tdiwae": the TD-VAE network trained on the importance-weighted bound."""

    k: int = 4
    family: str = field(default="tdiwae", init=False)


def softplus_mlp(sizes: list[int], final_softplus: bool = False) -> nn.Sequential:
    """Dense layers with softplus between them, and after the last when `final_softplus`."""
    net = mlp(sizes, activation=nn.Softplus)
    return nn.Sequential(*net, nn.Softplus()) if final_softplus else net


class Head(nn.Module):
    """Separate MLPs for a location and a (softplus) scale from the same input."""

    def __init__(self, n_in: int, hidden: tuple[int, ...], n_out: int):
        super().__init__()
        self.loc = softplus_mlp([n_in, *hidden, n_out])
        self.scale = softplus_mlp([n_in, *hidden, n_out])

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.loc(h), F.softplus(self.scale(h)) + MIN_SCALE


def normal_to_laplace(e: torch.Tensor) -> torch.Tensor:
    """F_Laplace^-1(Phi(e)) for the standard Laplace: -sign(e) log(2 Phi(-|e|)), stable in the tails."""
    return -e.sign() * (math.log(2.0) + torch.special.log_ndtr(-e.abs()))


def laplace_to_normal(u: torch.Tensor) -> torch.Tensor:
    """The inverse map, Phi^-1(F_Laplace(u)) = sign(u) (-Phi^-1(exp(-|u|) / 2))."""
    return -u.sign() * torch.special.ndtri(0.5 * torch.exp(-u.abs()))


def standard_normal_density_log(e: torch.Tensor) -> torch.Tensor:
    return -0.5 * (e.pow(2) + math.log(2 * math.pi))


def gaussian(loc: torch.Tensor, scale: torch.Tensor) -> DiagonalGaussian:
    return DiagonalGaussian(loc, 2 * scale.log())


class TDVAE(nn.Module):
    """The TD-VAE / TD-IWAE network; `config.family` says which objective it trains."""

    def __init__(self, config: TDVAEConfig):
        super().__init__()
        self.config = config
        d_x, d1, d2 = math.prod(config.input_shape), config.z1_dim, config.z2_dim
        width = config.hidden[-1]
        self.features_x = softplus_mlp([d_x, *config.hidden], final_softplus=True)  # a
        self.q_z2 = Head(width, config.head_hidden, d2)  # b
        self.features_z2 = softplus_mlp([d2, *config.hidden], final_softplus=True)  # c
        self.q_z1 = Head(2 * width, config.head_hidden, d1)  # d
        self.p_z1 = Head(d2, config.head_hidden, d1)  # the contextual prior p(z1 | z2)
        self.decoder = nn.Linear(d1, d_x)
        self.likelihood = Gaussian(config.input_shape, sd=config.likelihood_sd)
        self.latent_groups = [LatentGroup("z1", (d1,), "layer"), LatentGroup("z2", (d2,), "layer")]
        self.beta = 1.0 if not config.beta_steps else config.beta_start

    # -- the schedule ----------------------------------------------------------------------
    def set_step(self, step: int) -> None:
        """beta of the z2 term at training step `step`: beta_start -> 1 over beta_steps, then 1."""
        cfg = self.config
        fraction = min(1.0, step / cfg.beta_steps) if cfg.beta_steps else 1.0
        self.beta = cfg.beta_start + (1.0 - cfg.beta_start) * fraction

    # -- the conditionals ------------------------------------------------------------------
    def posterior_z2(self, x: torch.Tensor) -> tuple[DiagonalGaussian, torch.Tensor]:
        """q(z2 | x) and the features l_x that q(z1 | x, z2) reads as well."""
        check_input_shape(x, self.config.input_shape)
        l_x = self.features_x(x.flatten(1))
        return gaussian(*self.q_z2(l_x)), l_x

    def posterior_z1(self, l_x: torch.Tensor, z2: torch.Tensor) -> Laplace:
        """q(z1 | x, z2) from the features of x; z2 (..., batch, z2_dim) broadcasts."""
        l_z = self.features_z2(z2)
        return Laplace(*self.q_z1(torch.cat([l_x.expand(*l_z.shape[:-1], -1), l_z], -1)))

    def prior_z1(self, z2: torch.Tensor) -> Laplace:
        """The contextual prior p(z1 | z2)."""
        return Laplace(*self.p_z1(z2))

    # -- the LatentModel interface -----------------------------------------------------------
    def encode(self, x: torch.Tensor) -> dict[str, DiagonalGaussian | Laplace]:
        """q(z2 | x), and q(z1 | x, z2) at z2 = the mean of q(z2 | x)."""
        q2, l_x = self.posterior_z2(x)
        return {"z1": self.posterior_z1(l_x, q2.mean), "z2": q2}

    def decode(self, z: Latents) -> torch.Tensor:
        """W z1 + c (x depends on z1 only); (..., batch, *input_shape)."""
        z1 = checked_latents(self, z)["z1"]
        return self._mean(z1)

    def sample(self, n: int, temperature: float = 1.0, generator: torch.Generator | None = None) -> torch.Tensor:
        """Ancestral draws z2 ~ N(0, T^2 I), z1 ~ Laplace(mu(z2), T b(z2)), decoded to their mean."""
        g = stream(generator)
        weight = self.decoder.weight
        z2 = temperature * torch.randn(n, self.config.z2_dim, generator=g, device=weight.device, dtype=weight.dtype)
        loc, scale = self.p_z1(z2)
        return self._mean(Laplace(loc, temperature * scale).rsample(generator=g))

    def log_joint(self, x: torch.Tensor, z: Latents) -> torch.Tensor:
        """log p(x | z1) + log p(z1 | z2) + log p(z2), (..., batch)."""
        z = checked_latents(self, z)
        recon = self.likelihood.log_prob(x, self._mean(z["z1"]))
        return recon + self.prior_z1(z["z2"]).log_prob(z["z1"]) + standard_normal_log_prob(z["z2"])

    def elbo(self, x: torch.Tensor, k: int = 1, chunk: int | None = None) -> ELBOResult:
        """The TD-VAE ELBO with analytic KLs (k = 1) or the TD-IWAE bound (k > 1), beta = 1."""
        check_importance_samples(k)
        if k == 1:
            recon, kl1, kl2 = self._elbo_terms(x)
            return ELBOResult(total=recon - kl1 - kl2, recon=recon, kl={"z1": kl1, "z2": kl2})
        log_w, recon, kl = self.log_weights(x, k, chunk)
        return ELBOResult(
            total=logmeanexp(log_w, 0), recon=recon.mean(0), kl={name: t.mean(0) for name, t in kl.items()}, k=k
        )

    def log_weights(
        self, x: torch.Tensor, k: int, chunk: int | None = None, beta: float = 1.0
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """log w_i (eq. 4.1, beta inside on the z2 part as in §4) for k joint draws, with its
        parts log p(x | z1), log q(z1|x,z2) - log p(z1|z2) and log q(z2|x) - log p(z2); (k, batch)."""
        draws = self._draws(x, k, chunk)
        log_w = draws["recon"] - draws["z1"] - beta * draws["z2"]
        return log_w, draws["recon"], {"z1": draws["z1"], "z2": draws["z2"]}

    # -- the prior's noise (engine.models.base.NoiseSpace, for HMC) --------------------------------
    def encode_noise(self, x: torch.Tensor) -> dict[str, DiagonalGaussian]:
        """`encode` mapped to the noise: eps2 = z2, and eps1 = laplace_to_normal((z1 - mu(z2)) / b(z2))
        at z2's posterior mean, its sd by the delta method; a start for HMC, not a posterior of its own."""
        q = self.encode(x)
        q1, q2 = q["z1"], q["z2"]
        loc, scale = self.p_z1(q2.mean)
        u = (q1.mean - loc) / scale
        eps = laplace_to_normal(u)
        slope = 0.5 * torch.exp(-u.abs() - standard_normal_density_log(eps))  # d eps / d u
        sd = (q1.base_dist.scale / scale * slope).clamp(1e-4, 1e2)
        return {"z1": DiagonalGaussian(eps, 2 * sd.log()), "z2": q2}

    def latents_from_noise(self, eps: Latents) -> Latents:
        """z2 = eps2 and z1 = mu(z2) + b(z2) normal_to_laplace(eps1): standard normal noise mapped to
        Laplace(mu, b) through the two CDFs; values (..., batch, dim)."""
        eps = checked_latents(self, eps)
        loc, scale = self.p_z1(eps["z2"])
        return {"z1": loc + scale * normal_to_laplace(eps["z1"]), "z2": eps["z2"]}

    def log_joint_noise(self, x: torch.Tensor, eps: Latents) -> torch.Tensor:
        """log p(x | z1(eps)) + log N(eps; 0, I): log_joint(x, z(eps)) plus log |det dz / d eps|."""
        z1 = self.latents_from_noise(eps)["z1"]
        eps = checked_latents(self, eps)
        return (
            self.likelihood.log_prob(x, self._mean(z1))
            + standard_normal_log_prob(eps["z1"])
            + standard_normal_log_prob(eps["z2"])
        )

    # -- training ---------------------------------------------------------------------------
    def training_loss(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        cfg = self.config
        if cfg.family == "tdvae":
            recon, kl1, kl2 = self._elbo_terms(x)
            objective = recon - kl1 - self.beta * kl2
        else:
            draws = self._draws(x, cfg.k)
            log_w = draws["recon"] - draws["z1"] - self.beta * draws["z2"]
            objective = logmeanexp(log_w, 0)
            recon, kl1, kl2 = draws["recon"].mean(0), draws["z1"].mean(0), draws["z2"].mean(0)
        metrics = {
            "elbo": (recon - kl1 - kl2).mean(),
            "recon": recon.mean(),
            "kl/z1": kl1.mean(),
            "kl/z2": kl2.mean(),
            "beta": torch.tensor(self.beta),
        }
        return -objective.mean(), {name: v.detach() for name, v in metrics.items()}

    # -- posterior samples --------------------------------------------------------------------
    @torch.no_grad()
    def posterior_samples(self, x: torch.Tensor, n: int, proposals: int = 100) -> Latents:
        """n draws of (z1, z2) from the model's posterior for each x: (n, batch, dim) per group.

        TD-VAE: ancestral draws from q(z2 | x) q(z1 | x, z2). TD-IWAE: sampling-importance-
        resampling (Algorithm 2): for each draw, `proposals` joint proposals weighted by
        eq. 4.1 (beta = 1) and one picked with probability proportional to its weight."""
        q2, l_x = self.posterior_z2(x)
        if self.config.family == "tdvae":
            z2 = q2.rsample(n)
            return {"z1": self.posterior_z1(l_x, z2).rsample(), "z2": z2}
        batch = x.shape[0]
        out = {"z1": [], "z2": []}
        per_round = max(1, 2**22 // max(1, batch * proposals * (self.config.z1_dim + self.config.z2_dim)))
        for start in range(0, n, per_round):
            m = min(per_round, n - start)
            z2 = q2.rsample(m * proposals).reshape(m, proposals, batch, -1)
            q1 = self.posterior_z1(l_x, z2)
            z1 = q1.rsample()
            log_w = (
                self.likelihood.log_prob(x, self._mean(z1))
                + self.prior_z1(z2).log_prob(z1)
                - q1.log_prob(z1)
                + standard_normal_log_prob(z2)
                - q2.log_prob(z2)
            )  # (m, proposals, batch)
            pick = torch.multinomial(
                torch.softmax(log_w, 1).permute(0, 2, 1).reshape(m * batch, proposals), 1, generator=stream()
            ).reshape(m, 1, batch, 1)
            out["z1"].append(z1.gather(1, pick.expand(-1, -1, -1, z1.shape[-1])).squeeze(1))
            out["z2"].append(z2.gather(1, pick.expand(-1, -1, -1, z2.shape[-1])).squeeze(1))
        return {name: torch.cat(parts) for name, parts in out.items()}

    # -- helpers ----------------------------------------------------------------------------
    def _mean(self, z1: torch.Tensor) -> torch.Tensor:
        return self.decoder(z1).reshape(*z1.shape[:-1], *self.config.input_shape)

    def _elbo_terms(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """log p(x | z1), KL(q(z1|x,z2) || p(z1|z2)) at one z2 ~ q(z2|x), KL(q(z2|x) || N(0, I))."""
        q2, l_x = self.posterior_z2(x)
        z2 = q2.rsample()
        q1 = self.posterior_z1(l_x, z2)
        z1 = q1.rsample()
        recon = self.likelihood.log_prob(x, self._mean(z1))
        return recon, q1.kl_to(self.prior_z1(z2)), q2.kl_to_standard_normal()

    def _draws(self, x: torch.Tensor, k: int, chunk: int | None = None) -> dict[str, torch.Tensor]:
        """For k joint draws: log p(x|z1), log q(z1|x,z2) - log p(z1|z2), log q(z2|x) - log p(z2); (k, batch)."""
        q2, l_x = self.posterior_z2(x)
        cfg = self.config
        chunk = chunk or max(1, 2**24 // max(1, x.shape[0] * (math.prod(cfg.input_shape) + 2 * cfg.z1_dim)))
        parts: dict[str, list[torch.Tensor]] = {"recon": [], "z1": [], "z2": []}
        for start in range(0, k, chunk):
            z2 = q2.rsample(min(chunk, k - start))
            q1 = self.posterior_z1(l_x, z2)
            z1 = q1.rsample()
            parts["recon"].append(self.likelihood.log_prob(x, self._mean(z1)))
            parts["z1"].append(q1.log_prob(z1) - self.prior_z1(z2).log_prob(z1))
            parts["z2"].append(q2.log_prob(z2) - standard_normal_log_prob(z2))
        return {name: torch.cat(p) for name, p in parts.items()}
