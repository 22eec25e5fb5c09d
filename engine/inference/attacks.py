"""Adversarial attacks on a VAE's encoder (seed001 §4.3).

The attacker adds a distortion d to an input x so that the model treats x + d like a
target x^t. Two attack modes, each over a sweep of the penalty weight lambda:

- latent (Eq 5.1, 5.10): minimise  sum_groups r(q(z_g | x + d), q(z_g | x^t)) + lambda ||d||_2,
  with r the KL divergence KL(attacked || target) or the 2-Wasserstein distance
      W2^2 = ||mu_1 - mu_2||^2 + ||sigma_1 - sigma_2||^2
  between diagonal Gaussians. For a hierarchical model the sum runs over its latent
  groups (layers), each as `encode` returns it (the Seatbelt attack of Eq 5.10 on all
  layers at once; the conditional layers at the means of the layers below).
- output (Eq 5.2, Kos et al. 2018): minimise  -ELBO_target(x + d) + lambda ||d||_2, where
      ELBO_target(x + d) = E_{q(z | x + d)} [log p(x^t, z) - log q(z | x + d)]
  by Monte Carlo with noise held fixed during the optimisation (common random
  numbers, so L-BFGS-B sees a deterministic function). q is the encoder's Gaussians as
  `encode` returns them, each group drawn independently: for a hierarchical model the
  layers along the posterior-mean path, a mean-field stand-in for its chained posterior
  (the ELBO stays a lower bound on log p(x^t) for any q).

The protocol of the seed: random input-target pairs, 50 values of lambda in
geomspace(2^-20, 2^20), L-BFGS-B; report the achieved adversarial loss (higher: the
model is harder to attack), the distortion ||d||, the target's negative log-likelihood
under codes of the attacked input -log p(x^t | z*), z* ~ q(z | x + d), and how alike
the attacked input's reconstruction and the target's are (MS-SSIM).

Adam is offered as a batched alternative (every pair and lambda at once; Adam's update
is elementwise, so the problems stay independent); both keep the best distortion seen,
starting from d = 0, so no attack ends worse than not attacking. Attacked inputs stay
inside `bounds` (the data range) when given.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from engine.diagnostics.similarity import ms_ssim
from engine.errors import AtlasError
from engine.models.base import LatentModel, WithLikelihood, model_device
from engine.models.likelihoods import Bernoulli, Gaussian
from engine.models.posteriors import DiagonalGaussian

DIVERGENCES = ("kl", "w2")
MODES = ("latent", "output")
OPTIMIZERS = ("lbfgsb", "adam")


def seed_lambdas(n: int = 50, low: float = 2.0**-20, high: float = 2.0**20) -> np.ndarray:
    """The seed's sweep: n values of lambda geometrically spaced from 2^-20 to 2^20."""
    return np.geomspace(low, high, n)


def gaussian_w2(q: DiagonalGaussian, p: DiagonalGaussian) -> torch.Tensor:
    """The 2-Wasserstein distance between diagonal Gaussians (not squared), last dim summed.
    A tiny floor keeps its gradient finite where the two coincide."""
    sq = (q.mean - p.mean).pow(2).sum(-1) + (q.stddev - p.stddev).pow(2).sum(-1)
    return torch.sqrt(sq + 1e-12)


def latent_divergence(
    q: dict[str, DiagonalGaussian], target: dict[str, DiagonalGaussian], kind: str = "kl"
) -> torch.Tensor:
    """sum over latent groups of r(q_g, target_g), shape (batch,)."""
    if kind not in DIVERGENCES:
        raise AtlasError(f"unknown divergence {kind!r}; choose 'kl' or 'w2'")
    fn = DiagonalGaussian.kl_to if kind == "kl" else gaussian_w2
    return sum(fn(q[g], target[g]) for g in target)


def log_likelihood(model: LatentModel, x: torch.Tensor, z: dict[str, torch.Tensor]) -> torch.Tensor:
    """log p(x | z) for the model's observation model, from its decoded mean; z values
    (..., batch, size) -> (..., batch)."""
    lik = model.likelihood if isinstance(model, WithLikelihood) else None
    mean = model.decode(z)
    if isinstance(lik, Bernoulli):
        return lik.log_prob(x, torch.logit(mean, eps=1e-6))
    if isinstance(lik, Gaussian):
        return lik.log_prob(x, mean)
    raise AtlasError(f"{type(model).__name__} has no Bernoulli or Gaussian likelihood to score the target with")


def _draw(q: dict[str, DiagonalGaussian], eps: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {g: q[g].mean + q[g].stddev * eps[g] for g in q}


def _log_q(q: dict[str, DiagonalGaussian], z: dict[str, torch.Tensor]) -> torch.Tensor:
    return sum(q[g].log_prob(z[g]) for g in q)


@dataclass
class AttackResult:
    """One attack per (pair, lambda). Arrays are numpy, shape (pairs, lambdas) unless said."""

    mode: str
    divergence_kind: str
    lambdas: np.ndarray  # (L,)
    delta: np.ndarray  # (pairs, L, *input shape): the best distortion found
    loss: np.ndarray  # the achieved adversarial loss
    divergence: np.ndarray  # latent divergence to the target after the attack (for either mode)
    divergence_clean: np.ndarray  # (pairs,) at d = 0
    distortion: np.ndarray  # ||d||_2
    target_nll: np.ndarray  # -log p(x^t | z*), z* ~ q(z | x + d), averaged over draws
    target_nll_clean: np.ndarray  # (pairs,) the same at d = 0
    target_nll_own: np.ndarray  # (pairs,) -log p(x^t | z), z ~ q(z | x^t): the target's own reconstruction
    ms_ssim: np.ndarray  # between the reconstructions of x + d and of x^t
    ms_ssim_clean: np.ndarray  # (pairs,) between the reconstructions of x and of x^t

    @property
    def best(self) -> np.ndarray:
        """(pairs,) index of the lambda whose attack reached the lowest adversarial loss."""
        return np.argmin(self.loss, axis=1)

    def summary(self) -> dict[str, float]:
        """Averages over every pair and lambda (the seed's plots average over both)."""
        return {
            "loss_mean": float(self.loss.mean()),
            "log10_loss_mean": float(np.log10(np.maximum(self.loss, 1e-300)).mean()),
            "target_nll_mean": float(self.target_nll.mean()),
            "distortion_mean": float(self.distortion.mean()),
            "ms_ssim_mean": float(self.ms_ssim.mean()),
            "divergence_drop_mean": float((self.divergence_clean[:, None] - self.divergence).mean()),
        }


class _Objective:
    """The attack objective for a flat batch of problems (P = pairs x lambdas)."""

    def __init__(self, model, x, x_target, lam, mode, divergence, target_q, eps):
        self.model, self.x, self.x_target, self.lam = model, x, x_target, lam
        self.mode, self.kind, self.target_q, self.eps = mode, divergence, target_q, eps

    @classmethod
    def build(cls, model, x, x_target, lam, mode, divergence, mc_samples, generator) -> _Objective:
        with torch.no_grad():
            target_q = model.encode(x_target)
        eps = None
        if mode == "output":
            eps = {
                g: torch.randn((mc_samples, *q.mean.shape), generator=generator, dtype=x.dtype).to(x.device)
                for g, q in target_q.items()
            }
        return cls(model, x, x_target, lam, mode, divergence, target_q, eps)

    def restrict(self, idx: torch.Tensor) -> _Objective:
        """The objective of problems idx only, in that order."""
        target_q = {g: DiagonalGaussian(q.mean[idx], q.logvar[idx]) for g, q in self.target_q.items()}
        eps = None if self.eps is None else {g: e[:, idx] for g, e in self.eps.items()}
        return _Objective(
            self.model, self.x[idx], self.x_target[idx], self.lam[idx], self.mode, self.kind, target_q, eps
        )

    def __call__(self, delta: torch.Tensor) -> torch.Tensor:
        """Per-problem objective (P,), differentiable in delta."""
        norm = torch.sqrt(delta.flatten(1).pow(2).sum(1) + 1e-12)
        q = self.model.encode(self.x + delta)
        if self.mode == "latent":
            cost = latent_divergence(q, self.target_q, self.kind)
        else:
            z = _draw(q, self.eps)  # (S, P, size)
            elbo = self.model.log_joint(self.x_target, z) - _log_q(q, z)
            cost = -elbo.mean(0)
        return cost + self.lam * norm


def _box(x: torch.Tensor, bounds) -> tuple[torch.Tensor, torch.Tensor] | None:
    if bounds is None:
        return None
    lo, hi = bounds
    return lo - x, hi - x  # limits on delta


def _adam(objective, delta0, box, steps, lr):
    delta = delta0.clone().requires_grad_(True)
    best = delta0.clone()
    with torch.no_grad():
        best_loss = objective(best)
    opt = torch.optim.Adam([delta], lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        loss = objective(delta)
        loss.sum().backward()
        opt.step()
        sched.step()
        with torch.no_grad():
            if box is not None:
                delta.copy_(torch.maximum(torch.minimum(delta, box[1]), box[0]))
            now = objective(delta)
            better = now < best_loss
            best[better] = delta[better]
            best_loss = torch.where(better, now, best_loss)
    return best


def _lbfgsb(objective, delta0, box, steps, group_size):
    """scipy L-BFGS-B, one run per lambda (its problems share a scale), over all pairs."""
    from scipy.optimize import minimize

    out = delta0.clone()
    shape, dtype, device = delta0.shape[1:], delta0.dtype, delta0.device
    n = delta0.shape[0]
    for start in range(0, n, group_size):
        idx = torch.arange(start, min(start + group_size, n), device=device)
        sub = objective.restrict(idx)

        def fun(flat: np.ndarray):
            d = torch.from_numpy(flat).to(device=device, dtype=dtype).view(len(idx), *shape).requires_grad_(True)  # noqa: B023
            loss = sub(d).sum()  # noqa: B023
            (grad,) = torch.autograd.grad(loss, d)
            return float(loss.detach()), grad.detach().cpu().double().numpy().ravel()

        bounds = None
        if box is not None:
            lo, hi = box[0][idx].cpu().double().numpy().ravel(), box[1][idx].cpu().double().numpy().ravel()
            bounds = list(zip(lo, hi))
        x0 = delta0[idx].cpu().double().numpy().ravel()
        res = minimize(fun, x0, jac=True, method="L-BFGS-B", bounds=bounds, options={"maxiter": steps})
        found = torch.from_numpy(res.x).to(device=device, dtype=dtype).view(len(idx), *shape)
        with torch.no_grad():  # keep d = 0 where the optimiser ended worse (it never should)
            better = sub(found) <= sub(delta0[idx])
        out[idx] = torch.where(better.view(-1, *[1] * len(shape)), found, delta0[idx])
    return out


def attack(
    model,
    x: torch.Tensor,
    x_target: torch.Tensor,
    lambdas=None,
    mode: str = "latent",
    divergence: str = "kl",
    optimizer: str = "lbfgsb",
    steps: int = 100,
    lr: float = 0.02,
    bounds: tuple[float, float] | None = (0.0, 1.0),
    mc_samples: int = 4,
    eval_samples: int = 16,
    seed: int = 0,
) -> AttackResult:
    """Attack every input-target pair (rows of x and x_target) at every lambda.

    steps: L-BFGS-B iterations per lambda, or Adam steps; lr: Adam's step size in data
    units. Returns the best distortion per (pair, lambda) and its metrics."""
    if mode not in MODES:
        raise AtlasError(f"unknown attack mode {mode!r}; choose 'latent' or 'output'")
    if divergence not in DIVERGENCES:
        raise AtlasError(f"unknown divergence {divergence!r}; choose 'kl' or 'w2'")
    if optimizer not in OPTIMIZERS:
        raise AtlasError(f"unknown optimiser {optimizer!r}; choose 'lbfgsb' or 'adam'")
    if x.shape != x_target.shape or x.dim() < 2 or len(x) == 0:
        raise AtlasError(
            f"inputs and targets must be batches of one shape; got {tuple(x.shape)} and {tuple(x_target.shape)}"
        )
    if not isinstance(steps, int) or steps < 1:
        raise AtlasError(f"steps must be a positive integer, got {steps!r}")
    lambdas = seed_lambdas() if lambdas is None else np.asarray(lambdas, dtype=float).ravel()
    if len(lambdas) == 0 or not np.all(np.isfinite(lambdas)) or np.any(lambdas < 0):
        raise AtlasError("lambdas must be a non-empty list of finite numbers >= 0")

    device = model_device(model)
    x, x_target = x.to(device), x_target.to(device)
    pairs, n_lam, shape = len(x), len(lambdas), x.shape[1:]
    # problem p = pair * n_lam + lambda index
    xs = x.repeat_interleave(n_lam, 0)
    ts = x_target.repeat_interleave(n_lam, 0)
    lam = torch.tensor(np.tile(lambdas, pairs), dtype=x.dtype, device=device)
    gen = torch.Generator().manual_seed(seed)
    was_training = model.training
    model.eval()
    try:
        objective = _Objective.build(model, xs, ts, lam, mode, divergence, mc_samples, gen)
        box = _box(xs, bounds)
        delta0 = torch.zeros_like(xs)
        if box is not None:  # an input outside the box starts projected into it
            delta0 = torch.maximum(torch.minimum(delta0, box[1]), box[0])
        if optimizer == "adam":
            delta = _adam(objective, delta0, box, steps, lr)
        else:
            # one L-BFGS-B run per lambda: reorder so a lambda's problems are contiguous
            order = torch.arange(pairs * n_lam, device=device).view(pairs, n_lam).T.reshape(-1)
            sub = objective.restrict(order)
            found = _lbfgsb(sub, delta0[order], None if box is None else (box[0][order], box[1][order]), steps, pairs)
            delta = torch.empty_like(found)
            delta[order] = found
        return _evaluate(model, objective, xs, ts, delta, lambdas, pairs, shape, mode, divergence, eval_samples, gen)
    finally:
        model.train(was_training)


@torch.no_grad()
def _evaluate(model, objective, xs, ts, delta, lambdas, pairs, shape, mode, divergence, eval_samples, gen):
    n_lam = len(lambdas)

    def grid(t: torch.Tensor) -> np.ndarray:
        return t.view(pairs, n_lam, *t.shape[1:]).cpu().numpy()

    def target_nll(inputs: torch.Tensor) -> torch.Tensor:
        q = model.encode(inputs)
        eps = {
            g: torch.randn((eval_samples, *qg.mean.shape), generator=gen, dtype=inputs.dtype).to(inputs.device)
            for g, qg in q.items()
        }
        return -log_likelihood(model, ts[: len(inputs)], _draw(q, eps)).mean(0)

    def recon(inputs: torch.Tensor) -> torch.Tensor:
        return model.decode({g: q.mean for g, q in model.encode(inputs).items()})

    attacked = xs + delta
    loss = objective(delta)
    q_attacked = model.encode(attacked)
    div = latent_divergence(q_attacked, objective.target_q, divergence)
    div_clean = latent_divergence(model.encode(xs), objective.target_q, divergence)
    rec_t = recon(ts)
    first = torch.arange(pairs, device=xs.device) * n_lam  # one row per pair for the clean numbers
    images = rec_t.dim() == 4
    similarity = (
        (lambda a, b: ms_ssim(a.clamp(0, 1), b.clamp(0, 1)))
        if images
        else (lambda a, b: torch.full((len(a),), float("nan")))
    )
    return AttackResult(
        mode=mode,
        divergence_kind=divergence,
        lambdas=np.asarray(lambdas),
        delta=grid(delta),
        loss=grid(loss),
        divergence=grid(div),
        divergence_clean=div_clean[first].cpu().numpy(),
        distortion=grid(delta.flatten(1).norm(dim=1)),
        target_nll=grid(target_nll(attacked)),
        target_nll_clean=target_nll(xs)[first].cpu().numpy(),
        target_nll_own=target_nll(ts)[first].cpu().numpy(),
        ms_ssim=grid(similarity(recon(attacked), rec_t)),
        ms_ssim_clean=similarity(recon(xs), rec_t)[first].cpu().numpy(),
    )


def random_pairs(
    labels: np.ndarray | None, n: int, n_items: int, seed: int = 0, different_label: bool = True
) -> np.ndarray:
    """n (input, target) index pairs of distinct items; with labels and `different_label`,
    the target has a different label (the seed's Table 5.1 setting)."""
    if n_items < 2:
        raise AtlasError("an attack needs at least two inputs to pair")
    rng = np.random.default_rng(seed)
    out = []
    tries = 0
    while len(out) < n and tries < 100 * n:
        tries += 1
        i, j = rng.choice(n_items, 2, replace=False)
        if different_label and labels is not None and labels[i] == labels[j]:
            continue
        out.append((int(i), int(j)))
    if len(out) < n:
        raise AtlasError(f"found only {len(out)} input-target pairs with different labels out of {n} asked")
    return np.asarray(out)


def amplify(delta: np.ndarray) -> np.ndarray:
    """A distortion rescaled to [0, 1] for display (the seed's panels), per image."""
    flat = delta.reshape(len(delta), -1)
    lo, hi = flat.min(1, keepdims=True), flat.max(1, keepdims=True)
    return ((flat - lo) / np.maximum(hi - lo, 1e-12)).reshape(delta.shape)


__all__ = [
    "AttackResult",
    "amplify",
    "attack",
    "gaussian_w2",
    "latent_divergence",
    "log_likelihood",
    "random_pairs",
    "seed_lambdas",
]
