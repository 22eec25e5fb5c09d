"""Toy target densities with known moments, for teaching HMC and testing samplers.

Each `Target` has a vectorised, differentiable `log_prob(z: (..., dim)) -> (...)`
(unnormalised), its exact mean and variance where they have a closed form, and otherwise
reference moments from dense-grid quadrature (`grid_moments`), marked by
`moments = "quadrature"`. `box` is a 2-D window that shows the density's mass.

- correlated Gaussian;
- banana: Haario et al. (1999)'s twisted Gaussian;
- Neal's funnel (Neal 2003): v ~ N(0, 3^2), x_i | v ~ N(0, e^v); HMC diverges in its neck;
- wave and dual moon, the 2-D toys of seed002 Fig. 5.7. The thesis gives no formulas;
  seed002 §2.10 takes the standard energies of Rezende & Mohamed (2015):
    wave:      U(z) = 1/2 [(z2 - sin(2 pi z1 / 4)) / 0.4]^2
    dual moon: U(z) = 1/2 ((|z| - 2) / 0.4)^2 - log(e^{-1/2 ((z1-2)/0.6)^2} + e^{-1/2 ((z1+2)/0.6)^2})
  The wave energy is flat along z1 (not normalisable); we add a N(0, 2^2) envelope on z1,
  1/2 (z1 / 2)^2, so that it is a proper density with finite moments.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch

from engine.errors import AtlasError

Box = tuple[tuple[float, float], tuple[float, float]]


@dataclass(frozen=True)
class Target:
    name: str
    dim: int
    log_prob: Callable[[torch.Tensor], torch.Tensor]  # (..., dim) -> (...)
    mean: torch.Tensor  # (dim,) float64
    var: torch.Tensor  # (dim,) float64
    box: Box  # plotting window over the first two coordinates
    moments: Literal["exact", "quadrature"] = "exact"


def density_grid(log_prob: Callable[[torch.Tensor], torch.Tensor], box: Box, n: int = 200):
    """log_prob on an n x n grid over `box` in float64: returns (xs (n,), ys (n,),
    logp (n, n) indexed [y, x], as a contour plot wants)."""
    (x0, x1), (y0, y1) = box
    xs = torch.linspace(x0, x1, n, dtype=torch.float64)
    ys = torch.linspace(y0, y1, n, dtype=torch.float64)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    with torch.no_grad():
        logp = log_prob(torch.stack([gx, gy], -1))
    return xs, ys, logp


def grid_moments(log_prob: Callable[[torch.Tensor], torch.Tensor], box: Box, n: int = 1201):
    """Mean and variance (2,) of a 2-D density by quadrature on an n x n grid over `box`
    (the box must hold essentially all the mass)."""
    xs, ys, logp = density_grid(log_prob, box, n)
    w = torch.softmax(logp.flatten(), 0).view_as(logp)  # (n_y, n_x), sums to 1
    px, py = w.sum(0), w.sum(1)
    mean = torch.stack([(px * xs).sum(), (py * ys).sum()])
    var = torch.stack([(px * (xs - mean[0]) ** 2).sum(), (py * (ys - mean[1]) ** 2).sum()])
    return mean, var


def correlated_gaussian(rho: float = 0.9, scales: tuple[float, float] = (1.0, 2.0)) -> Target:
    """N(0, S) with S = [[s1^2, rho s1 s2], [rho s1 s2, s2^2]]."""
    if not -1 < rho < 1:
        raise AtlasError(f"the correlation must be strictly between -1 and 1, got {rho}")
    s1, s2 = scales
    prec = torch.linalg.inv(torch.tensor([[s1 * s1, rho * s1 * s2], [rho * s1 * s2, s2 * s2]], dtype=torch.float64))

    def log_prob(z):
        p = prec.to(z)
        return -0.5 * torch.einsum("...i,ij,...j->...", z, p, z)

    var = torch.tensor([s1 * s1, s2 * s2], dtype=torch.float64)
    return Target(
        "correlated gaussian",
        2,
        log_prob,
        torch.zeros(2, dtype=torch.float64),
        var,
        ((-3.5 * s1, 3.5 * s1), (-3.5 * s2, 3.5 * s2)),
    )


def banana(b: float = 0.03, sigma1: float = 10.0) -> Target:
    """Haario's twisted Gaussian: x ~ N(0, diag(sigma1^2, 1)), y = (x1, x2 - b (x1^2 - sigma1^2)).
    Mean 0; Var y1 = sigma1^2, Var y2 = 1 + 2 b^2 sigma1^4 (as Var x1^2 = 2 sigma1^4)."""

    def log_prob(z):
        y1, y2 = z[..., 0], z[..., 1]
        return -0.5 * ((y1 / sigma1) ** 2 + (y2 + b * (y1 * y1 - sigma1 * sigma1)) ** 2)

    var = torch.tensor([sigma1**2, 1 + 2 * b * b * sigma1**4], dtype=torch.float64)
    top = b * sigma1 * sigma1 + 3
    return Target(
        "banana",
        2,
        log_prob,
        torch.zeros(2, dtype=torch.float64),
        var,
        ((-3 * sigma1, 3 * sigma1), (-8 * b * sigma1 * sigma1 - 3, top)),
    )


def funnel(dim: int = 2, scale: float = 3.0) -> Target:
    """Neal's funnel: z = (v, x_1..x_{dim-1}), v ~ N(0, scale^2), x_i | v ~ N(0, e^v).
    Var x_i = E[e^v] = e^{scale^2 / 2}."""
    if dim < 2:
        raise AtlasError(f"the funnel needs dim >= 2 (v and at least one x), got {dim}")

    def log_prob(z):
        v, x = z[..., 0], z[..., 1:]
        return -0.5 * (v / scale) ** 2 - 0.5 * (x * x).sum(-1) * torch.exp(-v) - 0.5 * (dim - 1) * v

    var = torch.tensor([scale**2] + [math.exp(scale**2 / 2)] * (dim - 1), dtype=torch.float64)
    return Target(
        "funnel", dim, log_prob, torch.zeros(dim, dtype=torch.float64), var, ((-3 * scale, 3 * scale), (-10.0, 10.0))
    )


def wave() -> Target:
    """Rezende & Mohamed's U2 "wave" (seed002 Fig. 5.7) with a N(0, 2^2) envelope on z1;
    moments by quadrature."""

    def log_prob(z):
        z1, z2 = z[..., 0], z[..., 1]
        return -0.5 * ((z2 - torch.sin(2 * math.pi * z1 / 4)) / 0.4) ** 2 - 0.5 * (z1 / 2) ** 2

    mean, var = grid_moments(log_prob, ((-12.0, 12.0), (-4.0, 4.0)))
    return Target("wave", 2, log_prob, mean, var, ((-4.0, 4.0), (-4.0, 4.0)), "quadrature")


def dual_moon() -> Target:
    """Rezende & Mohamed's "dual moon" energy (seed002 Fig. 5.7); moments by quadrature."""

    def log_prob(z):
        z1 = z[..., 0]
        ring = -0.5 * ((torch.linalg.vector_norm(z, dim=-1) - 2) / 0.4) ** 2
        modes = torch.stack([-0.5 * ((z1 - 2) / 0.6) ** 2, -0.5 * ((z1 + 2) / 0.6) ** 2], -1)
        return ring + torch.logsumexp(modes, -1)

    mean, var = grid_moments(log_prob, ((-5.0, 5.0), (-5.0, 5.0)))
    return Target("dual moon", 2, log_prob, mean, var, ((-4.0, 4.0), (-4.0, 4.0)), "quadrature")


TARGETS: dict[str, Callable[[], Target]] = {
    "correlated gaussian": correlated_gaussian,
    "banana": banana,
    "funnel": funnel,
    "wave": wave,
    "dual moon": dual_moon,
}


def make_target(name: str) -> Target:
    if name not in TARGETS:
        raise AtlasError(f"unknown toy target {name!r}; choose one of {', '.join(TARGETS)}")
    return TARGETS[name]()
