"""Fréchet distance between two sets of images, on the features of a small classifier trained
on the same data (not Inception: its features are of 299×299 photographs, and a 16×16 digit
has nothing of them). Comparable between models scored with the same classifier only.

    d² = ||μ_1 - μ_2||² + tr(Σ_1 + Σ_2 - 2 (Σ_1 Σ_2)^½)    (Heusel et al. 2017)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from engine.errors import AtlasError


def frechet_distance(mu1: np.ndarray, cov1: np.ndarray, mu2: np.ndarray, cov2: np.ndarray) -> float:
    """d² between N(mu1, cov1) and N(mu2, cov2). tr((Σ_1 Σ_2)^½) is the sum of the square
    roots of the eigenvalues of Σ_1^½ Σ_2 Σ_1^½, a symmetric PSD matrix, so it needs no
    general matrix square root (float64; negative round-off eigenvalues are cut at 0)."""
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    cov1, cov2 = np.asarray(cov1, np.float64), np.asarray(cov2, np.float64)
    if mu1.shape != mu2.shape or cov1.shape != cov2.shape or cov1.shape != (len(mu1), len(mu1)):
        raise AtlasError(
            f"two Gaussians of one dimension are needed, got {mu1.shape}/{cov1.shape} and {mu2.shape}/{cov2.shape}"
        )
    w, v = np.linalg.eigh(cov1)
    root1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    cross = np.linalg.eigvalsh(root1 @ cov2 @ root1)
    trace_root = np.sqrt(np.clip(cross, 0, None)).sum()
    return float(((mu1 - mu2) ** 2).sum() + np.trace(cov1) + np.trace(cov2) - 2 * trace_root)


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    features = np.asarray(features, np.float64)
    return features.mean(0), np.cov(features, rowvar=False)


class FeatureClassifier(nn.Module):
    """Two conv layers and a hidden layer whose activations are the features."""

    def __init__(self, input_shape: tuple[int, int, int], classes: int, features: int = 64):
        super().__init__()
        c, h, w = input_shape
        self.body = nn.Sequential(
            nn.Conv2d(c, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(64 * (h // 4) * (w // 4), features),
            nn.ReLU(),
        )
        self.head = nn.Linear(features, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))

    @torch.no_grad()
    def features(self, x: torch.Tensor, batch: int = 1000) -> np.ndarray:
        self.eval()
        return torch.cat([self.body(x[i : i + batch]) for i in range(0, len(x), batch)]).double().numpy()


@dataclass
class TrainedClassifier:
    net: FeatureClassifier
    test_accuracy: float


def train_feature_classifier(
    x: torch.Tensor, y: torch.Tensor, x_test: torch.Tensor, y_test: torch.Tensor, steps: int = 1500, seed: int = 0
) -> TrainedClassifier:
    """Fit the classifier on labelled images x (n, C, H, W) in [0, 1] with Adam and light
    random shifts (so its features describe digits, not pixel positions); report its test
    accuracy, which says whether its features are worth comparing on."""
    if x.ndim != 4 or x.shape[-1] % 4 or x.shape[-2] % 4:
        raise AtlasError(
            f"the feature classifier takes images (n, C, H, W) with sides divisible by 4, got {list(x.shape)}"
        )
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = FeatureClassifier(tuple(x.shape[1:]), int(y.max()) + 1)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    for _ in range(steps):
        idx = torch.randint(len(x), (128,), generator=g)
        dx, dy = torch.randint(-1, 2, (2,), generator=g).tolist()
        batch = torch.roll(x[idx], shifts=(dx, dy), dims=(-2, -1))
        loss = F.cross_entropy(net(batch), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    with torch.no_grad():
        accuracy = (net(x_test).argmax(1) == y_test).float().mean().item()
    return TrainedClassifier(net, accuracy)


def classifier_frechet_distance(net: FeatureClassifier, reference: torch.Tensor, samples: torch.Tensor) -> float:
    """d² between the classifier features of two image sets (each at least two images)."""
    return frechet_distance(*feature_statistics(net.features(reference)), *feature_statistics(net.features(samples)))
