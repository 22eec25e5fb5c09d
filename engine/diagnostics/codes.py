"""Code-level views of a model of discrete codes (the RRVQ-VAE, seed001 ch. 3): which codes
each layer uses, the index map of Fig. B.1, codes swapped and decoded, and linear probes of
a layer's codes.

    usage = code_usage(model, x)                      # {layer: CodeUsage}
    grid, norms = index_map(model, x, "z1")           # (batch, R, R) indices, (batch, R, R) ||E_mu||
    images = swap_codes(model, x, "z2", code=5)       # every position of z2 set to code 5
    accuracy = linear_probe(train_codes, y, test_codes, y_test)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from engine.errors import AtlasError
from engine.models.rrvq import RRVQVAE


@dataclass
class CodeUsage:
    """How a layer's K codes are used over a set of inputs (their most probable code at every
    position): counts (K,), the perplexity exp(H(usage)) (K when all are used evenly, 1 at
    index collapse), the codes never chosen, and how many positions were counted."""

    counts: np.ndarray
    perplexity: float
    dead: int
    positions: int

    @property
    def frequencies(self) -> np.ndarray:
        return self.counts / max(1, self.counts.sum())


def usage_of(indices: torch.Tensor, codes: int) -> CodeUsage:
    """CodeUsage of code indices (any shape) among `codes` codes."""
    counts = torch.bincount(indices.flatten().long(), minlength=codes).double()
    p = counts / counts.sum().clamp_min(1)
    entropy = -(p * p.clamp_min(1e-300).log()).sum()
    return CodeUsage(counts.numpy(), float(torch.exp(entropy)), int((counts == 0).sum()), int(indices.numel()))


@torch.no_grad()
def code_indices(model: RRVQVAE, x: torch.Tensor, batch_size: int = 500) -> dict[str, torch.Tensor]:
    """The most probable code per position of every layer for inputs x, in batches: {layer: (n, R, R)}."""
    parts = [model.code_indices(chunk) for chunk in x.split(batch_size)]
    return {name: torch.cat([p[name] for p in parts]) for name in model.names}


def code_usage(model: RRVQVAE, x: torch.Tensor) -> dict[str, CodeUsage]:
    """CodeUsage of every layer over the inputs x."""
    return {name: usage_of(idx, model.config.codes) for name, idx in code_indices(model, x).items()}


def index_map(model: RRVQVAE, x: torch.Tensor, layer: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Fig. B.1: `layer`'s grid of code indices for each input, (n, R, R), and the norm of each
    chosen code's mean ||E_mu[k]||, (n, R, R), the colour the figure gives it."""
    indices = model.code_indices(x)[layer]
    return indices, model.code_norms(layer)[indices]


# viridis at 10 evenly spaced points, for colouring without a plotting library
VIRIDIS = np.array(
    [
        [68, 1, 84], [72, 40, 120], [62, 73, 137], [49, 104, 142], [38, 130, 142],
        [31, 158, 137], [53, 183, 121], [110, 206, 88], [181, 222, 43], [253, 231, 37],
    ],
    dtype=np.float64,
)  # fmt: skip


def viridis(values: np.ndarray) -> np.ndarray:
    """Values in [0, 1] (any shape) as viridis colours, uint8 (..., 3)."""
    t = np.clip(values, 0.0, 1.0) * (len(VIRIDIS) - 1)
    grid = np.arange(len(VIRIDIS))
    return np.stack([np.interp(t, grid, VIRIDIS[:, c]) for c in range(3)], -1).round().astype(np.uint8)


def index_map_tiles(images: np.ndarray, norms: torch.Tensor, low: float, high: float) -> np.ndarray:
    """Each input beside its index map: uint8 images (n, H, W, C) and the chosen codes' norms
    (n, R, R), coloured by viridis from `low` to `high` and stretched to H x W (nearest), ->
    (2n, H, W, 3), input then map."""
    n, h, w, _ = images.shape
    scaled = ((norms.cpu().double() - low) / max(high - low, 1e-12)).numpy()
    rows = np.minimum(np.arange(h) * scaled.shape[1] // h, scaled.shape[1] - 1)
    cols = np.minimum(np.arange(w) * scaled.shape[2] // w, scaled.shape[2] - 1)
    maps = viridis(scaled[:, rows][:, :, cols])
    inputs = images if images.shape[-1] == 3 else images[..., :1].repeat(3, -1)
    return np.stack([inputs, maps], 1).reshape(2 * n, h, w, 3)


@torch.no_grad()
def swap_codes(
    model: RRVQVAE,
    x: torch.Tensor,
    layer: str,
    code: int | Sequence[int],
    position: tuple[int, int] | None = None,
    below: Literal["keep", "mode"] = "keep",
) -> torch.Tensor:
    """Decode x's most probable codes with `layer`'s code at `position` (row, column), or at
    every position when None, replaced by `code` (or by each of several codes in turn). The
    layers above keep x's codes; the layers below keep them too (`below="keep"`) or become the
    prior's most probable codes given the swapped layer and those above (`below="mode"`), so
    that the swap propagates down. (len(codes) * n, *shape), code by code."""
    if layer not in model.names:
        raise AtlasError(f"this model has no layer {layer!r}; its layers are {', '.join(model.names)}")
    codes = [int(code)] if isinstance(code, int) else [int(c) for c in code]
    if not codes or not all(0 <= c < model.config.codes for c in codes):
        raise AtlasError(f"codes must be between 0 and {model.config.codes - 1}, got {code}")
    if below not in ("keep", "mode"):
        raise AtlasError(f"below must be 'keep' or 'mode', got {below!r}")
    n = x.shape[0]
    indices = {name: idx.repeat(len(codes), 1, 1) for name, idx in model.code_indices(x).items()}
    grid = indices[layer]
    new = torch.tensor(codes, device=grid.device).repeat_interleave(n)  # (len(codes) * n,)
    if position is None:
        grid[:] = new[:, None, None]
    else:
        row, col = position
        side = grid.shape[-1]
        if not (0 <= row < side and 0 <= col < side):
            raise AtlasError(f"position {position} is outside {layer}'s {side} x {side} grid")
        grid[:, row, col] = new
    if below == "mode":
        kept = model.names[: model.names.index(layer) + 1]
        params, _ = model.top_down(None, grid.shape[0], z=model.one_hot({k: indices[k] for k in kept}), draw="mode")
        return model.likelihood.mean(params)
    return model.decode(model.one_hot(indices))


def one_hot_features(indices: torch.Tensor, codes: int) -> np.ndarray:
    """Code indices (n, R, R) as one-hot features (n, R * R * codes), float32."""
    return F.one_hot(indices.flatten(1).long(), codes).flatten(1).float().numpy()


def linear_probe(
    train_features: np.ndarray, train_labels: np.ndarray, test_features: np.ndarray, test_labels: np.ndarray
) -> float:
    """Test accuracy of a multinomial logistic regression (scikit-learn, L2, C = 1) fitted on
    the training features: how linearly a layer's codes hold the labels (Table 3.2's direction,
    with a linear probe where the thesis trained small convnets)."""
    from sklearn.linear_model import LogisticRegression

    if len(np.unique(train_labels)) < 2:
        raise AtlasError("a probe needs at least two classes among the training labels")
    probe = LogisticRegression(max_iter=2000)
    probe.fit(train_features, train_labels)
    return float(probe.score(test_features, test_labels))


def colour_spread(images: torch.Tensor) -> torch.Tensor:
    """The within-image spread of colour: per image, the standard deviation over its pixels,
    averaged over channels, (n,). 0 for a uniform swatch, large for a patchwork."""
    return images.flatten(2).std(-1).mean(-1)
