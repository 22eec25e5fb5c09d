"""Worst-case entropy of rVQ- and softmax-parameterised categoricals (seed001 Theorems 3.1 and
3.2, Corollary 3.2.1, App. B.4, Figs B.3-B.5; spec seed001 §2.3).

Both worst cases are the same one-parameter family. With E_Σ = 1 the rVQ log-weights are
-½‖e - E_k‖² (seed001 eq. 3.4): one code at distance d and K - 1 codes at d + δ on the same
line (eq. B.7) give log-weights that differ by g = δ²/2 + δd. The softmax worst case (eq. B.22)
has one logit c + ℓ and K - 1 logits c; the shift c cancels from every probability, so neither
the exact entropy nor its approximation depends on c. Either way the categorical is
softmax(0, -x, ..., -x) with x = g or x = ℓ, and with t = (K - 1) exp(-x)

    H(x) = log Z - Σ_k π_k a_k = log(1 + t) + x t / (1 + t)            (eqs. B.10, B.25)

Both terms are non-negative, so log1p keeps H to full relative precision while it is a normal
double (H down to ~1e-300); summing -π log π instead would lose it to cancellation in the
near-one probability long before. The first-order approximations drop O(t²):

    H ≈ (K - 1)(1 + x) exp(-x)                            (eq. B.21 with x = g, eq. B.33 with x = ℓ)

Expanding H to second order, the dropped term is t²(x + ½), so the relative error of the
approximation is t (x + ½) / (1 + x) ≈ (K - 1) exp(-x). For K = 256 it is about 1e-2 at x = 10
and falls below 1e-5 only past x ≈ 17.0 and below 1e-6 past x ≈ 19.3; App. B.4.3's "≈ 1e-6 for
inputs > 10" holds for no K ≥ 2 (scripts/results/code-entropy.json has the measured values).

Corollary 3.2.1 compares rVQ at d with softmax at ℓ + c = d; `entropy_curves` takes c = 0, so
ℓ = d. Since H falls as x grows, rVQ has the higher entropy exactly when δ²/2 + δd < d, i.e.
for d > δ² / (2(1 - δ)) when δ < 1, and never when δ ≥ 1 (Figs B.3-B.5 use δ = 1).

`simulated_rvq_entropy` is the check of App. B.4.3 / Fig. B.5: random codebooks instead of the
worst arrangement.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from engine.errors import AtlasError

MAX_DRAWS = 10**9  # n * codes * dim normal draws in one simulation (the paper's 1.6e8: ~13 s, 61 d, one core)
_CHUNK_BYTES = 32 * 2**20  # one block of the simulation; peak memory is about 6x this


def _int_at_least(value, low: int, name: str, hint: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
        raise AtlasError(f"{name} must be an integer >= {low}, got {value!r}; {hint}")
    return int(value)


def _positive(value, name: str) -> float:
    if not isinstance(value, int | float | np.number) or not math.isfinite(value) or value <= 0:
        raise AtlasError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def _inputs(values, name: str) -> np.ndarray:
    """A float64 array of finite values >= 0 (distances d or logit gaps ℓ)."""
    try:
        a = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise AtlasError(f"{name} must be numbers, got {values!r}") from None
    if not np.all(np.isfinite(a)) or np.any(a < 0):
        raise AtlasError(f"{name} must be finite and >= 0 (it is a distance or a logit gap); got {values!r}")
    return a


def _codes(codes) -> int:
    return _int_at_least(codes, 2, "codes", "a categorical needs at least two codes")


def _worst_entropy(x: np.ndarray, codes: int) -> np.ndarray:
    """Exact entropy (nats) of softmax(0, -x, ..., -x) over `codes` entries (seed001 eqs. B.10,
    B.25) as log1p(t) + x t / (1 + t), t = (K - 1) exp(-x)."""
    t = (codes - 1) * np.exp(-x)
    return np.log1p(t) + x * t / (1.0 + t)


def _worst_entropy_approx(x: np.ndarray, codes: int) -> np.ndarray:
    """(K - 1)(1 + x) exp(-x) (seed001 eqs. B.21, B.33)."""
    return (codes - 1) * (1.0 + x) * np.exp(-x)


def _rvq_gap(d, delta) -> np.ndarray:
    """g = δ²/2 + δd, the log-weight gap of the rVQ worst case (seed001 eqs. B.13, 3.10)."""
    return 0.5 * delta**2 + delta * _inputs(d, "d")


def rvq_worst_entropy(d, delta: float = 1.0, codes: int = 256) -> np.ndarray:
    """Exact entropy (nats) of the rVQ worst case, seed001 eqs. B.7-B.10 with E_Σ = 1: one code at
    distance d from the input embedding, `codes` - 1 codes at d + delta on the same line.
    Vectorised over d (any shape)."""
    return _worst_entropy(_rvq_gap(d, _positive(delta, "delta")), _codes(codes))


def rvq_worst_entropy_approx(d, delta: float = 1.0, codes: int = 256) -> np.ndarray:
    """First-order rVQ worst-case entropy (K - 1)(1 + g) exp(-g), g = δ²/2 + δd (seed001 eq. B.21,
    the same as eq. 3.10 without its O(exp(-g)²))."""
    return _worst_entropy_approx(_rvq_gap(d, _positive(delta, "delta")), _codes(codes))


def softmax_worst_entropy(l, codes: int = 256) -> np.ndarray:
    """Exact entropy (nats) of the softmax worst case, seed001 eqs. B.22-B.25: one logit c + l,
    `codes` - 1 logits c. The entropy does not depend on c (softmax is shift-invariant), so c is
    no argument. Vectorised over l >= 0 (any shape)."""
    return _worst_entropy(_inputs(l, "l"), _codes(codes))


def softmax_worst_entropy_approx(l, codes: int = 256) -> np.ndarray:
    """First-order softmax worst-case entropy (K - 1)(1 + l) exp(-l) (seed001 eq. B.33)."""
    return _worst_entropy_approx(_inputs(l, "l"), _codes(codes))


def relative_error(exact, approx) -> np.ndarray:
    """|approx - exact| / exact elementwise; NaN where the exact entropy underflowed to 0 (an input
    x past ~745)."""
    exact, approx = np.asarray(exact, dtype=np.float64), np.asarray(approx, dtype=np.float64)
    if exact.shape != approx.shape:
        raise AtlasError(f"exact and approx must have one shape, got {exact.shape} and {approx.shape}")
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(exact > 0, np.abs(approx - exact) / exact, np.nan)


def _entropy(logits: torch.Tensor) -> torch.Tensor:
    """Entropy over the last axis as log Z - Σ_k π_k a_k with the logits shifted so that max a = 0
    (seed001 eq. B.9). Z - 1 is summed without the top entry, so both terms are >= 0 and tiny
    entropies keep their relative precision."""
    a = logits - logits.amax(-1, keepdim=True)
    w = a.exp()
    rest = w.scatter(-1, a.argmax(-1, keepdim=True), 0.0).sum(-1)  # Z - 1
    return torch.log1p(rest) - (w * a).sum(-1) / (1.0 + rest)


def simulated_rvq_entropy(
    d, codes: int = 256, dim: int = 32, radius: float = 0.5, n: int = 20000, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and minimum, over n random codebooks, of the rVQ entropy (E_Σ = 1) of an input
    embedding at distance d from the centre of the codebook sphere (seed001 App. B.4.3, Fig. B.5:
    20,000 codebooks of 256 codes uniform on the sphere of radius 0.5 in d_e = 32 dimensions).

    B.4.3 does not say where the input sits; we take distance d from the sphere's centre, the one
    point that does not depend on the draw. The nearest code is then at least d - radius away, and
    no log-weight gap exceeds 2·radius·d, which is d for radius ½: less than the worst case's
    g = d + ½ at δ = 1. The codebooks' distribution is rotation-invariant, so the input is put on
    the first axis, e = d·v with v = (1, 0, ..., 0), instead of in a random direction; then
    -½‖e - E_k‖² = d (E_k · v) + const. The same n codebooks serve every d (B.4.3's "20,000
    sampled codebooks per value of d" reads either way), drawn in fixed-size chunks, so a seed
    gives the same codebooks whatever the grid of d. Returns two arrays shaped like d (nats).
    """
    d = _inputs(d, "d")
    codes, dim = _codes(codes), _int_at_least(dim, 1, "dim", "the embedding space needs a dimension")
    radius = _positive(radius, "radius")
    n = _int_at_least(n, 1, "n", "simulate at least one codebook")
    if n * codes * dim > MAX_DRAWS:
        raise AtlasError(
            f"n * codes * dim = {n * codes * dim:,} normal draws is more than the {MAX_DRAWS:,} allowed "
            f"(a few minutes of CPU); use n <= {MAX_DRAWS // (codes * dim):,}"
        )
    if 8 * codes * dim > _CHUNK_BYTES:
        raise AtlasError(
            f"one codebook of {codes:,} x {dim} float64 entries is more than {_CHUNK_BYTES // 2**20} MB; "
            "use fewer codes or dimensions"
        )
    flat = torch.from_numpy(d.reshape(-1))
    chunk = _CHUNK_BYTES // (8 * codes * dim)  # codebooks per draw
    block = max(1, _CHUNK_BYTES // (8 * codes * min(chunk, n)))  # d values per entropy call
    total = torch.zeros(flat.shape, dtype=torch.float64)
    minimum = torch.full(flat.shape, math.inf, dtype=torch.float64)
    generator = torch.Generator().manual_seed(int(seed))
    for start in range(0, n, chunk):
        g = torch.randn(min(chunk, n - start), codes, dim, generator=generator, dtype=torch.float64)
        along = radius * g[..., 0] / g.norm(dim=-1)  # (chunk, codes): E_k · v
        for i in range(0, len(flat), block):
            h = _entropy(flat[i : i + block, None, None] * along)  # (block, chunk)
            total[i : i + block] += h.sum(-1)
            minimum[i : i + block] = torch.minimum(minimum[i : i + block], h.amin(-1))
    return (total / n).numpy().reshape(d.shape), minimum.numpy().reshape(d.shape)


@dataclass
class EntropyCurves:
    """Figs B.3-B.5 of seed001 over a grid of d; every array is (points,), in nats. The softmax
    curves are at ℓ = d with c = 0 (Corollary 3.2.1's ℓ + c = d)."""

    d: np.ndarray
    rvq: np.ndarray  # exact worst case (eq. B.10)
    rvq_approx: np.ndarray  # eq. B.21
    softmax: np.ndarray  # exact worst case (eq. B.25)
    softmax_approx: np.ndarray  # eq. B.33
    delta: float
    codes: int
    simulated: int  # random codebooks per d; 0 when there is no simulation
    simulated_mean: np.ndarray | None = None  # Fig. B.5
    simulated_min: np.ndarray | None = None

    @property
    def rvq_relative_error(self) -> np.ndarray:
        return relative_error(self.rvq, self.rvq_approx)

    @property
    def softmax_relative_error(self) -> np.ndarray:
        return relative_error(self.softmax, self.softmax_approx)


def entropy_curves(
    d_max: float = 30.0, points: int = 121, delta: float = 1.0, codes: int = 256, simulate: int = 0
) -> EntropyCurves:
    """Every curve of Figs B.3-B.5 on d = linspace(0, d_max, points): the rVQ and softmax worst
    cases, exact and first order, and, when `simulate` > 0, the mean and minimum entropy over that
    many random codebooks (256-code default sphere settings of App. B.4.3)."""
    d = np.linspace(0.0, _positive(d_max, "d_max"), _int_at_least(points, 2, "points", "a curve needs two points"))
    simulate = _int_at_least(simulate, 0, "simulate", "pass 0 for no simulation")
    curves = EntropyCurves(
        d=d,
        rvq=rvq_worst_entropy(d, delta, codes),
        rvq_approx=rvq_worst_entropy_approx(d, delta, codes),
        softmax=softmax_worst_entropy(d, codes),
        softmax_approx=softmax_worst_entropy_approx(d, codes),
        delta=float(delta),
        codes=int(codes),
        simulated=simulate,
    )
    if simulate:
        curves.simulated_mean, curves.simulated_min = simulated_rvq_entropy(d, codes=codes, n=simulate)
    return curves
