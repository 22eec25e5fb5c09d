"""The points of a latent map: posterior means E[z|x] of a data set, per latent group.

A group is what the model's `latent_groups` names: "z" for a VAE, "facet0", "facet1", ...
for an MFCVAE, "layer00", "layer01", ... (top-down, each flattened) for an HVAE, "z1" and
"z2" for HH-VAEM. A model of discrete codes (the RRVQ-VAE) is mapped by each layer's expected
code embedding sum_k pi_k E_mu[k] per position rather than the codes' probabilities. One pass encodes every group at once and, optionally, the per-example
reconstruction error ||decode(E[z|x]) - x||^2 / D, the mean over observed entries (NaN
entries of tabular inputs are not counted), so that a page can switch groups or colour
points by reconstruction error without encoding again.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from engine.errors import AtlasError
from engine.models.base import EmbeddedCodes, model_device


@dataclass
class EncodedPoints:
    """A data set's first n examples encoded once: row i is example i."""

    means: dict[str, np.ndarray]  # group name -> (n, group size) float32, in latent_groups order
    recon_error: np.ndarray | None = None  # (n,) float32 mean squared error per example

    @property
    def n(self) -> int:
        return len(next(iter(self.means.values())))

    def group(self, name: str | None) -> np.ndarray:
        """One group's means (n, d); None: the only group, or every group side by side."""
        return select_group(self.means, name)


def pooled_per_channel(points: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Points of a spatial group (n, C h w) as the mean of each channel over its positions, (n, C):
    a map of what each channel holds, wherever in the image it is."""
    if len(shape) != 3 or points.shape[-1] != math.prod(shape):
        raise AtlasError(f"pooling per channel needs points of a spatial group (C, h, w), got shape {shape}")
    return points.reshape(*points.shape[:-1], shape[0], -1).mean(-1, dtype=np.float64).astype(np.float32)


def select_group(means: dict[str, np.ndarray], name: str | None) -> np.ndarray:
    if name is None:
        return next(iter(means.values())) if len(means) == 1 else np.concatenate(list(means.values()), axis=1)
    if name not in means:
        raise AtlasError(
            f"this model has no latent group {name!r}; its groups are {', '.join(means)} (or None for all)"
        )
    return means[name]


@torch.no_grad()
def encode_dataset(
    model, data, n: int | None = None, batch_size: int = 500, reconstruction_error: bool = True
) -> EncodedPoints:
    """Posterior means of every latent group for the first n examples of `data` (a Dataset or
    a tensor (N, *shape); all examples by default), in batches, without gradients."""
    total = len(data)
    n = total if n is None else min(int(n), total)
    if n < 1:
        raise AtlasError("there are no examples to encode; pick a data set or split that has some")
    if batch_size < 1:
        raise AtlasError(f"batch_size must be at least 1, got {batch_size}")
    device = model_device(model)
    names = [g.name for g in model.latent_groups]
    means: dict[str, list[torch.Tensor]] = {name: [] for name in names}
    errors: list[torch.Tensor] = []
    for index in torch.arange(n).split(batch_size):
        x = (data.batch(index) if hasattr(data, "batch") else data[index]).to(device)
        q = model.encode(x)
        z = {name: q[name].mean for name in names}
        # a model of codes is mapped by its expected code embeddings, not the codes' probabilities
        points = model.code_embeddings(x) if isinstance(model, EmbeddedCodes) else z
        for name in names:
            means[name].append(points[name].flatten(1).float().cpu())
        if reconstruction_error:
            errors.append(squared_error(model.decode(z), x).cpu())
    return EncodedPoints(
        means={name: torch.cat(m).numpy() for name, m in means.items()},
        recon_error=torch.cat(errors).numpy() if reconstruction_error else None,
    )


def encode_points(model, data, group: str | None, n: int | None = None, batch_size: int = 500) -> np.ndarray:
    """E[z|x] of one latent group (None: the only group, or all side by side) for the first n
    examples of `data`: float32 (n, d)."""
    names = [g.name for g in model.latent_groups]
    if group is not None and group not in names:
        raise AtlasError(
            f"this model has no latent group {group!r}; its groups are {', '.join(names)} (or None for all)"
        )
    return encode_dataset(model, data, n, batch_size, reconstruction_error=False).group(group)


def squared_error(reconstruction: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Mean over the observed (non-NaN) entries of (reconstruction - x)^2 per example, (batch,)
    float32; NaN for an example with nothing observed."""
    diff = (reconstruction.float() - x.float()).flatten(1)
    observed = ~torch.isnan(diff)
    return torch.where(observed, diff.pow(2), 0.0).sum(1) / observed.sum(1)
