"""Gaussian diffusion (DDPM): the forward process, its bound, the training losses and
ancestral sampling, for any denoiser.

seed004 App. C (eqs. 11-15), after Ho et al. (2020). Time runs t = 1..T; the schedule's
arrays are indexed t - 1. A denoiser is any callable `net(x_t, t)`, t an integer tensor
(batch,) in 1..T, that returns, per parametrisation,

- "eps": the noise ε̂ that made x_t from x_0 (the ε-loss of Ho et al., for image generation);
- "x":   the clean x̂_0 itself (the DCT-VAE's context prior predicts the mean of y_0);

and, when the variance is learned, as many channels again (dim 1) holding Nichol &
Dhariwal's interpolation v between log β_t and log β̃_t. Both parametrisations give the
reverse mean μ̃_t(x̂_0, x_t) of eq. 12. The data live in [-1, 1] where a discretised
likelihood is used (eqs. 14-15).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from engine.errors import AtlasError
from engine.numerics import discretised_gaussian_log_prob, gaussian_kl_elementwise, gaussian_log_prob

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Parametrization = Literal["eps", "x"]
Variance = Literal["fixed_small", "fixed_large", "learned"]
SCHEDULES = ("linear", "cosine")
PARAMETRIZATIONS = ("eps", "x")
VARIANCES = ("fixed_small", "fixed_large", "learned")
MAX_STEPS = 10_000


def linear_betas(steps: int, start: float | None = None, end: float | None = None) -> torch.Tensor:
    """β_t rising linearly from `start` to `end` (float64, shape (steps,)).

    Defaults: Ho et al.'s 1e-4 to 0.02 for 1,000 steps, scaled by 1000 / T so that any T
    noises as far (Nichol & Dhariwal); below 21 steps, where that would exceed one, β runs
    from 1/T to 2/T as in the DCT-VAE's context prior (T = 7: 0.1429 to 0.2857)."""
    check_steps(steps)
    if start is None or end is None:
        start, end = (1 / steps, 2 / steps) if steps < 21 else (0.1 / steps, 20 / steps)
    if not 0 < start <= end < 1:
        raise AtlasError(f"a linear β schedule needs 0 < start <= end < 1, got start {start} and end {end}")
    return torch.linspace(start, end, steps, dtype=torch.float64, device="cpu")


def cosine_betas(steps: int, offset: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    """β_t of Nichol & Dhariwal's cosine schedule: ᾱ(t) = cos²((t/T + s)/(1 + s) · π/2) / ᾱ(0),
    each β clipped at `max_beta` (float64, shape (steps,))."""
    check_steps(steps)
    t = torch.arange(steps + 1, dtype=torch.float64, device="cpu") / steps
    f = torch.cos((t + offset) / (1 + offset) * math.pi / 2) ** 2
    return torch.clamp(1 - f[1:] / f[:-1], max=max_beta)


def beta_schedule(kind: str, steps: int) -> torch.Tensor:
    if kind == "linear":
        return linear_betas(steps)
    if kind == "cosine":
        return cosine_betas(steps)
    raise AtlasError(f"unknown β schedule {kind!r}; use one of {', '.join(SCHEDULES)}")


def check_steps(steps: int) -> None:
    if not isinstance(steps, int) or not 1 <= steps <= MAX_STEPS:
        raise AtlasError(f"a diffusion needs between 1 and {MAX_STEPS:,} steps, got {steps!r}")


@dataclass
class DiffusionBound:
    """Per-example terms of the DDPM bound (seed004 eq. 13), in nats, each of shape (batch,):
    total = recon - prior - sum of steps, a lower bound on log p(x_0).

    `recon` is ln p(x_0 | x_1) (-L_0), `prior` is KL(q(x_T | x_0) || N(0, I)) (L_T) and
    `steps` holds KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t)) for t = 2..T in a column
    each (batch, T - 1) when every step was computed, or one column, T - 1 times the KL of
    a random step t in 2..T, when the steps were sampled (an unbiased estimate of their sum)."""

    total: torch.Tensor
    recon: torch.Tensor
    prior: torch.Tensor
    steps: torch.Tensor


class GaussianDiffusion(nn.Module):
    """The fixed forward process q and the reverse process p a denoiser defines. Holds only
    buffers (the schedule), so it moves with the model that owns it. The schedule is computed
    on the CPU in float64 (also while a model is built on the "meta" device to count its size)."""

    def __init__(
        self,
        betas: torch.Tensor,
        parametrization: Parametrization = "eps",
        variance: Variance = "fixed_small",
    ):
        super().__init__()
        if parametrization not in PARAMETRIZATIONS:
            raise AtlasError(f"unknown parametrisation {parametrization!r}; use one of {', '.join(PARAMETRIZATIONS)}")
        if variance not in VARIANCES:
            raise AtlasError(f"unknown reverse variance {variance!r}; use one of {', '.join(VARIANCES)}")
        betas = betas.to(torch.float64)
        if betas.ndim != 1 or not ((betas > 0) & (betas < 1)).all():
            raise AtlasError("β_t must be a vector of values strictly between 0 and 1")
        self.parametrization = parametrization
        self.variance = variance
        self.steps = len(betas)
        alphas = 1 - betas
        alpha_bar = torch.cumprod(alphas, 0)
        alpha_bar_prev = torch.cat([torch.ones(1, dtype=torch.float64, device=betas.device), alpha_bar[:-1]])
        posterior_var = betas * (1 - alpha_bar_prev) / (1 - alpha_bar)  # β̃_t, eq. 12; zero at t = 1
        # β̃_1 = 0 has no logarithm: step 1's reverse variance takes β̃_2 (Ho et al.), or β_1 for T = 1
        floor = posterior_var[1] if self.steps > 1 else betas[0]
        schedule = {
            "betas": betas,
            "alpha_bar": alpha_bar,
            "alpha_bar_prev": alpha_bar_prev,
            "posterior_var": posterior_var,
            "log_small": torch.log(torch.cat([floor.reshape(1), posterior_var[1:]])),
            "log_large": torch.log(torch.cat([floor.reshape(1), betas[1:]])),
            # eq. 12: μ̃_t = coef_x0 · x_0 + coef_xt · x_t
            "coef_x0": alpha_bar_prev.sqrt() * betas / (1 - alpha_bar),
            "coef_xt": alphas.sqrt() * (1 - alpha_bar_prev) / (1 - alpha_bar),
        }
        for name, values in schedule.items():
            self.register_buffer(name, values.float(), persistent=False)

    def at(self, name: str, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """Schedule entry `name` at steps t (batch,), shaped to broadcast against `like`."""
        values = getattr(self, name)[t - 1]
        return values.reshape(-1, *([1] * (like.ndim - 1))).to(like.dtype)

    # -- the forward process -----------------------------------------------------------------
    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x_t ~ q(x_t | x_0) = N(√ᾱ_t x_0, (1 - ᾱ_t) I) (eq. 11), from the given noise."""
        a = self.at("alpha_bar", t, x0)
        return a.sqrt() * x0 + (1 - a).sqrt() * noise

    def q_posterior(self, x0: torch.Tensor, xt: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and variance of q(x_{t-1} | x_t, x_0) (eq. 12); the variance is (batch, 1, ...)."""
        mean = self.at("coef_x0", t, x0) * x0 + self.at("coef_xt", t, x0) * xt
        return mean, self.at("posterior_var", t, x0)

    # -- the reverse process -----------------------------------------------------------------
    def predict(self, net: Denoiser, xt: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The denoiser's x̂_0 and the log-variance of p(x_{t-1} | x_t) (broadcastable to x_t)."""
        out = net(xt, t)
        if self.variance == "learned":
            if out.shape[1] != 2 * xt.shape[1]:
                raise AtlasError(
                    f"a denoiser with a learned variance returns {2 * xt.shape[1]} channels "
                    f"(the prediction and the interpolation v), got {out.shape[1]}"
                )
            out, v = out.chunk(2, dim=1)
            frac = (v + 1) / 2  # v in [-1, 1] spans log β̃_t to log β_t
            log_var = frac * self.at("log_large", t, xt) + (1 - frac) * self.at("log_small", t, xt)
        else:
            log_var = self.at("log_small" if self.variance == "fixed_small" else "log_large", t, xt)
        if out.shape != xt.shape:
            raise AtlasError(f"the denoiser returned shape {list(out.shape)} for inputs of shape {list(xt.shape)}")
        if self.parametrization == "eps":
            a = self.at("alpha_bar", t, xt)
            x0 = (xt - (1 - a).sqrt() * out) / a.sqrt()
        else:
            x0 = out
        return x0, log_var

    def p_mean_logvar(
        self, net: Denoiser, xt: torch.Tensor, t: torch.Tensor, clip: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Mean and log-variance of p(x_{t-1} | x_t) = N(μ̃_t(x̂_0, x_t), σ_t²), and x̂_0
        (clipped to [-1, 1] first when `clip`)."""
        x0, log_var = self.predict(net, xt, t)
        if clip:
            x0 = x0.clamp(-1, 1)
        mean, _ = self.q_posterior(x0, xt, t)
        return mean, log_var, x0

    # -- objectives --------------------------------------------------------------------------
    def loss(self, net: Denoiser, x0: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Per-example simple loss at one uniform step t each: the mean squared error of ε̂
        ("eps") or of x̂_0 ("x"). With a learned variance Nichol & Dhariwal's hybrid adds
        1/1000 of that step's bound term, with the mean held fixed so it trains the variance only."""
        t = uniform_steps(self.steps, x0.shape[0], generator, x0.device)
        noise = gaussian_noise(x0.shape, generator, x0.device, x0.dtype)
        xt = self.q_sample(x0, t, noise)
        out = net(xt, t)
        pred = out.chunk(2, dim=1)[0] if self.variance == "learned" else out
        target = noise if self.parametrization == "eps" else x0
        loss = (pred - target).pow(2).flatten(1).mean(1)
        if self.variance == "learned":
            frozen = torch.cat([pred.detach(), out.chunk(2, dim=1)[1]], dim=1)
            term = self.step_term(lambda *_: frozen, x0, xt, t, continuous=True)
            loss = loss + term / (1000 * x0[0].numel())
        return loss

    def step_term(
        self,
        net: Denoiser,
        x0: torch.Tensor,
        xt: torch.Tensor,
        t: torch.Tensor,
        bin_width: float | None = None,
        continuous: bool = False,
    ) -> torch.Tensor:
        """Per-example L_{t-1} = KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t)) for t > 1, and
        L_0 = -ln p(x_0 | x_1) for t = 1: discretised with bins of `bin_width` (eqs. 14-15), or
        a density when `continuous`."""
        mean, log_var, _ = self.p_mean_logvar(net, xt, t)
        q_mean, q_var = self.q_posterior(x0, xt, t)
        q_logvar = torch.log(q_var.clamp_min(1e-30))
        kl = gaussian_kl_elementwise(q_mean, q_logvar.expand_as(q_mean), mean, log_var.expand_as(mean))
        if continuous or bin_width is None:
            nll = -gaussian_log_prob(x0, mean, log_var.expand_as(mean))
        else:
            nll = -discretised_gaussian_log_prob(x0, mean, log_var.expand_as(mean), bin_width)
        first = (t == 1).reshape(-1, *([1] * (x0.ndim - 1)))
        return torch.where(first, nll, kl).flatten(1).sum(1)

    def prior_term(self, x0: torch.Tensor) -> torch.Tensor:
        """Per-example L_T = KL(q(x_T | x_0) || N(0, I))."""
        t = torch.full((x0.shape[0],), self.steps, device=x0.device)
        a = self.at("alpha_bar", t, x0)
        logvar = torch.log(1 - a).expand_as(x0)
        zero = torch.zeros_like(x0)
        return gaussian_kl_elementwise(a.sqrt() * x0, logvar, zero, zero).flatten(1).sum(1)

    def bound(
        self,
        net: Denoiser,
        x0: torch.Tensor,
        bin_width: float | None = None,
        every_step: bool = True,
        generator: torch.Generator | None = None,
        shared_noise: bool = False,
    ) -> DiffusionBound:
        """The DDPM bound on ln p(x_0) of eq. 13, per example. With `every_step` each of the T
        terms is computed (T passes of the denoiser; one x_t draw each); otherwise L_0 is computed
        and one of the T - 1 KL terms drawn uniformly per example, scaled by T - 1, estimates
        their sum without bias (two passes; for training and quick evaluation). A
        `bin_width` makes L_0 the discretised likelihood of eqs. 14-15, for data on a grid.
        With `shared_noise` one x_t noise draw per step serves every example, so that an
        example's value does not depend on the others in the batch (with a seeded generator, a
        deterministic function of x_0)."""
        n = x0.shape[0]
        prior = self.prior_term(x0)

        def term(t: torch.Tensor) -> torch.Tensor:
            shape = (1, *x0.shape[1:]) if shared_noise else x0.shape
            xt = self.q_sample(x0, t, gaussian_noise(shape, generator, x0.device, x0.dtype))
            return self.step_term(net, x0, xt, t, bin_width)

        if every_step:
            terms = [term(torch.full((n,), s, device=x0.device)) for s in range(1, self.steps + 1)]
            recon, steps = -terms[0], torch.stack(terms[1:], 1) if self.steps > 1 else x0.new_zeros(n, 0)
        else:  # L_0 always (it is the largest term), one of L_1..L_{T-1} at random, times T - 1
            recon = -term(torch.ones(n, dtype=torch.long, device=x0.device))
            if self.steps > 1:
                t = 1 + uniform_steps(self.steps - 1, n, generator, x0.device)
                steps = ((self.steps - 1) * term(t)).unsqueeze(1)
            else:
                steps = x0.new_zeros(n, 0)
        return DiffusionBound(recon - prior - steps.sum(1), recon, prior, steps)

    # -- sampling ----------------------------------------------------------------------------
    @torch.no_grad()
    def sample(
        self,
        net: Denoiser,
        shape: tuple[int, ...],
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
        clip: bool = False,
        record: tuple[int, ...] = (),
        device: torch.device | str | None = None,
    ) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
        """Ancestral sampling: x_T ~ N(0, τ² I), then x_{t-1} ~ N(μ_t, τ² σ_t²) down to x_0,
        the mean of the last step (no noise at t = 1). The temperature τ scales x_T and every
        step's noise. Returns x_0 and {t: x_t} for the steps in `record` (T for the start, 0
        for the end)."""
        device = device if device is not None else self.betas.device
        x = temperature * gaussian_noise(shape, generator, device)
        kept = {self.steps: x.clone()} if self.steps in record else {}
        for s in range(self.steps, 0, -1):
            t = torch.full((shape[0],), s, device=device)
            mean, log_var, _ = self.p_mean_logvar(net, x, t, clip)
            if s > 1:
                x = mean + temperature * torch.exp(0.5 * log_var) * gaussian_noise(shape, generator, device)
            else:
                x = mean
            if s - 1 in record:
                kept[s - 1] = x.clone()
        return x, kept


def gaussian_noise(
    shape: tuple[int, ...], generator: torch.Generator | None, device, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Standard normal noise on `device`, drawn on the generator's own device (a CPU
    generator can seed a GPU run)."""
    where = generator.device if generator is not None else device
    return torch.randn(shape, generator=generator, device=where, dtype=dtype).to(device)


def uniform_steps(steps: int, n: int, generator: torch.Generator | None, device) -> torch.Tensor:
    """n steps drawn uniformly from 1..T."""
    where = generator.device if generator is not None else device
    return torch.randint(1, steps + 1, (n,), generator=generator, device=where).to(device)
