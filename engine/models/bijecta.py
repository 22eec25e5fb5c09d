"""Bijecta: linear ICA on a normalising flow (seed001 ch. 4, spec §3).

The generative model, for data x of D values and d_s sources (d_s <= D):

    s ~ p(s) = prod_i GG(s_i | 0, 1, rho)          (rho = 10 quasi-uniform, rho = 1 Laplace)
    z | s ~ N(A s + c, diag sigma^2)                (A: D x d_s mixing matrix, learnt)
    x = f(z)                                        (an RQS flow, engine.models.flows)

and the posterior q(s | z) = Laplace(A+ (z - c), b) with the unmixing matrix A+ either

- "jl":     the fixed Johnson-Lindenstrauss matrix W of seed001 eq. 4.11 (entries +-1/sqrt(d_s),
            drawn once from `jl_seed`, a buffer, so checkpoints keep it): Bijecta (Def. 4.4);
- "cayley": Phi R Lambda Q of eqs. 4.12-4.13, the stand-alone linear ICA: Q that fixed JL
            matrix, Lambda a learnt positive diagonal, R = (I - M)^-1 (I + M) with
            M = (L - L^T) / 2 a rotation by the Cayley transform, and Phi a learnt diagonal
            (the ½ d_s (d_s + 3) parameters of §4.7.1 count M's d_s (d_s - 1) / 2, Lambda's d_s
            and Phi's d_s).

The offset c (the mean of z, which the spec's N(A s, Sigma) leaves out) lets the linear model
without a flow fit data whose mean is not zero; with a flow it is redundant but harmless.

The bound (seed001 eq. 4.10), per example, with one or k draws s ~ q(s | z):

    L(x) = E_q[log N(z; A s + c, Sigma)] - KL(q(s | z) || p(s)) + log |det dz/dx|

The KL between a Laplace with a non-zero location and a GG has no closed form, so it is the
Monte Carlo estimate log q(s) - log p(s) at the same draws. `ELBOResult.recon` holds
log p(x | s) = log N(z; A s + c, Sigma) + log |det dz/dx|, so that total = recon - KL as the
interface says; the training metrics report the two parts apart ("recon" and "logdet").

Data in [0, 1] (digits, Fashion-MNIST, shapes) is made continuous first:

- `dequantise`: x~ = (255 x + u) / 256 with u ~ U(0, 1) while training (Theis et al. 2016), and
  the bin centre u = 1/2 otherwise (elbo, encode, log_joint in eval mode are deterministic);
- `logit_preprocess`: y = logit(eps + (1 - 2 eps) x~), eps = 0.05 (RealNVP's, seed001 §3.4),
  whose log-determinant is part of log |det dz/dx|.

So the bound is on log p(x~), the density of x~ on [0, 1]^D. `bits_per_dim(x, k)` reports

    bpd = -(L(x~) - D log 256) / (D log 2),   x~ = (255 x + u) / 256, u ~ U(0, 1) drawn once,

the bits per dimension of x on 256 levels: log P(x) >= E_u[log p(x~)] - D log 256 (each level a
bin of width 1/256), L(x~) <= log p(x~) the k-sample bound. Real-valued data (whitened
patches) needs neither step: the trainer turns both off for data outside [0, 1].

`l1_weight` adds the spec's L1 penalty on the reconstruction error of x, sum_j |x_j - f(A s + c)_j|
with the same draw s, to the training loss only (§3.1).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Literal

import torch
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
from engine.models.blocks import MAX_LATENT_DIM, MAX_LAYERS, MAX_WIDTH, check_size
from engine.models.flows import Flow, on_meta_device
from engine.models.latents import checked_latents
from engine.models.posteriors import LOG_SCALE_RANGE, GeneralisedGaussian, Laplace
from engine.numerics import logmeanexp
from engine.randomness import random_stream, stream

LOGIT_EPS = 0.05  # RealNVP's preprocessing, seed001 §3.4
LEVELS = 256  # dequantisation bins of data in [0, 1]
MAX_BINS = 64
MAX_POWER = 100.0
INIT_EXAMPLES = 512  # examples the data-dependent initialisation reads
INIT_POSTERIOR_SCALE = 0.1  # b at the start, a tenth of the prior's unit scale
UNMIXINGS = ("jl", "cayley")


def jl_matrix(sources: int, dim: int, seed: int) -> torch.Tensor:
    """seed001 eq. 4.11: (sources, dim) entries +1/sqrt(sources) or -1/sqrt(sources), each with
    probability 1/2 (Achlioptas 2003), from a generator of its own seeded with `seed`.
    E[W^T W] = I_dim, so E|W z|^2 = |z|^2; the rows are nearly orthogonal for dim >> sources,
    W W^T = (dim / sources) (I + O(1 / sqrt(dim)))."""
    g = torch.Generator().manual_seed(int(seed))
    signs = torch.randint(0, 2, (sources, dim), generator=g, device="cpu", dtype=torch.float32) * 2 - 1
    return signs / math.sqrt(sources)


def cayley(l: torch.Tensor) -> torch.Tensor:
    """seed001 eq. 4.13: R = (I - M)^-1 (I + M), M = (L - L^T) / 2; R is in SO(d)."""
    m = 0.5 * (l - l.T)
    eye = torch.eye(len(l), dtype=l.dtype, device=l.device)
    return torch.linalg.solve(eye - m, eye + m)


def _check_bool(name: str, value: object) -> None:
    if not isinstance(value, bool):
        raise AtlasError(f"{name} must be true or false, got {value!r}")


def _check_number(name: str, value: object, low: float, high: float, low_open: bool = False) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = (low < value if low_open else low <= value) and value <= high
    if not ok:
        interval = f"{'(' if low_open else '['}{low:g}, {high:g}]"
        raise AtlasError(f"{name} must be a number in {interval}, got {value!r}")
    return float(value)


@dataclass
class BijectaConfig:
    input_shape: tuple[int, ...] = (1, 8, 8)  # (C, H, W) or (D,); the flow works on the flat vector
    source_dim: int = 2  # d_s <= D
    prior_power: float = 10.0  # rho of the GG prior: 10 quasi-uniform, 1 Laplace, 2 Gaussian
    flow_layers: int = 2  # 0: no flow, stand-alone linear ICA
    coupling_hidden: tuple[int, ...] = (256, 256)  # the spline-parameter MLP's widths
    spline_bins: int = 4  # K, seed001 §3.4
    tail_bound: float = 5.0  # B: the splines are the identity outside [-B, B]
    unmixing: Literal["jl", "cayley"] = "jl"
    jl_seed: int = 0  # the draw of the fixed JL matrix
    dequantise: bool = True  # uniform dequantisation of data in [0, 1] on 256 levels
    logit_preprocess: bool = True  # y = logit(0.05 + 0.9 x) before the flow
    l1_weight: float = 0.0  # weight of the L1 reconstruction penalty in x (training only)
    family: str = field(default="bijecta", init=False)

    def __post_init__(self):
        if not isinstance(self.input_shape, (list, tuple)) or not self.input_shape:
            raise AtlasError(f"input_shape must be a list of sizes, e.g. [1, 28, 28], got {self.input_shape!r}")
        for s in self.input_shape:
            check_size("an input dimension", s, MAX_WIDTH)
        self.input_shape = tuple(self.input_shape)
        if not isinstance(self.coupling_hidden, (list, tuple)):
            raise AtlasError(f"coupling_hidden must be a list of widths, e.g. [256, 256], got {self.coupling_hidden!r}")
        for h in self.coupling_hidden:
            check_size("a coupling_hidden width", h, MAX_WIDTH)
        self.coupling_hidden = tuple(self.coupling_hidden)
        dim = math.prod(self.input_shape)
        check_size("source_dim", self.source_dim, MAX_LATENT_DIM)
        if self.source_dim > dim:
            raise AtlasError(
                f"source_dim must be at most the data's {dim} values (non-square ICA: d_s <= d_x), "
                f"got {self.source_dim}"
            )
        self.prior_power = _check_number("prior_power", self.prior_power, 0.0, MAX_POWER, low_open=True)
        if isinstance(self.flow_layers, bool) or not isinstance(self.flow_layers, int):
            raise AtlasError(f"flow_layers must be an integer between 0 and {MAX_LAYERS}, got {self.flow_layers!r}")
        if not 0 <= self.flow_layers <= MAX_LAYERS:
            raise AtlasError(f"flow_layers must be an integer between 0 and {MAX_LAYERS}, got {self.flow_layers!r}")
        if self.flow_layers and dim < 2:
            raise AtlasError("a flow needs at least 2 data values to split in its couplings; use flow_layers = 0")
        if isinstance(self.spline_bins, bool) or not isinstance(self.spline_bins, int):
            raise AtlasError(f"spline_bins must be an integer between 2 and {MAX_BINS}, got {self.spline_bins!r}")
        if not 2 <= self.spline_bins <= MAX_BINS:
            raise AtlasError(f"spline_bins must be an integer between 2 and {MAX_BINS}, got {self.spline_bins!r}")
        self.tail_bound = _check_number("tail_bound", self.tail_bound, 0.0, 1e3, low_open=True)
        if self.unmixing not in UNMIXINGS:
            raise AtlasError(
                f"unknown unmixing {self.unmixing!r}; choose 'jl' (the fixed JL matrix, Bijecta) or "
                "'cayley' (Phi R Lambda Q, the stand-alone linear ICA)"
            )
        if isinstance(self.jl_seed, bool) or not isinstance(self.jl_seed, int) or self.jl_seed < 0:
            raise AtlasError(f"jl_seed must be an integer >= 0, got {self.jl_seed!r}")
        _check_bool("dequantise", self.dequantise)
        _check_bool("logit_preprocess", self.logit_preprocess)
        self.l1_weight = _check_number("l1_weight", self.l1_weight, 0.0, 1e6)

    @classmethod
    def fields_from_data(cls, train_data) -> dict:
        """Real-valued data (outside [0, 1], e.g. whitened patches) is neither dequantised nor
        logit-transformed: both steps assume values in [0, 1]."""
        low, high = train_data.value_range
        return {"dequantise": False, "logit_preprocess": False} if low < 0 or high > 1 else {}

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        prior = {1.0: "Laplace", 2.0: "Gaussian"}.get(self.prior_power, f"GG (ρ = {self.prior_power:g})")
        unmixing = "the fixed JL unmixing" if self.unmixing == "jl" else "the JL-Cayley unmixing ΦRΛQ"
        flow = (
            f"on a {self.flow_layers}-layer RQS flow ({self.spline_bins} bins, MLP couplings)"
            if self.flow_layers
            else "without a flow (linear ICA)"
        )
        steps = [s for s, on in (("dequantised", self.dequantise), ("logit-preprocessed", self.logit_preprocess)) if on]
        data = f"; data {' and '.join(steps)}" if steps else ""
        return f"{self.source_dim} {prior} sources, linear ICA with {unmixing} {flow}{data}"


class Bijecta(nn.Module):
    """Linear ICA on a normalising flow, one latent group "s" of the d_s sources."""

    def __init__(self, config: BijectaConfig):
        super().__init__()
        self.config = config
        dim, d = math.prod(config.input_shape), config.source_dim
        self.dim = dim
        self.flow = Flow(dim, config.flow_layers, config.coupling_hidden, config.spline_bins, config.tail_bound)
        self.register_buffer("jl", jl_matrix(d, dim, config.jl_seed).to(torch.empty(0).device))  # W or Q: (d_s, D)
        self.mixing = nn.Parameter(torch.zeros(dim, d))  # A
        self.offset = nn.Parameter(torch.zeros(dim))  # c
        self.log_sigma = nn.Parameter(torch.zeros(dim))
        self.log_b = nn.Parameter(torch.full((d,), math.log(INIT_POSTERIOR_SCALE)))
        if config.unmixing == "cayley":
            self.cayley_l = nn.Parameter(0.1 * torch.randn(d, d))  # L; R = I at L = 0, a start off the symmetric point
            self.log_lambda = nn.Parameter(torch.full((d,), 0.5 * math.log(d / dim)))  # rows of Lambda Q of unit norm
            self.phi = nn.Parameter(torch.ones(d))
        if not on_meta_device():
            with torch.no_grad():
                self.mixing.copy_(torch.linalg.pinv(self.unmixing_matrix()))
        self.latent_groups = [LatentGroup("s", (d,), "global")]

    # -- the linear ICA part --------------------------------------------------------------
    def rotation(self) -> torch.Tensor:
        """R of the "cayley" unmixing, (d_s, d_s)."""
        return cayley(self.cayley_l)

    def unmixing_matrix(self) -> torch.Tensor:
        """A+ (d_s, D): W (eq. 4.11) or Phi R Lambda Q (eq. 4.12)."""
        if self.config.unmixing == "jl":
            return self.jl
        return self.phi[:, None] * (self.rotation() @ (self.log_lambda.exp()[:, None] * self.jl))

    def prior(self) -> GeneralisedGaussian:
        zero = torch.zeros(self.config.source_dim, dtype=self.mixing.dtype, device=self.mixing.device)
        return GeneralisedGaussian(zero, 1.0, self.config.prior_power)

    def posterior(self, z: torch.Tensor) -> Laplace:
        """q(s | z) = Laplace(A+ (z - c), b) for z (batch, D)."""
        loc = (z - self.offset) @ self.unmixing_matrix().T
        scale = self.log_b.clamp(*LOG_SCALE_RANGE).exp().expand_as(loc)
        return Laplace(loc, scale)

    def log_likelihood_z(self, z: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """log N(z; A s + c, diag sigma^2) summed over D; z (batch, D), s (..., batch, d_s) -> (..., batch)."""
        log_sigma = self.log_sigma.clamp(*LOG_SCALE_RANGE)
        mean = s @ self.mixing.T + self.offset
        r = (z - mean) * torch.exp(-log_sigma)
        return -0.5 * (r * r).sum(-1) - log_sigma.sum() - 0.5 * self.dim * math.log(2 * math.pi)

    # -- preprocessing and the flow --------------------------------------------------------
    def _preprocess(self, x: torch.Tensor, noise: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """x (batch, *shape) -> the flow's input y (batch, D) and log |det dy/dx~| (batch,)."""
        cfg = self.config
        y = x.reshape(len(x), self.dim)
        if cfg.dequantise:
            u = torch.rand(y.shape, generator=stream(), dtype=y.dtype, device=y.device) if noise else 0.5
            y = ((LEVELS - 1) * y + u) / LEVELS
        logdet = torch.zeros(len(x), dtype=y.dtype, device=y.device)
        if cfg.logit_preprocess:
            p = LOGIT_EPS + (1 - 2 * LOGIT_EPS) * y
            logdet = (math.log(1 - 2 * LOGIT_EPS) - torch.log(p) - torch.log1p(-p)).sum(-1)
            y = torch.log(p) - torch.log1p(-p)
        return y, logdet

    def _postprocess(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The inverse of _preprocess at the bin centre: y (..., D) -> x (..., D), and
        log |det dx~/dy| (...)."""
        cfg = self.config
        logdet = torch.zeros(y.shape[:-1], dtype=y.dtype, device=y.device)
        if cfg.logit_preprocess:
            p = torch.sigmoid(y)
            logdet = (torch.log(p) + torch.log1p(-p) - math.log(1 - 2 * LOGIT_EPS)).sum(-1)
            y = (p - LOGIT_EPS) / (1 - 2 * LOGIT_EPS)
        if cfg.dequantise:
            y = (LEVELS * y - 0.5) / (LEVELS - 1)
        return y, logdet

    def flow_inverse(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """z = f^-1(x) (batch, D) for data x (batch, *input_shape), and log |det dz/dx~| (batch,),
        preprocessing included; x~ is the dequantised x (the bin centre outside training)."""
        check_input_shape(x, self.config.input_shape)
        y, logdet_pre = self._preprocess(x, noise=self.training and self.config.dequantise)
        z, logdet = self.flow.inverse(y)
        return z, logdet + logdet_pre

    def flow_forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x = f(z) (..., *input_shape) for z (..., D), and log |det dx~/dz| (...), the inverse of
        flow_inverse (values may leave [0, 1] slightly; decode clamps them)."""
        if z.shape[-1] != self.dim:
            raise AtlasError(f"flow_forward takes vectors of the data's {self.dim} values, got shape {tuple(z.shape)}")
        lead = z.shape[:-1]
        y, logdet = self.flow.forward(z.reshape(-1, self.dim))
        x, logdet_post = self._postprocess(y)
        return x.reshape(*lead, *self.config.input_shape), (logdet + logdet_post).reshape(lead)

    # -- the LatentModel interface ------------------------------------------------------------
    def encode(self, x: torch.Tensor) -> dict[str, Laplace]:
        z, _ = self.flow_inverse(x)
        return {"s": self.posterior(z)}

    def decode(self, s: Latents | torch.Tensor) -> torch.Tensor:
        """f(A s + c), the mean of p(z | s) pushed through the flow, in data space (..., *input_shape)."""
        s = checked_latents(self, s)["s"]
        x, _ = self.flow_forward(s @ self.mixing.T + self.offset)
        return x.clamp(0, 1) if self.config.logit_preprocess or self.config.dequantise else x

    def sample(self, n: int, temperature: float = 1.0, generator: torch.Generator | None = None) -> torch.Tensor:
        """decode(temperature * s) for n draws s ~ p(s); the same `generator` state draws the same s."""
        g = stream(generator)
        seed = int(torch.randint(0, 2**62, (1,), generator=g, device=g.device if g is not None else "cpu"))
        with random_stream(seed, model_device(self)):
            s = self.prior().rsample(n)
        return self.decode(temperature * s)

    def elbo(self, x: torch.Tensor, k: int = 1, chunk: int | None = None) -> ELBOResult:
        """The bound of eq. 4.10 per example (k = 1) or its importance-weighted form (k > 1):
        log mean_i exp(log p(z | s_i) + log p(s_i) - log q(s_i | z)) + log |det dz/dx|."""
        check_importance_samples(k)
        log_w, recon, kl = self.log_weights(x, k, chunk)
        if k == 1:
            return ELBOResult(total=log_w[0], recon=recon[0], kl={"s": kl[0]})
        return ELBOResult(total=logmeanexp(log_w, dim=0), recon=recon.mean(0), kl={"s": kl.mean(0)}, k=k)

    def log_weights(
        self, x: torch.Tensor, k: int, chunk: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """log w_i = log p(x, s_i) - log q(s_i | x) for k draws s_i ~ q(s | x), with its parts
        log p(x | s_i) (the flow's log-det included) and log q(s_i | x) - log p(s_i); each (k, batch)."""
        z, logdet = self.flow_inverse(x)
        return self._log_weights(z, logdet, k, chunk)

    def _log_weights(self, z, logdet, k, chunk=None):
        q, prior = self.posterior(z), self.prior()
        chunk = chunk or max(1, 2**24 // max(1, len(z) * self.dim))
        recon, kl = [], []
        for start in range(0, k, chunk):
            s = q.rsample(min(chunk, k - start))  # (c, batch, d_s)
            recon.append(self.log_likelihood_z(z, s) + logdet)
            kl.append(q.log_prob(s) - prior.log_prob(s))
        recon, kl = torch.cat(recon), torch.cat(kl)
        return recon - kl, recon, kl

    def log_joint(self, x: torch.Tensor, s: Latents | torch.Tensor) -> torch.Tensor:
        """log p(x, s) = log N(f^-1(x); A s + c, Sigma) + log p(s) + log |det dz/dx|, (..., batch)."""
        s = checked_latents(self, s)["s"]
        z, logdet = self.flow_inverse(x)
        return self.log_likelihood_z(z, s) + self.prior().log_prob(s) + logdet

    def bits_per_dim(self, x: torch.Tensor, k: int = 1) -> torch.Tensor:
        """Bits per dimension of x in [0, 1] on 256 levels, (batch,): -(L - D log 256) / (D log 2)
        with L the k-sample bound on log p(x~) at one uniform dequantisation x~ = (255 x + u) / 256.
        An estimate of an upper bound (module docstring)."""
        if not self.config.dequantise:
            raise AtlasError(
                "bits per dimension count 256 levels of data in [0, 1], and this model does not dequantise "
                "(real-valued data); read its elbo in nats instead"
            )
        check_importance_samples(k)
        check_input_shape(x, self.config.input_shape)
        y, logdet_pre = self._preprocess(x, noise=True)
        z, logdet = self.flow.inverse(y)
        log_w, _, _ = self._log_weights(z, logdet + logdet_pre, k)
        bound = logmeanexp(log_w, dim=0)
        return -(bound - self.dim * math.log(LEVELS)) / (self.dim * math.log(2))

    # -- training ----------------------------------------------------------------------------------
    def training_loss(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """-mean ELBO (+ l1_weight * mean L1 error of the reconstruction f(A s + c) in x) and
        detached metrics: elbo, recon (E log p(z | s)), kl/s, logdet, and l1 when weighted."""
        z, logdet = self.flow_inverse(x)
        q = self.posterior(z)
        s = q.rsample()
        recon = self.log_likelihood_z(z, s)
        kl = q.log_prob(s) - self.prior().log_prob(s)
        elbo = recon - kl + logdet
        loss = -elbo.mean()
        metrics = {"elbo": elbo.mean(), "recon": recon.mean(), "kl/s": kl.mean(), "logdet": logdet.mean()}
        if self.config.dequantise:
            metrics["bpd"] = (-(elbo.mean() - self.dim * math.log(LEVELS)) / (self.dim * math.log(2))).detach()
        if self.config.l1_weight > 0:
            x_hat, _ = self.flow_forward(s @ self.mixing.T + self.offset)
            l1 = (x - x_hat).abs().flatten(1).sum(-1).mean()
            loss = loss + self.config.l1_weight * l1
            metrics["l1"] = l1
        return loss, {name: v.detach() for name, v in metrics.items()}

    @torch.no_grad()
    def initialize(self, train_data) -> None:
        """Data-dependent start from up to 512 random training examples (dequantised): the
        flow's actnorms standardise their inputs (engine.models.flows.Flow.initialize); c is the
        mean of z; the sources' scale (the flow's final actnorm for "jl", Lambda for "cayley")
        is the one of `_source_scale`; A is the pseudo-inverse of A+ and sigma the scale of
        what A A+ leaves of z. Without a flow, "jl" has no scale to set."""
        n = min(len(train_data), INIT_EXAMPLES)
        x = train_data.batch(torch.randperm(len(train_data))[:n]).to(model_device(self), self.mixing.dtype)
        y, _ = self._preprocess(x, noise=self.config.dequantise)
        z = self.flow.initialize(y)  # (n, D)
        self.offset.copy_(z.mean(0))
        unmixing = self.unmixing_matrix()
        spread = ((z - self.offset) @ unmixing.T).std(0).clamp_min(1e-12)  # (d_s,)
        if self.config.unmixing == "cayley":
            unit = 1 / spread  # per source
            gamma = self._source_scale(z - self.offset, unit[:, None] * unmixing)
            self.log_lambda.add_(torch.log(unit * gamma))
        elif self.flow.final is not None:
            unit = float(1 / spread.square().mean().sqrt())  # one factor on z
            gain = unit * self._source_scale(unit * (z - self.offset), unmixing)
            self.flow.final.log_scale.sub_(math.log(gain))  # z = gain (h - loc) / scale
            z = z * gain
            self.offset.mul_(gain)
        unmixing = self.unmixing_matrix()
        self.mixing.copy_(torch.linalg.pinv(unmixing))
        centred = z - self.offset
        residual = centred - centred @ unmixing.T @ self.mixing.T
        self.log_sigma.copy_(residual.std(0).clamp_min(math.exp(LOG_SCALE_RANGE[0])).log())

    def _source_scale(self, z: torch.Tensor, unmixing: torch.Tensor, grid: int = 61) -> float:
        """The factor gamma in [0.01, 10] on sources u = unmixing z (z centred, (n, D); u of unit
        scale) that maximises the bound on these z, with A = pinv(unmixing) / gamma, sigma the
        residual's scale and b as it is: scaling z (jl) or Lambda (cayley) by gamma leaves the
        same objective, E_q[-|r - A b eps / gamma|^2 / 2 sigma^2] - KL(Laplace(gamma u, b) || p).
        The prior's variance is no guide for a quasi-uniform GG, whose log-density falls as
        |s|^rho outside [-1, 1]: sources of its variance but a Gaussian's tails start at a KL of
        thousands of nats."""
        u = z @ unmixing.T  # (n, d_s)
        a0 = torch.linalg.pinv(unmixing)  # (D, d_s)
        r = z - u @ a0.T
        sigma = r.std(0).clamp_min(1e-3)
        b = self.log_b.clamp(*LOG_SCALE_RANGE).exp()
        with random_stream(0, z.device):
            eps = Laplace(torch.zeros_like(u), torch.ones_like(u)).rsample()
        noise = (b * eps) @ a0.T  # (n, D)
        prior = self.prior()
        best, best_value = 1.0, -math.inf
        for gamma in torch.logspace(-2, 1, grid).tolist():
            s = gamma * u + b * eps
            recon = -0.5 * ((r - noise / gamma) / sigma).square().sum(-1)
            kl = Laplace(gamma * u, b.expand_as(u)).log_prob(s) - prior.log_prob(s)
            value = float((recon - kl).mean())
            if value > best_value:
                best, best_value = gamma, value
        return best

    def evaluation_metrics(self, test_data, n: int) -> dict[str, float]:
        """Table C.1's metrics on the first n test examples: mean log p(s) / d_s at the posterior
        means (validation embeddings), and bits per dimension (k = 1) for dequantised data."""
        device = model_device(self)
        log_p, bpd = [], []
        for start in range(0, n, 500):
            x = test_data.batch(torch.arange(start, min(start + 500, n))).to(device)
            s = self.encode(x)["s"].mean
            log_p.append(self.prior().log_prob(s) / self.config.source_dim)
            if self.config.dequantise:
                bpd.append(self.bits_per_dim(x))
        out = {"log_p_s_per_source": torch.cat(log_p).mean().item()}
        if bpd:
            out["bpd"] = torch.cat(bpd).mean().item()
        return out
