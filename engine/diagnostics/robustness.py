"""r-robustness of a VAE: how far an input can move before the reconstruction does
(seed001 ch. 6, App. E).

Notation. g is the decoder mean map (`model.decode`), mu(x) and sigma(x) the encoder's
mean and standard deviation, eta ~ N(0, I), and ||.|| the L2 norm over all output values.

- Encoder-noise distortion (seed001 eq. 6.1):
      Delta(x) = g(mu(x) + eta * sigma(x)) - g(mu(x)).
  The model is r-robust to its own noise at x iff p(||Delta(x)|| <= r) > 0.5 (eq. 6.2;
  more generally > m, with 1 - m the risk allowed).
- Minimum r (Algorithm E.1): the smallest r with p(||Delta(x)|| <= r) >= m, which is the
  m-quantile of ||Delta(x)||. Proposition E.1 compares it with sqrt(2 Tr Sigma(x)), where
      Sigma(x) = J_g(mu) diag(sigma^2) J_g(mu)^T,  Tr Sigma = ||J_g(mu) diag(sigma)||_F^2
  and J_g is the decoder Jacobian at the encoder mean. For a linear decoder
  E||Delta||^2 = Tr Sigma, and Markov's inequality gives
      p(||Delta|| > r) <= Tr Sigma / r^2,
  so every r > sqrt(Tr Sigma / (1 - m)) is r-robust at level m: the quantile is at most
  sqrt(Tr Sigma / (1 - m)), which is sqrt(2 Tr Sigma) at m = 0.5. That is an upper bound
  on the minimum r (r > sqrt(2 Tr Sigma) suffices); the thesis calls the same
  inequality a necessary condition, which is the wrong way round. For a nonlinear
  decoder it holds to first order only.
- Margin (eq. 6.3): R^r(x) is the largest ||delta|| with
      p(||Delta(x, delta)|| <= r) >= 0.5,
      Delta(x, delta) = g(mu(x + delta) + eta * sigma(x + delta)) - g(mu(x)),
  for the most damaging delta of that norm.
- Theorem 6.1 (margin bound), for r at which the model is robust unperturbed:
      R^r(x) >= min_i sigma_i(x) * Phi^-1( p(||Delta(x)|| <= r) ) / ||J_mu(x)||_F,
  J_mu the encoder-mean Jacobian d mu / d x. It holds sigma at sigma(x) (only the mean
  moves) and is first order in delta; when p <= 0.5 there is no margin (bound 0).
  Proof in one line: in whitened latent space the worst set of robust latents is a
  half-space, which keeps probability > 0.5 while the shift is below Phi^-1(p), and
  ||J delta|| <= ||J||_F ||delta||.
- Maximum-damage attack (eq. 6.5):
      delta* = argmax_{||delta|| <= R} E_eta ||g(mu(x + delta) + eta * sigma(x + delta)) - g(mu(x))||.

The empirical margin (Algorithm E.2, cleaned up) bisects on R in [0, r_max]: at each R it
runs the attack and estimates p(||Delta(x, delta*)|| <= r) by Monte Carlo. Like the thesis,
the attack moves sigma too (`perturb_std=False` holds it at sigma(x), as the theorem does),
and perturbed inputs are not clipped to the data range.

Models with several latent groups (facets, layers) are treated as one flat latent vector:
the groups' encoder outputs, as `encode` returns them, concatenated in `latent_groups`
order; the noise eta perturbs every group at once and the decoder gets the groups back.
For a hierarchical model that is noise on each layer's posterior along the mean path,
not a sample from the hierarchy. A one-group VAE is the thesis's setting exactly.

All functions take inputs x (batch, *input_shape) and work on the whole batch at once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from scipy.stats import norm as standard_normal

from engine.errors import AtlasError
from engine.models.base import Configured, LatentModel, check_input_shape, model_device
from engine.models.latents import flatten_latents, split_latents

ROWS_PER_CHUNK = 2**24  # decoded values held at once when drawing many samples


# -- the model as a flat latent vector ------------------------------------------------------
class FlatLatents:
    """A model's encoder and decoder on one latent vector: the groups concatenated."""

    def __init__(self, model):
        self.model = model
        self.groups = list(model.latent_groups)
        self.dim = sum(g.size for g in self.groups)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """mu(x), sigma(x), each (batch, dim)."""
        q = self.model.encode(x)
        mean = flatten_latents({name: qn.mean for name, qn in q.items()}, self.groups)
        std = flatten_latents({name: qn.stddev for name, qn in q.items()}, self.groups)
        return mean, std

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """g(z) flattened: z (n, dim) -> (n, output values)."""
        return self.model.decode(split_latents(z, self.groups)).reshape(len(z), -1)


def decoded_distances(flat: FlatLatents, z: torch.Tensor, centre: torch.Tensor) -> torch.Tensor:
    """||g(z) - centre|| for z (n, batch, dim) and centre (batch, outputs): (n, batch),
    decoding a chunk of the n draws at a time."""
    n, batch = z.shape[:2]
    chunk = max(1, ROWS_PER_CHUNK // (batch * centre.shape[-1]))
    out = [
        (flat.decode(part.reshape(-1, flat.dim)).view(len(part), batch, -1) - centre).norm(dim=-1)
        for part in z.split(chunk)
    ]
    return torch.cat(out)


# -- encoder noise alone: Delta(x) ----------------------------------------------------------
def distortion_norms(
    model, x: torch.Tensor, n_samples: int = 1000, generator: torch.Generator | None = None
) -> torch.Tensor:
    """||Delta(x)|| = ||g(mu(x) + eta * sigma(x)) - g(mu(x))|| for n_samples draws of
    eta ~ N(0, I) per input (seed001 eq. 6.1): (n_samples, batch)."""
    check_inputs(model, x, n_samples)
    flat = FlatLatents(model)
    with torch.no_grad():
        mean, std = flat.encode(x)
        eta = torch.randn((n_samples, *mean.shape), generator=generator, device=mean.device, dtype=mean.dtype)
        return decoded_distances(flat, mean + eta * std, flat.decode(mean))


def distortion_quantile(
    model, x: torch.Tensor, m: float = 0.5, n_samples: int = 1000, generator: torch.Generator | None = None
) -> torch.Tensor:
    """The smallest r with p(||Delta(x)|| <= r) >= m, per input (batch,): the m-quantile of
    the distortion norms (Algorithm E.1 without its step search; an order statistic, so
    at least a fraction m of the draws lie within it).

    m = 0.5 is the minimum r for r-robustness; m = 0.9 is the "relatively strict" r at
    which App. E.5 evaluates the margin bound.
    """
    check_probability("m", m)
    norms = distortion_norms(model, x, n_samples, generator)
    return torch.quantile(norms, m, dim=0, interpolation="higher")


def decoder_noise_trace(model, x: torch.Tensor) -> torch.Tensor:
    """Tr Sigma(x) = ||J_g(mu(x)) diag(sigma(x))||_F^2 per input (batch,) (Prop. E.1)."""
    check_inputs(model, x)
    flat = FlatLatents(model)
    with torch.no_grad():
        mean, std = flat.encode(x)
    return jacobian_frobenius_sq(flat.decode, mean, std)


@dataclass
class MinimumR:
    """Per input (batch,): the minimum r at level m and Proposition E.1's comparison."""

    r: torch.Tensor  # m-quantile of ||Delta(x)||: the smallest r-robust r (Algorithm E.1)
    trace_sigma: torch.Tensor  # Tr Sigma(x) = ||J_g diag(sigma)||_F^2
    markov_r: torch.Tensor  # sqrt(Tr Sigma / (1 - m)), sqrt(2 Tr Sigma) at m = 0.5: r >= this suffices (linear g)


def minimum_r(
    model, x: torch.Tensor, m: float = 0.5, n_samples: int = 1000, generator: torch.Generator | None = None
) -> MinimumR:
    """The smallest r at which the model is r-robust to its own noise at level m, and
    the Markov bound sqrt(Tr Sigma / (1 - m)) on it (an upper bound for a linear decoder)."""
    r = distortion_quantile(model, x, m, n_samples, generator)
    trace = decoder_noise_trace(model, x)
    return MinimumR(r=r, trace_sigma=trace, markov_r=(trace / (1.0 - m)).sqrt())


# -- Theorem 6.1 -----------------------------------------------------------------------------
def encoder_jacobian_norm(model, x: torch.Tensor) -> torch.Tensor:
    """||J_mu(x)||_F, J_mu = d mu(x) / d x, per input (batch,)."""
    check_inputs(model, x)
    flat = FlatLatents(model)
    return jacobian_frobenius_sq(lambda v: flat.encode(v)[0], x.detach()).sqrt()


def jacobian_frobenius_sq(f, u: torch.Tensor, scale: torch.Tensor | None = None, chunk: int = 4096) -> torch.Tensor:
    """||J_f(u_b) diag(scale_b)||_F^2 for every row u_b of u (batch, *in_shape), where f maps
    rows to rows, (n, *in_shape) -> (n, *out_shape), and scale (batch, in values) weights
    the input coordinates (None: 1).

    Exact, with one product per output value (rows of J, reverse mode) or per input
    value (columns, two reverse passes: J t is the gradient in w of (J^T w) . t; forward
    mode would cost seconds on its first use in a process), whichever are fewer;
    `chunk` (index, input) pairs go through f at a time.
    """
    batch, n_in = len(u), u[0].numel()
    with torch.no_grad():
        n_out = f(u[:1]).numel()
    rows = n_out < n_in
    total = torch.zeros(batch, dtype=u.dtype, device=u.device)
    for idx in torch.arange(n_out if rows else n_in, device=u.device).split(max(1, chunk // batch)):
        k = len(idx)
        us = u.repeat(k, *[1] * (u.dim() - 1)).requires_grad_(True)  # (k * batch, *in_shape), rows ordered (k, b)
        with torch.enable_grad():
            out = f(us).reshape(k, batch, -1)
            if rows:  # copy i of every input asks for the gradient of output idx[i]
                (parts,) = torch.autograd.grad(out[torch.arange(k), :, idx].sum(), us)
                parts = parts.reshape(k, batch, -1) * (1.0 if scale is None else scale)
            else:  # copy i of every input pushes forward the tangent scale_b[idx[i]] e_idx[i]
                tangent = torch.zeros(k, batch, n_in, dtype=u.dtype, device=u.device)
                tangent[torch.arange(k), :, idx] = 1.0 if scale is None else scale[:, idx].T
                w = torch.zeros_like(out, requires_grad=True)
                (vjp,) = torch.autograd.grad(out, us, w, create_graph=True)
                (parts,) = torch.autograd.grad(vjp, w, tangent.view_as(us))
        total += parts.pow(2).sum((0, 2))
    return total


@dataclass
class MarginBound:
    """Theorem 6.1 per input (batch,)."""

    p_within: torch.Tensor  # p(||Delta(x)|| <= r), Monte Carlo
    min_std: torch.Tensor  # min_i sigma_i(x)
    jacobian_norm: torch.Tensor  # ||J_mu(x)||_F
    bound: torch.Tensor  # min sigma * Phi^-1(p) / ||J||_F; 0 where p <= 0.5


def margin_bound(
    model, x: torch.Tensor, r, n_samples: int = 1000, generator: torch.Generator | None = None
) -> MarginBound:
    """The lower bound of seed001 Theorem 6.1 on the margin R^r(x).

    r: a number or one per input (batch,). p is estimated from n_samples draws and kept
    below (n + 0.5) / (n + 1), the Monte Carlo resolution, so that p = 1 gives a finite
    Phi^-1. First order in delta, with sigma held at sigma(x).
    """
    radius = check_radius(r, len(x), x)
    norms = distortion_norms(model, x, n_samples, generator)
    p = (norms <= radius).to(x.dtype).mean(0)
    with torch.no_grad():
        min_std = FlatLatents(model).encode(x)[1].min(-1).values
    jacobian = encoder_jacobian_norm(model, x)
    p_clipped = p.clamp(max=(n_samples + 0.5) / (n_samples + 1)).double().cpu().numpy()
    probit = torch.as_tensor(standard_normal.ppf(p_clipped), dtype=x.dtype, device=x.device)
    bound = torch.where(p > 0.5, min_std * probit / jacobian, torch.zeros_like(p))
    return MarginBound(p_within=p, min_std=min_std, jacobian_norm=jacobian, bound=bound)


# -- the empirical margin (Algorithm E.2) -------------------------------------------------
@dataclass
class EmpiricalMargin:
    """Algorithm E.2 per input."""

    margin: torch.Tensor  # (batch,) largest R found with p(||Delta(x, delta*)|| <= r) >= 0.5; 0 if none
    censored: torch.Tensor  # (batch,) bool: still robust at r_max, so the margin is at least r_max
    delta: torch.Tensor  # (batch, *input_shape) the attack at the margin (zeros where the margin is 0)
    p_within: torch.Tensor  # (batch,) p(||Delta(x, delta)|| <= r) at that attack


def empirical_margin(
    model,
    x: torch.Tensor,
    r,
    r_max: float = 10.0,
    n_samples: int = 1000,
    steps: int = 20,
    restarts: int = 5,
    bisections: int = 12,
    perturb_std: bool = True,
    generator: torch.Generator | None = None,
) -> EmpiricalMargin:
    """The margin R^r(x) by Monte Carlo (seed001 Algorithm E.2, eq. 6.3, 6.5).

    Each input has its own bracket [lo, hi], starting at [0, r_max] and halved
    `bisections` times (resolution r_max / 2^bisections). At a radius R the maximum-damage
    attack `max_damage_attack` finds delta with ||delta|| <= R, and p(||Delta(x, delta)|| <= r)
    is estimated from n_samples draws of eta, the same draws at every R (common random
    numbers, so p varies with R only through delta); R is kept when p >= 0.5.
    An input not robust unperturbed (p < 0.5 at delta = 0) has margin 0; one still robust
    at r_max is `censored`. Bisection takes p to fall with R, which holds when the attack
    finds the worst delta. Perturbed inputs are not clipped to the data range.
    perturb_std: the attack moves sigma(x + delta) as well as mu (Algorithm E.2); False
    keeps sigma(x), as Theorem 6.1 does.
    """
    radius = check_radius(r, len(x), x)
    check_inputs(model, x, n_samples)
    check_positive("r_max", r_max)
    for name, value in (("steps", steps), ("restarts", restarts), ("bisections", bisections)):
        if not isinstance(value, int) or value < 1:
            raise AtlasError(f"{name} must be a positive integer, got {value!r}")
    batch = len(x)
    p_within = within_probability(model, x, radius, n_samples, perturb_std, generator)

    def attack(R, start=None):
        return max_damage_attack(model, x, R, steps, restarts, perturb_std, start, generator)

    p0 = p_within(torch.zeros_like(x))
    robust = p0 >= 0.5
    delta = attack(torch.full((batch,), float(r_max), dtype=x.dtype, device=x.device))
    p_hi = p_within(delta)
    censored = robust & (p_hi >= 0.5)
    lo = torch.where(censored, float(r_max), 0.0).to(x.dtype)
    hi = torch.full_like(lo, float(r_max))
    best, p_best = torch.where(bcast(censored, x), delta, 0.0), torch.where(censored, p_hi, p0)
    searching = robust & ~censored
    for _ in range(bisections):
        mid = (lo + hi) / 2
        delta = attack(mid, start=delta)
        p = p_within(delta)
        keep = searching & (p >= 0.5)
        drop = searching & ~keep
        lo, hi = torch.where(keep, mid, lo), torch.where(drop, mid, hi)
        best, p_best = torch.where(bcast(keep, x), delta, best), torch.where(keep, p, p_best)
    return EmpiricalMargin(margin=lo, censored=censored, delta=best, p_within=p_best)


def within_probability(
    model,
    x: torch.Tensor,
    radius: torch.Tensor,
    n_samples: int,
    perturb_std: bool = True,
    generator: torch.Generator | None = None,
):
    """delta (batch, *shape) -> p(||Delta(x, delta)|| <= radius) per input (batch,), by Monte
    Carlo over n_samples draws of eta fixed once (common random numbers: the estimate varies
    with delta only through the model). perturb_std=False holds sigma at sigma(x)."""
    flat = FlatLatents(model)
    with torch.no_grad():
        mean0, std0 = flat.encode(x)
        centre = flat.decode(mean0)
    eta = torch.randn((n_samples, len(x), flat.dim), generator=generator, device=x.device, dtype=x.dtype)

    def p_within(delta: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            mean, std = flat.encode(x + delta)
            z = mean + eta * (std if perturb_std else std0)
            return (decoded_distances(flat, z, centre) <= radius).to(x.dtype).mean(0)

    return p_within


def robustness_curve(
    model,
    x: torch.Tensor,
    r,
    radii,
    n_samples: int = 1000,
    steps: int = 20,
    restarts: int = 5,
    perturb_std: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """p(||Delta(x, delta*)|| <= r) against ||delta||: for each norm in `radii` (ascending,
    >= 0) the maximum-damage attack of that norm, then the Monte Carlo probability, shape
    (len(radii), batch). The curve of seed001 Fig. 6.5 (there along a fixed direction, here
    along the worst one); where it crosses 0.5 is the margin R^r(x)."""
    radius = check_radius(r, len(x), x)
    check_inputs(model, x, n_samples)
    radii = [float(v) for v in radii]
    if not radii or any(not math.isfinite(v) or v < 0 for v in radii) or radii != sorted(radii):
        raise AtlasError(f"radii must be ascending finite numbers >= 0, got {radii}")
    p_within = within_probability(model, x, radius, n_samples, perturb_std, generator)
    out, delta = [], None
    # largest first: the damage gradient stands clearest of the noise at a large radius, and
    # each smaller attack starts from the direction found there (as the margin's bisection does)
    for R in reversed(radii):
        if R == 0:
            out.append(p_within(torch.zeros_like(x)))
            continue
        full = torch.full((len(x),), R, dtype=x.dtype, device=x.device)
        delta = max_damage_attack(model, x, full, steps, restarts, perturb_std, delta, generator)
        out.append(p_within(delta))
    return torch.stack(out[::-1])


def max_damage_attack(
    model,
    x: torch.Tensor,
    radius: torch.Tensor,
    steps: int = 20,
    restarts: int = 5,
    perturb_std: bool = True,
    start: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    n_select: int = 64,
) -> torch.Tensor:
    """delta (batch, *input_shape) with ||delta|| <= radius (batch,) maximising
    E_eta ||g(mu(x + delta) + eta * sigma(x + delta)) - g(mu(x))|| (seed001 eq. 6.5).

    Projected gradient ascent: `restarts` starts per input, uniformly on the sphere of
    the radius (the first along `start`, a previous attack, when given); `steps` steps
    of length 2.5 * radius / steps along the L2-normalised gradient of the one-draw
    objective with a fresh eta each step (as in the thesis), each followed by projection
    onto the ball. The restart with the largest damage averaged over n_select shared
    draws of eta is returned.
    """
    flat = FlatLatents(model)
    with torch.no_grad():
        mean0, std0 = flat.encode(x)
        centre = flat.decode(mean0)
    batch, shape = len(x), x.shape[1:]
    scale = radius.view(1, batch, *[1] * len(shape))
    delta = torch.randn((restarts, *x.shape), generator=generator, device=x.device, dtype=x.dtype)
    if start is not None:
        delta[0] = start
    delta = scale * delta / flat_norm(delta).clamp_min(1e-12)
    step = 2.5 * scale / steps
    xs = x.expand(restarts, *x.shape)
    std_fixed = std0.expand(restarts, batch, -1).reshape(-1, flat.dim)

    def damage(delta, eta):  # delta (restarts, batch, *shape), eta (n, restarts * batch, dim)
        mean, std = flat.encode((xs + delta).reshape(-1, *shape))
        z = mean + eta * (std if perturb_std else std_fixed)
        return decoded_distances(flat, z, centre.repeat(restarts, 1)).view(len(eta), restarts, batch)

    for _ in range(steps):
        eta = torch.randn((1, restarts * batch, flat.dim), generator=generator, device=x.device, dtype=x.dtype)
        delta.requires_grad_(True)
        with torch.enable_grad():
            (grad,) = torch.autograd.grad(damage(delta, eta).sum(), delta)
        delta = delta.detach() + step * grad / flat_norm(grad).clamp_min(1e-12)
        delta = delta * (scale / flat_norm(delta).clamp_min(1e-12)).clamp(max=1.0)
    with torch.no_grad():
        eta = torch.randn((n_select, 1, batch, flat.dim), generator=generator, device=x.device, dtype=x.dtype)
        eta = eta.expand(-1, restarts, -1, -1).reshape(n_select, restarts * batch, flat.dim)
        chosen = damage(delta, eta).mean(0).argmax(0)  # (batch,)
    return delta[chosen, torch.arange(batch)]


def flat_norm(t: torch.Tensor) -> torch.Tensor:
    """L2 norm over the input dimensions of (restarts, batch, *shape), kept broadcastable."""
    return t.flatten(2).norm(dim=-1).view(*t.shape[:2], *[1] * (t.dim() - 2))


def bcast(mask: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A (batch,) mask shaped to broadcast over x (batch, *shape)."""
    return mask.view(-1, *[1] * (x.dim() - 1))


# -- everything for a batch of inputs ------------------------------------------------------
@dataclass
class InputRobustness:
    """The r-robustness numbers of one input."""

    r: float  # the distortion radius used
    p_within: float  # p(||Delta(x)|| <= r)
    min_std: float  # min_i sigma_i(x)
    jacobian_norm: float  # ||J_mu(x)||_F
    bound: float  # Theorem 6.1's lower bound on the margin
    empirical_margin: float  # Algorithm E.2's estimate of R^r(x)
    margin_censored: bool  # robust even at r_max: the margin is at least empirical_margin
    minimum_r: float  # m = 0.5 quantile of ||Delta(x)||
    markov_r: float  # sqrt(2 Tr Sigma(x)), Prop. E.1: an upper bound on minimum_r for a linear decoder
    trace_sigma: float  # Tr Sigma(x)


def robustness_report(
    model,
    x: torch.Tensor,
    r=None,
    p_target: float = 0.9,
    n_samples: int = 1000,
    r_max: float = 10.0,
    seed: int = 0,
    **attack,
) -> list[InputRobustness]:
    """All the r-robustness numbers for each input of x (batch, *input_shape).

    r: a number, one per input, or None for the r at which p(||Delta(x)|| <= r) =
    p_target per input (App. E.5 uses 0.9). `attack` goes to `empirical_margin`
    (steps, restarts, bisections, perturb_std). The same seed gives the same numbers.
    """
    check_inputs(model, x, n_samples)
    g = torch.Generator(device=model_device(model)).manual_seed(seed)
    radius = distortion_quantile(model, x, p_target, n_samples, g) if r is None else check_radius(r, len(x), x)
    bound = margin_bound(model, x, radius, n_samples, g)
    smallest = minimum_r(model, x, 0.5, n_samples, g)
    empirical = empirical_margin(model, x, radius, r_max, n_samples, generator=g, **attack)
    return [
        InputRobustness(
            r=float(radius[i]),
            p_within=float(bound.p_within[i]),
            min_std=float(bound.min_std[i]),
            jacobian_norm=float(bound.jacobian_norm[i]),
            bound=float(bound.bound[i]),
            empirical_margin=float(empirical.margin[i]),
            margin_censored=bool(empirical.censored[i]),
            minimum_r=float(smallest.r[i]),
            markov_r=float(smallest.markov_r[i]),
            trace_sigma=float(smallest.trace_sigma[i]),
        )
        for i in range(len(x))
    ]


# -- checks at the boundary --------------------------------------------------------------
def check_inputs(model: LatentModel, x, n_samples: int = 2) -> None:
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.dim() < 2 or len(x) == 0:
        got = f"a {x.dtype} tensor of shape {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
        raise AtlasError(f"inputs must be a float tensor (batch, *input_shape) with at least one row, got {got}")
    if isinstance(model, Configured):
        check_input_shape(x, model.config.input_shape)
    if not torch.isfinite(x).all():
        raise AtlasError("inputs contain NaN or infinite values")
    if not isinstance(n_samples, int) or isinstance(n_samples, bool) or n_samples < 2:
        raise AtlasError(
            f"n_samples must be an integer of at least 2 (the Monte Carlo draws per input), got {n_samples!r}"
        )


def check_probability(name: str, value) -> None:
    if not isinstance(value, (int, float)) or not 0.0 < value < 1.0:
        raise AtlasError(f"{name} must be a probability strictly between 0 and 1, got {value!r}")


def check_positive(name: str, value) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not (math.isfinite(value) and value > 0):
        raise AtlasError(f"{name} must be a finite number > 0, got {value!r}")


def check_radius(r, batch: int, x: torch.Tensor) -> torch.Tensor:
    """r as a tensor (batch,): a number for every input or one number per input, all > 0."""
    try:
        radius = torch.as_tensor(r, dtype=x.dtype, device=x.device)
    except (TypeError, ValueError, RuntimeError) as err:
        raise AtlasError(f"r must be a number or one number per input, got {r!r}") from err
    if radius.dim() == 0:
        radius = radius.expand(batch)
    if radius.shape != (batch,):
        raise AtlasError(f"r must be one number or one per input ({batch}), got shape {tuple(radius.shape)}")
    if not (torch.isfinite(radius) & (radius > 0)).all():
        raise AtlasError(f"the distortion radius r must be finite and > 0, got {radius.tolist()}")
    return radius
