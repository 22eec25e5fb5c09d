"""What a hierarchical VAE does layer by layer (seed000 ch. 3, App. B.7; seed003_004).

- `residual_norms`: App. B.7.2 exactly: over `n_batches` batches of `batch_size` data
  points, the per-example L2 norm of every bottom-up block output and every top-down
  block input (the top-down pass uses posterior samples), as mean and sd per block, with
  the block indices where the resolution changes, and the Spearman correlation of norm
  with block index within each resolution (the "norm as a clock" finding).
- `layer_statistics`: per latent layer, the KL(q(z_l|z_<l,x) || p(z_l|z_<l)) in nats and
  bits per dimension, its cumulative sum (Fig. B.14), active units (Var_x E[z|x] > 0.01,
  seed003_004) and per-unit KL, and which layers collapsed (KL below 0.01 nats per unit).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy.stats import spearmanr

from engine.diagnostics.activity import ACTIVE_THRESHOLD
from engine.errors import AtlasError
from engine.models.base import model_device
from engine.models.hvae import HVAE, gaussian_kl, gaussian_kl_units
from engine.models.rrvq import RRVQVAE, layer_kl_units
from engine.randomness import random_stream

COLLAPSED_NATS = 0.01  # per latent unit: a layer whose mean KL per unit is below this has collapsed


@dataclass
class NormProfile:
    """Residual-state norms per block; arrays (blocks,)."""

    up_mean: np.ndarray
    up_sd: np.ndarray
    up_res: list[int]  # resolution of each bottom-up block's output
    down_mean: np.ndarray
    down_sd: np.ndarray
    down_res: list[int]  # resolution of each top-down block's input
    n_examples: int

    @staticmethod
    def changes(res: list[int]) -> list[int]:
        """Block indices i where the resolution differs from block i - 1."""
        return [i for i in range(1, len(res)) if res[i] != res[i - 1]]

    def within_resolution_spearman(self, which: str = "down", min_blocks: int = 3) -> dict[int, float]:
        """{resolution: Spearman rho of mean norm against block index} for every
        resolution with at least `min_blocks` blocks."""
        mean, res = (self.down_mean, self.down_res) if which == "down" else (self.up_mean, self.up_res)
        out = {}
        for r in dict.fromkeys(res):
            idx = [i for i, v in enumerate(res) if v == r]
            if len(idx) >= min_blocks:
                out[r] = float(spearmanr(np.arange(len(idx)), mean[idx]).statistic)
        return out

    def to_dict(self) -> dict:
        return {
            "up_mean": self.up_mean.tolist(),
            "up_sd": self.up_sd.tolist(),
            "up_res": self.up_res,
            "down_mean": self.down_mean.tolist(),
            "down_sd": self.down_sd.tolist(),
            "down_res": self.down_res,
            "n_examples": self.n_examples,
        }


def _batches(data, n_batches: int, batch_size: int, seed: int):
    if n_batches < 1 or batch_size < 1:
        raise AtlasError("n_batches and batch_size must be positive")
    g = torch.Generator().manual_seed(seed)
    n = min(len(data), n_batches * batch_size)
    index = torch.randperm(len(data), generator=g)[:n]
    for start in range(0, n, batch_size):
        yield data.batch(index[start : start + batch_size])


@torch.no_grad()
def residual_norms(model: HVAE, data, n_batches: int = 10, batch_size: int = 100, seed: int = 0) -> NormProfile:
    if not isinstance(model, HVAE):
        raise AtlasError("residual-state norms need a hierarchical VAE (family 'hvae')")
    device = model_device(model)
    ups, downs = [], []
    with random_stream(seed, device):
        for x in _batches(data, n_batches, batch_size, seed):
            up, down = model.state_norms(x.to(device))
            ups.append(up.double().cpu())
            downs.append(down.double().cpu())
    up, down = torch.cat(ups), torch.cat(downs)
    up_res = []
    for spec in model.enc_specs:  # output resolution: after pooling
        up_res.append(spec.res // spec.down if spec.down else spec.res)
    return NormProfile(
        up_mean=up.mean(0).numpy(),
        up_sd=up.std(0, unbiased=False).numpy(),
        up_res=up_res,
        down_mean=down.mean(0).numpy(),
        down_sd=down.std(0, unbiased=False).numpy(),
        down_res=list(model.decoder_resolutions),
        n_examples=up.shape[0],
    )


@dataclass
class LayerStatistics:
    names: list[str]
    resolutions: list[int]
    kl: np.ndarray  # (layers,) mean KL per layer, nats
    kl_bits_per_dim: np.ndarray  # (layers,) the same in bits per data dimension
    unit_kl: list[np.ndarray]  # per layer (units,) mean KL per latent unit, nats
    unit_variance: list[np.ndarray]  # per layer (units,) Var_x E[z|x] along the mean path
    n_examples: int

    @property
    def active_units(self) -> np.ndarray:
        """Units with Var_x E[z|x] > 0.01 per layer."""
        return np.array([int((v > ACTIVE_THRESHOLD).sum()) for v in self.unit_variance])

    @property
    def informative_units(self) -> np.ndarray:
        """Units whose mean KL to the conditional prior exceeds 0.01 nats, per layer."""
        return np.array([int((k > COLLAPSED_NATS).sum()) for k in self.unit_kl])

    @property
    def units(self) -> np.ndarray:
        return np.array([len(v) for v in self.unit_variance])

    @property
    def collapsed(self) -> np.ndarray:
        """Layers whose KL per latent unit is below COLLAPSED_NATS: the posterior is (almost)
        the prior, so the layer tells the decoder (almost) nothing about the input."""
        return self.kl / self.units < COLLAPSED_NATS


@torch.no_grad()
def layer_statistics(
    model: HVAE | RRVQVAE, data, n: int = 1000, batch_size: int = 100, seed: int = 0
) -> LayerStatistics:
    """Per-layer KL at a posterior sample (analytic given the upper layers' draw), per-unit
    KL and the variance of posterior means, over n examples of `data`. For a hierarchy of
    codes a unit is a position: its KL is the categorical KL there, and its variance that of
    the expected code embedding sum_k pi_k E_mu[k] (summed over the embedding's dims)."""
    if isinstance(model, RRVQVAE):
        return _code_layer_statistics(model, data, n, batch_size, seed)
    if not isinstance(model, HVAE):
        raise AtlasError("layer diagnostics need a hierarchical VAE (family 'hvae', 'dctvae' or 'rrvq')")
    device = model_device(model)
    kls, unit_kls, means = [], [], []
    with random_stream(seed, device):
        for x in _batches(data, max(1, math.ceil(n / batch_size)), batch_size, seed):
            x = x.to(device)
            acts = model.bottom_up(x)
            _, layers = model.top_down(acts, x.shape[0])
            kls.append(torch.stack([gaussian_kl(l["q"], l["p"]) for l in layers], 1).double().cpu())
            unit_kls.append([gaussian_kl_units(l["q"], l["p"]).double().cpu() for l in layers])
            _, mean_layers = model.top_down(acts, x.shape[0], mode="mean")
            means.append([l["q"][0].flatten(1).double().cpu() for l in mean_layers])
    kl = torch.cat(kls).mean(0).numpy()
    n_layers = len(model.names)
    unit_kl = [torch.cat([b[i] for b in unit_kls]).mean(0).numpy() for i in range(n_layers)]
    unit_var = [torch.cat([b[i] for b in means]).var(0, unbiased=False).numpy() for i in range(n_layers)]
    dims = math.prod(model.config.input_shape)
    return LayerStatistics(
        names=list(model.names),
        resolutions=list(model.decoder_resolutions),
        kl=kl,
        kl_bits_per_dim=kl / (dims * math.log(2)),
        unit_kl=unit_kl,
        unit_variance=unit_var,
        n_examples=sum(k.shape[0] for k in kls),
    )


def _code_layer_statistics(model: RRVQVAE, data, n: int, batch_size: int, seed: int) -> LayerStatistics:
    device = model_device(model)
    unit_kls, means = [], []
    with random_stream(seed, device):
        for x in _batches(data, max(1, math.ceil(n / batch_size)), batch_size, seed):
            x = x.to(device)
            ups = model.bottom_up(x)
            _, layers = model.top_down(ups, x.shape[0])
            unit_kls.append([layer_kl_units(l["q"], l["p"]).double().cpu() for l in layers])
            _, mode_layers = model.top_down(ups, x.shape[0], draw="mode")
            if model.discrete:  # (batch, M, d_e): each position's expected code embedding
                means.append(
                    [(l["q"].probs @ block.means).double().cpu() for l, block in zip(mode_layers, model.layers)]
                )
            else:
                means.append([l["q"].mean.flatten(1).double().cpu() for l in mode_layers])
    n_layers = len(model.names)
    per_unit = [torch.cat([b[i] for b in unit_kls]) for i in range(n_layers)]
    variance = [torch.cat([b[i] for b in means]).var(0, unbiased=False) for i in range(n_layers)]
    if model.discrete:
        variance = [v.sum(-1) for v in variance]
    kl = torch.stack([u.sum(1) for u in per_unit], 1).mean(0).numpy()
    dims = math.prod(model.config.input_shape)
    return LayerStatistics(
        names=list(model.names),
        resolutions=list(model.sides),
        kl=kl,
        kl_bits_per_dim=kl / (dims * math.log(2)),
        unit_kl=[u.mean(0).numpy() for u in per_unit],
        unit_variance=[v.numpy() for v in variance],
        n_examples=per_unit[0].shape[0],
    )
