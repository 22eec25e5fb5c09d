"""Diagnostics of linear ICA on a flow (Bijecta, seed001 ch. 4): embeddings, mixing columns,
traversals, factorised samples and the total correlation of the sources, as numpy arrays.

Each function names the figure or table of seed001 it serves. The models are the project's
LatentModels with one latent group (Bijecta's "s", a VAE's "z"); `embed` and `mixing_columns`
need a Bijecta (engine.models.bijecta).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from scipy.stats import gaussian_kde

from engine.data.base import TensorRows
from engine.errors import AtlasError
from engine.models.base import model_device
from engine.models.bijecta import Bijecta, BijectaConfig
from engine.models.posteriors import Laplace
from engine.models.total_correlation import total_correlation
from engine.randomness import random_stream

CHUNK = 500  # examples per forward pass


@dataclass
class Embedding:
    z: np.ndarray  # (n, D) f^-1(x), flattened
    means: np.ndarray  # (n, d_s) posterior locations A+ (z - c)
    scales: np.ndarray  # (n, d_s) posterior Laplace scales b

    @property
    def aggregate_sd(self) -> np.ndarray:
        """(d_s,) sd of the aggregate posterior q(s) = mean_x q(s | x): Var(means) + E[2 b^2] (Laplace)."""
        return np.sqrt(self.means.var(0) + (2 * self.scales**2).mean(0))


def _group(model) -> str:
    return model.latent_groups[0].name


def _latent_dim(model) -> int:
    return int(model.latent_groups[0].shape[0])


@torch.no_grad()
def embed(model, data, n: int = 2000) -> Embedding:
    """z = f^-1(x) and q(s | z) of the first n examples of `data` (Figs 4.5, 4.8; Table 4.1), in eval mode."""
    model.eval()
    n = min(n, len(data))
    parts = []
    for start in range(0, n, CHUNK):
        x = data.batch(torch.arange(start, min(start + CHUNK, n))).to(model_device(model))
        z, _ = model.flow_inverse(x)
        q = model.posterior(z)
        parts.append((z, q.mean, q.base_dist.scale))
    z, means, scales = (torch.cat(p).double().cpu().numpy() for p in zip(*parts))
    return Embedding(z=z, means=means, scales=scales)


def mixing_columns(model) -> np.ndarray:
    """The columns of the mixing matrix A, (d_s, D): the z-space direction of each source (Fig. 4.4)."""
    return model.mixing.detach().T.double().cpu().numpy()


def fastica_columns(z: np.ndarray, d_s: int, seed: int = 0) -> np.ndarray:
    """scikit-learn's FastICA mixing columns on z (n, D), (d_s, D): Fig. 4.4's reference method."""
    from sklearn.decomposition import FastICA  # scikit-learn is slow to import; only this needs it

    ica = FastICA(n_components=d_s, whiten="unit-variance", random_state=seed, max_iter=1000)
    ica.fit(np.asarray(z, dtype=np.float64))
    return ica.mixing_.T


def match_columns(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The one-to-one assignment of rows of b (m, D) to rows of a (k, D), k <= m, that maximises the
    summed |cos| (signs and scales ignored; Fig. 4.4): (index into b for each row of a, their |cos|)."""
    a, b = np.atleast_2d(a), np.atleast_2d(b)
    if a.shape[1] != b.shape[1] or len(a) > len(b):
        raise AtlasError(
            f"match_columns needs rows of equal length and no more rows in a than in b, got {a.shape} and {b.shape}"
        )
    unit = lambda m: m / np.linalg.norm(m, axis=1, keepdims=True).clip(1e-300)  # noqa: E731
    cos = np.abs(unit(a) @ unit(b).T)  # (k, m)
    rows, cols = linear_sum_assignment(cos, maximize=True)
    return cols[np.argsort(rows)], cos[rows, cols][np.argsort(rows)]


def explained_variance(z: np.ndarray) -> np.ndarray:
    """Cumulative fraction of the variance of z (n, D) on Cov(z)'s eigenvalues, largest first, (D,) (Fig. 4.8)."""
    eigenvalues = np.linalg.eigvalsh(np.cov(np.asarray(z, dtype=np.float64), rowvar=False))[::-1].clip(0)
    return np.cumsum(eigenvalues) / eigenvalues.sum()


@torch.no_grad()
def source_grid(model, values: np.ndarray, dims: tuple[int, int] = (0, 1)) -> np.ndarray:
    """Decodes of the m x m grid of source values on `dims`, the other sources 0 (Figs 4.1, 4.6):
    (m, m, *input_shape), image [i, j] at s[dims[0]] = values[0][i], s[dims[1]] = values[1][j].
    `values` is (m,), the same on both dims, or (2, m), one row per dim."""
    values = np.asarray(values, dtype=np.float64)
    rows, cols = (values, values) if values.ndim == 1 else values
    m = len(rows)
    s = torch.zeros(m, m, _latent_dim(model), device=model_device(model))
    s[:, :, dims[0]] = torch.as_tensor(rows, dtype=s.dtype)[:, None]
    s[:, :, dims[1]] = torch.as_tensor(cols, dtype=s.dtype)[None, :]
    model.eval()
    images = model.decode(s.reshape(m * m, -1))
    return images.reshape(m, m, *images.shape[1:]).double().cpu().numpy()


def centroids(images: np.ndarray) -> np.ndarray:
    """Intensity-weighted centroid (x = column, y = row, in pixels) of each image (..., C, H, W), (..., 2),
    channels summed and negative values clipped to 0; the middle of the image for a blank one (Fig. 4.6)."""
    w = np.asarray(images, dtype=np.float64).clip(0).sum(-3)  # (..., H, W)
    h, width = w.shape[-2:]
    mass = w.sum((-2, -1))
    blank = mass <= 0
    mass = np.where(blank, 1.0, mass)
    x = (w * np.arange(width)).sum((-2, -1)) / mass
    y = (w * np.arange(h)[:, None]).sum((-2, -1)) / mass
    return np.stack([np.where(blank, (width - 1) / 2, x), np.where(blank, (h - 1) / 2, y)], -1)


def linearity_r2(sources: np.ndarray, points: np.ndarray) -> float:
    """R^2 of the least-squares affine map sources (n, 2) -> points (n, 2): 1 - residual SS / total SS,
    both summed over the two coordinates (Fig. 4.6's straight axes: 1 for an affine code)."""
    sources, points = np.asarray(sources, dtype=np.float64), np.asarray(points, dtype=np.float64)
    design = np.column_stack([sources, np.ones(len(sources))])
    coef, *_ = np.linalg.lstsq(design, points, rcond=None)
    residual = ((points - design @ coef) ** 2).sum()
    total = ((points - points.mean(0)) ** 2).sum()
    return float(1 - residual / total)


@torch.no_grad()
def traversal(model, x: torch.Tensor, dim: int, sd: float, extent: float = 6.0, steps: int = 13) -> np.ndarray:
    """Decodes along source `dim` from the posterior mean of x (1, *shape), over +-extent * sd
    (sd the aggregate posterior's sd of that dim), the other sources fixed: (steps, *shape) (Fig. 4.7b,c).
    With an odd `steps` the middle image is the decode of the posterior mean itself."""
    model.eval()
    mean = model.encode(x.to(model_device(model)))[_group(model)].mean  # (1, d)
    half = (steps - 1) / 2
    offsets = extent * sd * (torch.arange(steps, dtype=mean.dtype, device=mean.device) - half) / max(half, 1)
    s = mean.repeat(steps, 1)
    s[:, dim] += offsets
    return model.decode(s).double().cpu().numpy()


def factorised_samples(means: np.ndarray, count: int, seed: int = 0) -> np.ndarray:
    """count draws (count, d_s) from the product of 1-D Gaussian KDEs of the aggregate posterior's
    marginals (means (n, d_s)), each dimension drawn independently (Fig. 4.7a); decode them to see them."""
    rng = np.random.default_rng(seed)
    means = np.asarray(means, dtype=np.float64)
    return np.stack([gaussian_kde(column).resample(count, seed=rng)[0] for column in means.T], 1)


def embedding_total_correlation(
    means: np.ndarray,
    scales: np.ndarray,
    dataset_size: int,
    batch: int = 1000,
    seed: int = 0,
    *,
    gaussian: bool = False,
) -> float:
    """TC of the aggregate posterior of the embeddings (seed001 Def. 4.2, Table 4.1), in nats, by the
    project's stratified ("mss") minibatch estimator (engine.models.total_correlation), averaged over
    shuffled batches of `batch` rows with one draw per row.

    By default the posteriors are Laplace(m, b) (Bijecta; `scales` = b), with their exact density; with
    `gaussian`, `scales` are a Gaussian posterior's sds (a VAE)."""
    means, scales = np.asarray(means, dtype=np.float64), np.asarray(scales, dtype=np.float64)
    if means.shape != scales.shape or means.ndim != 2 or len(means) < 2:
        raise AtlasError(
            f"means and scales must be two (n, d) arrays with n >= 2, got {means.shape} and {scales.shape}"
        )
    var = scales**2 if gaussian else 2 * scales**2
    order = np.random.default_rng(seed).permutation(len(means))
    mean_t, logvar_t = torch.from_numpy(means[order]), torch.from_numpy(np.log(var[order]))
    g = torch.Generator().manual_seed(seed)
    density = "gaussian" if gaussian else "laplace"
    values = []
    for start in range(0, len(means), batch):
        mu, logvar = mean_t[start : start + batch], logvar_t[start : start + batch]
        if len(mu) < 2:
            continue
        if gaussian:
            z = mu + torch.randn(mu.shape, generator=g, dtype=mu.dtype) * (0.5 * logvar).exp()
        else:  # scale b = sd / sqrt(2)
            z = Laplace(mu, (0.5 * logvar).exp() * math.sqrt(0.5)).rsample(generator=g)
        values.append(float(total_correlation(z, mu, logvar, dataset_size, "mss", density).mean()))
    return float(np.mean(values))


def fit_linear_ica(
    x: torch.Tensor, restarts: int, steps: int, lr: float = 1e-2, jl_seed: int = 0
) -> tuple[Bijecta, list[float]]:
    """Stand-alone JL-Cayley linear ICA (eqs. 4.12-4.13, GG(rho = 10) sources, no flow) on the rows
    of x (n, D) with two sources, fitted by Adam from `restarts` starts (torch seeds 0, 1, ...):
    the model with the best final bound (IWAE, k = 10) and every start's bound (Fig. 4.4)."""
    best, bounds = None, []
    for restart in range(restarts):
        with torch.random.fork_rng(devices=[]):  # the weights' initialisation, without touching the caller's RNG
            torch.manual_seed(restart)
            model = _fitted_linear_ica(x, restart, steps, lr, jl_seed)
        with torch.no_grad(), random_stream(0):
            bounds.append(float(model.elbo(x, k=10).total.mean()))
        if bounds[-1] >= max(bounds):
            best = model
    return best, bounds


def _fitted_linear_ica(x: torch.Tensor, restart: int, steps: int, lr: float, jl_seed: int) -> Bijecta:
    config = BijectaConfig(
        input_shape=(x.shape[1],),
        source_dim=2,
        flow_layers=0,
        unmixing="cayley",
        prior_power=10.0,
        jl_seed=jl_seed,
        dequantise=False,
        logit_preprocess=False,
    )
    model = Bijecta(config)
    with random_stream(restart):
        model.initialize(TensorRows(x))
        optimiser = torch.optim.Adam(model.parameters(), lr)
        for _ in range(steps):
            loss, _ = model.training_loss(x)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    return model
