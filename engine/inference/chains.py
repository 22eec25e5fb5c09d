"""HMC runs as the "HMC chains" page shows them: a toy density or a model's latent
posterior for one input (optionally with part of the input hidden, for inpainting), the
chains, a 2-D view of the density under them, and their diagnostics.

    run = run_toy("banana", HMCSettings(chains=8))
    run = run_posterior(model, x, HMCSettings(), mask=mask)     # x: (1, *shape)
    table = chain_summary(run)                                   # R-hat, ESS per dimension

Everything here takes and returns plain tensors and arrays; the page only draws them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from engine.diagnostics.mcmc import ess_bulk, ess_tail, rhat
from engine.errors import AtlasError
from engine.inference.hmc import HMCResult, sample_hmc
from engine.inference.posterior import LatentPosterior, latent_posterior
from engine.inference.targets import Box, Target, density_grid, make_target

RHAT_OK = 1.01  # Vehtari et al. (2021): R-hat below 1.01
ESS_OK = 100  # ... and a bulk and tail ESS of at least 100 (about 25 per chain for 4 chains)


@dataclass(frozen=True)
class HMCSettings:
    chains: int = 8
    num_warmup: int = 300
    num_samples: int = 300
    n_leapfrog: int = 10
    # Stan's and NumPyro's default: on the correlated Gaussian toy with 10 leapfrog steps, 0.65 is
    # reached only with a step at the edge of the leapfrog's stability (100-300 divergences in
    # 2,400 draws, R-hat above 1.01), 0.8 with none
    target_accept: float = 0.8
    seed: int = 0

    def check(self) -> None:
        limits = {"chains": (1, 4096), "num_warmup": (0, 20000), "num_samples": (4, 20000), "n_leapfrog": (1, 1000)}
        for name, (low, high) in limits.items():
            value = getattr(self, name)
            if not low <= value <= high:
                raise AtlasError(f"{name} must lie between {low} and {high}, got {value}")
        if not 0.05 <= self.target_accept <= 0.99:
            raise AtlasError(f"the target acceptance must lie in [0.05, 0.99], got {self.target_accept}")


@dataclass
class ChainRun:
    """One HMC run on one target (batch element 0)."""

    result: HMCResult
    labels: list[str]  # a name per dimension
    box: Box  # the window of the 2-D view over `pair`
    pair: tuple[int, int]
    truth_mean: np.ndarray | None = None  # exact (toy) moments, (dim,)
    truth_var: np.ndarray | None = None
    encoder_mean: np.ndarray | None = None  # the encoder's Gaussian (dim,), latent posteriors only
    encoder_std: np.ndarray | None = None
    posterior: LatentPosterior | None = None

    @property
    def draws(self) -> np.ndarray:
        """(chains, draws, dim)"""
        return self.result.draws(0)

    @property
    def path(self) -> np.ndarray:
        """Every state of every chain, warm-up included: (chains, steps + 1, dim), the
        starting point first."""
        parts = [self.result.initial[0:1]]
        if self.result.warmup_samples is not None:
            parts.append(self.result.warmup_samples[:, 0])
        parts.append(self.result.samples[:, 0])
        start, rest = parts[0], torch.cat(parts[1:])  # (1, chains, dim), (steps, chains, dim)
        return torch.cat([start, rest]).transpose(0, 1).detach().cpu().double().numpy()

    def stat(self, name: str) -> np.ndarray:
        """A per-transition statistic over warm-up and draws, (chains, steps)."""
        return getattr(self.result, name)[:, 0].transpose(0, 1).detach().cpu().double().numpy()


def _sample(log_prob, z0: torch.Tensor, s: HMCSettings, step_size: float) -> HMCResult:
    s.check()
    return sample_hmc(
        log_prob,
        z0,
        num_warmup=s.num_warmup,
        num_samples=s.num_samples,
        n_leapfrog=s.n_leapfrog,
        step_size=step_size,
        target_accept=s.target_accept,
        adapt_per="posterior",
        seed=s.seed,
    )


def run_toy(name: str, settings: HMCSettings) -> ChainRun:
    """HMC on a toy density, chains started from N(0, I) draws around the origin."""
    target: Target = make_target(name)
    g = torch.Generator().manual_seed(settings.seed)
    z0 = torch.randn(1, settings.chains, target.dim, generator=g, dtype=torch.float64)
    result = _sample(target.log_prob, z0, settings, step_size=0.2)
    return ChainRun(
        result,
        [f"z{i + 1}" for i in range(target.dim)],
        target.box,
        (0, 1),
        truth_mean=target.mean.numpy(),
        truth_var=target.var.numpy(),
    )


def run_posterior(
    model, x: torch.Tensor, settings: HMCSettings, mask: torch.Tensor | None = None, pair: tuple[int, int] = (0, 1)
) -> ChainRun:
    """HMC on p(z | x) (or p(z | x_observed) with a 0/1 `mask`) of any LatentModel, for
    one input x: (1, *shape), chains started from the encoder's Gaussian."""
    if x.shape[0] != 1:
        raise AtlasError(f"run the chains for one input at a time, x: (1, ...); got {tuple(x.shape)}")
    post = latent_posterior(model, x, mask)
    dim = post.mean.shape[-1]
    if dim < 2 or not (0 <= pair[0] < dim and 0 <= pair[1] < dim and pair[0] != pair[1]):
        raise AtlasError(f"pick two different dimensions between 0 and {dim - 1} for the 2-D view, got {pair}")
    z0 = post.initial(settings.chains, inflation=1.0, seed=settings.seed)
    step = float(post.std.min().clamp(1e-3, 1.0))
    result = _sample(post.log_prob, z0, settings, step_size=step)
    labels = [name if size == 1 else f"{name}[{i}]" for name, size in zip(post.names, post.sizes) for i in range(size)]
    mean, std = post.mean[0].detach().cpu().double().numpy(), post.std[0].detach().cpu().double().numpy()
    draws = result.draws(0)[..., list(pair)].reshape(-1, 2)
    box = _window(np.concatenate([draws, mean[list(pair)][None] + np.outer([-3, 3], std[list(pair)])]))
    return ChainRun(result, labels, box, pair, encoder_mean=mean, encoder_std=std, posterior=post)


def _window(points: np.ndarray, margin: float = 0.15) -> Box:
    low, high = np.quantile(points, 0.001, axis=0), np.quantile(points, 0.999, axis=0)
    pad = (high - low) * margin + 1e-3
    return ((float(low[0] - pad[0]), float(high[0] + pad[0])), (float(low[1] - pad[1]), float(high[1] + pad[1])))


def density_view(run: ChainRun, log_prob=None, n: int = 120):
    """The log density on an n x n grid over the run's window, for its pair of dimensions:
    exact for a 2-D target; for more dimensions, the slice through the encoder mean (the
    other coordinates held there). Returns (xs, ys, logp [y, x]), normalised to max 0."""
    a, b = run.pair
    if run.posterior is None:
        xs, ys, logp = density_grid(log_prob, run.box, n)
        return xs.numpy(), ys.numpy(), (logp - logp.max()).numpy()
    centre = torch.as_tensor(run.encoder_mean, dtype=run.posterior.mean.dtype, device=run.posterior.mean.device)

    def sliced(points):  # (n, n, 2) -> (n, n)
        z = centre.expand(*points.shape[:-1], centre.shape[-1]).clone()
        z[..., a], z[..., b] = points[..., 0].to(z), points[..., 1].to(z)
        flat = z.reshape(1, -1, z.shape[-1])  # (batch 1, chains = grid points, dim)
        return torch.cat([run.posterior.log_prob(chunk) for chunk in flat.split(4096, dim=1)], 1).reshape(
            points.shape[:-1]
        )

    xs, ys, logp = density_grid(sliced, run.box, n)
    logp = logp.double()
    return xs.numpy(), ys.numpy(), (logp - logp.max()).numpy()


def chain_summary(run: ChainRun) -> list[dict]:
    """Per dimension: posterior mean and sd over all draws, split R-hat, bulk and tail
    ESS (rank-normalised, Vehtari et al. 2021), and for toys the error against the truth
    in Monte Carlo standard errors."""
    draws = run.draws  # (chains, draws, dim)
    r, eb, et = rhat(draws), ess_bulk(draws), ess_tail(draws)
    rows = []
    for i, label in enumerate(run.labels):
        flat = draws[:, :, i].ravel()
        row = {
            "dimension": label,
            "mean": float(flat.mean()),
            "sd": float(flat.std()),
            "R-hat": float(r[i]),
            "bulk ESS": float(eb[i]),
            "tail ESS": float(et[i]),
        }
        if run.truth_mean is not None:
            mcse = flat.std() / np.sqrt(max(eb[i], 1.0))
            row["true mean"] = float(run.truth_mean[i])
            row["error (MCSE)"] = float((flat.mean() - run.truth_mean[i]) / mcse)
        row["ok"] = bool(r[i] < RHAT_OK and eb[i] >= ESS_OK and et[i] >= ESS_OK)
        rows.append(row)
    return rows


def decoded_along_chain(model, run: ChainRun, chain: int = 0, count: int = 10) -> torch.Tensor:
    """`count` evenly spaced post-warm-up states of one chain decoded: (count, *shape)."""
    draws = run.result.samples[:, 0, chain]  # (draws, dim)
    index = torch.linspace(0, len(draws) - 1, count).round().long()
    z = run.posterior.to_latents(draws[index].reshape(count, 1, 1, -1))  # {group: (count, 1, 1, size)}
    with torch.no_grad():
        return model.decode({k: v.reshape(count, -1) for k, v in z.items()}).cpu()


@dataclass
class Inpainting:
    """Encoder-only against HMC inpainting of the hidden entries of one input."""

    truth: torch.Tensor  # (1, *shape)
    seen: torch.Tensor  # the input with the hidden entries at 0
    encoder: torch.Tensor  # decoded encoder mean, hidden entries filled in
    hmc: torch.Tensor  # mean of the decoded HMC draws, filled in
    encoder_error: float  # mean squared error over the hidden entries
    hmc_error: float


def inpaint(model, x: torch.Tensor, mask: torch.Tensor, run: ChainRun, draws: int = 200) -> Inpainting:
    """Fill the hidden entries (mask = 0) from the encoder's mean, and from the average
    decoding of HMC draws of p(z | x_observed) (seed002 §5.2: HMC beats the encoder)."""
    post = run.posterior
    with torch.no_grad():
        z_enc = post.to_latents(post.mean.reshape(1, 1, 1, -1))
        enc = model.decode({k: v.reshape(1, -1) for k, v in z_enc.items()})
        flat = run.result.samples[:, 0].reshape(-1, post.mean.shape[-1])  # (draws * chains, dim)
        pick = torch.linspace(0, len(flat) - 1, min(draws, len(flat))).round().long()
        z_hmc = post.to_latents(flat[pick].reshape(len(pick), 1, 1, -1))
        hmc = model.decode({k: v.reshape(len(pick), -1) for k, v in z_hmc.items()}).mean(0, keepdim=True)
    mask = mask.to(x.dtype).expand_as(x)
    hidden = 1 - mask

    def fill(guess):
        return x * mask + guess.to(x) * hidden

    def error(guess):
        return float(((guess.to(x) - x) ** 2 * hidden).sum() / hidden.sum().clamp_min(1))

    return Inpainting(x, x * mask, fill(enc), fill(hmc), error(enc), error(hmc))


def hidden_region(shape: tuple[int, ...], region: str) -> torch.Tensor:
    """A 0/1 mask (1, *shape) that hides the named region of an image: "bottom half",
    "top half", "left half", "right half" or "centre"."""
    if len(shape) != 3:
        raise AtlasError(f"regions are for images (C, H, W); this data has shape {shape}")
    _, h, w = shape
    mask = torch.ones(1, *shape)
    cuts = {
        "bottom half": (slice(h // 2, h), slice(0, w)),
        "top half": (slice(0, h // 2), slice(0, w)),
        "left half": (slice(0, h), slice(0, w // 2)),
        "right half": (slice(0, h), slice(w // 2, w)),
        "centre": (slice(h // 4, h - h // 4), slice(w // 4, w - w // 4)),
    }
    if region not in cuts:
        raise AtlasError(f"unknown region {region!r}; choose one of {', '.join(cuts)}")
    rows, cols = cuts[region]
    mask[..., rows, cols] = 0
    return mask
