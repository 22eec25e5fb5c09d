"""Normalising-flow layers on flat vectors: actnorm, an LU-parametrised linear map and a
rational-quadratic spline coupling (Durkan et al. 2019), for Bijecta (seed001 ch. 4).

A flow f maps a base vector z to data x. Every layer here has both directions, each with
the log-abs-determinant of its Jacobian per example:

    x, logdet = layer.forward(z)    # f:     z -> x, log |det df/dz|
    z, logdet = layer.inverse(x)    # f^-1:  x -> z, log |det df^-1/dx|

The density direction x -> z is the one training runs, and it applies each `FlowLayer`'s
parts in the order actnorm -> linear -> coupling (Glow's order, seed001 §3.4).

The coupling's spline parameters come from an MLP on the untransformed half of the flat
vector, not from a convolutional ResNet on an image as in the seed's RealNVP-style networks
(§3.4): an MLP coupling trains at these sizes on a CPU, and with the full linear map in front
of every coupling each half sees every pixel. The layers alternate which half they transform.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from engine.models.blocks import mlp

MIN_BIN_WIDTH = 1e-3  # seed001 §3.4, as in the nsf reference code
MIN_BIN_HEIGHT = 1e-3
MIN_DERIVATIVE = 1e-3


def on_meta_device() -> bool:
    """Whether tensors are being made on the "meta" device (a size check builds models there)."""
    return torch.empty(0).is_meta


# -- the rational-quadratic spline ------------------------------------------------------------
def _knots(unnormalised: torch.Tensor, bound: float, min_size: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Bin sizes from unnormalised logits (..., K): at least `min_size` of the interval each,
    summing to 2 bound. Returns the K + 1 knot positions from -bound to bound and the K sizes."""
    k = unnormalised.shape[-1]
    share = min_size + (1 - min_size * k) * torch.softmax(unnormalised, dim=-1)
    inner = 2 * bound * torch.cumsum(share[..., :-1], dim=-1) - bound
    ends = torch.full_like(share[..., :1], bound)
    knots = torch.cat([-ends, inner, ends], dim=-1)
    return knots, knots[..., 1:] - knots[..., :-1]


def _gather(t: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    return t.gather(-1, index[..., None]).squeeze(-1)


def rational_quadratic_spline(
    x: torch.Tensor,
    widths: torch.Tensor,
    heights: torch.Tensor,
    derivatives: torch.Tensor,
    inverse: bool = False,
    tail_bound: float = 5.0,
    min_width: float = MIN_BIN_WIDTH,
    min_height: float = MIN_BIN_HEIGHT,
    min_derivative: float = MIN_DERIVATIVE,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The monotone rational-quadratic spline of Durkan et al. (2019, eqs. 4-6) elementwise,
    the identity outside [-tail_bound, tail_bound] (linear tails).

    x (...); unnormalised widths and heights (..., K) and the K - 1 inner derivatives
    (..., K - 1), for K bins. The boundary derivatives are 1, so the spline joins its tails
    smoothly, and all-zero parameters give the identity. Returns y (...) and the elementwise
    log |dy/dx| (...) of the direction taken (`inverse`: y = g^-1(x), log |dg^-1/dx|).
    """
    xs, widths = _knots(widths, tail_bound, min_width)  # (..., K + 1), (..., K)
    ys, heights = _knots(heights, tail_bound, min_height)
    offset = math.log(math.expm1(1 - min_derivative))  # softplus(offset) + min = 1 at zero
    inner = min_derivative + F.softplus(derivatives + offset)
    ones = torch.ones_like(inner[..., :1])
    slopes = torch.cat([ones, inner, ones], dim=-1)  # (..., K + 1): derivative at each knot

    inside = (x >= -tail_bound) & (x <= tail_bound)
    v = x.clamp(-tail_bound, tail_bound)
    edges = ys if inverse else xs
    bin_ = (v[..., None] >= edges[..., 1:-1]).sum(-1)  # (...) in 0 .. K - 1
    x0, w, y0, h = _gather(xs, bin_), _gather(widths, bin_), _gather(ys, bin_), _gather(heights, bin_)
    d0, d1 = _gather(slopes, bin_), _gather(slopes, bin_ + 1)
    s = h / w  # the bin's mean slope
    bend = d0 + d1 - 2 * s

    if inverse:  # solve the quadratic a xi^2 + b xi + c = 0 for xi in [0, 1]
        dy = v - y0
        a = h * (s - d0) + dy * bend
        b = h * d0 - dy * bend
        c = -s * dy
        root = torch.sqrt((b * b - 4 * a * c).clamp_min(0))
        xi = (2 * c / (-b - root)).clamp(0, 1)
        out = x0 + xi * w
    else:
        xi = (v - x0) / w
        out = y0 + h * (s * xi * xi + d0 * xi * (1 - xi)) / (s + bend * xi * (1 - xi))
    t = xi * (1 - xi)
    denominator = s + bend * t
    slope = s * s * (d1 * xi * xi + 2 * s * t + d0 * (1 - xi) ** 2) / (denominator * denominator)
    logdet = -torch.log(slope) if inverse else torch.log(slope)
    return torch.where(inside, out, x), torch.where(inside, logdet, torch.zeros_like(logdet))


# -- layers ----------------------------------------------------------------------------------
class ActNorm(nn.Module):
    """x = z exp(log_scale) + loc per dimension (Glow's actnorm); `initialize` sets loc and
    scale so that a batch's z has zero mean and unit (or `gain`^2) variance per dimension."""

    def __init__(self, dim: int):
        super().__init__()
        self.loc = nn.Parameter(torch.zeros(dim))
        self.log_scale = nn.Parameter(torch.zeros(dim))

    @torch.no_grad()
    def initialize(self, x: torch.Tensor, gain: float = 1.0) -> None:
        """From a batch x (n, dim) in data direction: z = gain (x - mean) / std."""
        self.loc.copy_(x.mean(0))
        self.log_scale.copy_(x.std(0).clamp_min(1e-6).log() - math.log(gain))

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = z * self.log_scale.exp() + self.loc
        return x, self.log_scale.sum().expand(z.shape[:-1])

    def inverse(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = (x - self.loc) * torch.exp(-self.log_scale)
        return z, (-self.log_scale.sum()).expand(x.shape[:-1])


class LULinear(nn.Module):
    """An invertible linear map ("1x1 convolution" on the flat vector), z = P L U x, with P a
    fixed permutation, L unit lower-triangular and U upper-triangular with diagonal
    sign * exp(log_diag), so log |det df^-1/dx| = sum(log_diag) (Kingma & Dhariwal 2018, §3.2).
    Starts as the LU factors of a random rotation.

    The off-diagonal entries are stored times sqrt(dim): an optimiser step of size lr on every
    entry (Adam's first steps) then moves the map by about lr in operator norm rather than
    lr sqrt(dim), which on a flat vector of 1,024 values is the difference between training
    and diverging."""

    def __init__(self, dim: int):
        super().__init__()
        self.entry_scale = dim**-0.5
        self.lower = nn.Parameter(torch.zeros(dim, dim))  # strictly lower part used
        self.upper = nn.Parameter(torch.zeros(dim, dim))  # strictly upper part used
        self.log_diag = nn.Parameter(torch.zeros(dim))
        self.register_buffer("sign", torch.ones(dim))
        self.register_buffer("perm", torch.arange(dim))
        if not on_meta_device():
            self._start_as_rotation()

    @torch.no_grad()
    def _start_as_rotation(self) -> None:
        q, _ = torch.linalg.qr(torch.randn(self.log_diag.numel(), self.log_diag.numel(), dtype=torch.float64))
        p, lower, upper = torch.linalg.lu(q)
        diag = upper.diagonal()
        self.perm.copy_(p.argmax(1))  # (P v)_i = v[perm[i]]
        self.lower.copy_(lower.tril(-1) / self.entry_scale)
        self.upper.copy_(upper.triu(1) / self.entry_scale)
        self.log_diag.copy_(diag.abs().log())
        self.sign.copy_(diag.sign())

    def _factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        eye = torch.eye(len(self.log_diag), dtype=self.lower.dtype, device=self.lower.device)
        lower = self.lower.tril(-1) * self.entry_scale + eye
        upper = self.upper.triu(1) * self.entry_scale + torch.diag(self.sign * self.log_diag.exp())
        return lower, upper

    def inverse(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        lower, upper = self._factors()
        z = (x @ upper.T @ lower.T)[..., self.perm]
        return z, self.log_diag.sum().expand(x.shape[:-1])

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        lower, upper = self._factors()
        v = torch.empty_like(z)
        v[..., self.perm] = z  # P^-1 z
        flat = v.reshape(-1, v.shape[-1]).T  # (dim, n)
        flat = torch.linalg.solve_triangular(lower, flat, upper=False, unitriangular=True)
        flat = torch.linalg.solve_triangular(upper, flat, upper=True)
        return flat.T.reshape(z.shape), (-self.log_diag.sum()).expand(z.shape[:-1])


class SplineCoupling(nn.Module):
    """A rational-quadratic spline coupling layer (Durkan et al. 2019): the entries of one half
    of the vector (the second half, or the first with `flip`) go through a spline per entry
    whose 3K - 1 parameters an MLP computes from the other half. The MLP's last layer starts at
    zero, so the layer starts as the identity."""

    def __init__(self, dim: int, flip: bool, hidden: tuple[int, ...], bins: int, tail_bound: float):
        super().__init__()
        self.half, self.flip = dim // 2, flip
        n_moved = self.half if flip else dim - self.half
        self.bins, self.tail_bound = bins, tail_bound
        self.net = mlp([dim - n_moved, *hidden, n_moved * (3 * bins - 1)])
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def _transform(self, v: torch.Tensor, inverse: bool) -> tuple[torch.Tensor, torch.Tensor]:
        first, second = v[..., : self.half], v[..., self.half :]
        kept, moved = (second, first) if self.flip else (first, second)
        params = self.net(kept).unflatten(-1, (moved.shape[-1], 3 * self.bins - 1))
        k = self.bins
        out, logdet = rational_quadratic_spline(
            moved, params[..., :k], params[..., k : 2 * k], params[..., 2 * k :], inverse, self.tail_bound
        )
        parts = (out, kept) if self.flip else (kept, out)
        return torch.cat(parts, dim=-1), logdet.sum(-1)

    def inverse(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._transform(x, inverse=False)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._transform(z, inverse=True)


class FlowLayer(nn.Module):
    """One flow layer: actnorm -> LU linear -> spline coupling in the density direction x -> z."""

    def __init__(self, dim: int, flip: bool, hidden: tuple[int, ...], bins: int, tail_bound: float):
        super().__init__()
        self.norm = ActNorm(dim)
        self.linear = LULinear(dim)
        self.coupling = SplineCoupling(dim, flip, hidden, bins, tail_bound)

    def inverse(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        total = torch.zeros(x.shape[:-1], dtype=x.dtype, device=x.device)
        for part in (self.norm, self.linear, self.coupling):
            x, logdet = part.inverse(x)
            total = total + logdet
        return x, total

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        total = torch.zeros(z.shape[:-1], dtype=z.dtype, device=z.device)
        for part in (self.coupling, self.linear, self.norm):
            z, logdet = part.forward(z)
            total = total + logdet
        return z, total


class Flow(nn.Module):
    """`layers` FlowLayers, alternating the coupling's half, then a final actnorm that sets the
    scale of z; no layers is the identity. Vectors (..., dim)."""

    def __init__(self, dim: int, layers: int, hidden: tuple[int, ...], bins: int, tail_bound: float):
        super().__init__()
        self.layers = nn.ModuleList(FlowLayer(dim, i % 2 == 1, hidden, bins, tail_bound) for i in range(layers))
        self.final = ActNorm(dim) if layers else None

    def _parts(self) -> list[nn.Module]:
        return [*self.layers, *([self.final] if self.final is not None else [])]

    def inverse(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """z = f^-1(x) and log |det df^-1/dx|, (..., dim) and (...)."""
        total = torch.zeros(x.shape[:-1], dtype=x.dtype, device=x.device)
        for part in self._parts():
            x, logdet = part.inverse(x)
            total = total + logdet
        return x, total

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x = f(z) and log |det df/dz|, (..., dim) and (...)."""
        total = torch.zeros(z.shape[:-1], dtype=z.dtype, device=z.device)
        for part in reversed(self._parts()):
            z, logdet = part.forward(z)
            total = total + logdet
        return z, total

    @torch.no_grad()
    def initialize(self, x: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
        """Data-dependent initialisation from a batch x (n, dim): each actnorm standardises its
        input, the final one to standard deviation `gain`. Returns z = f^-1(x) of the batch."""
        for layer in self.layers:
            layer.norm.initialize(x)
            x, _ = layer.inverse(x)
        if self.final is not None:
            self.final.initialize(x, gain)
            x, _ = self.final.inverse(x)
        return x
