"""What a model with a discrete latent y learned about the classes (seed001 ch. 2, §1.6, §1.9).

- `class_report`: argmax q(y | x) on the test split against a label, scored with the
  majority mapping of eq. 2.11 (each component to its commonest class), the component x class
  table and the class x class confusion matrix of Figs 2.5 / 2.6, and the entropy of q(y | x).
- `yz_grid`: the generation grid of Figs 2.1 / 2.3a, rows one shared draw of the noise, columns
  the values of y: for the SSVAE z* ~ N(0, I) itself; for GM-DGM z = mu_y + sigma_y eps* (its
  p(z | y) moves with y, so the shared draw is the standardised one).
- `most_confident`: the test inputs with the highest q(y = k | x) per component (Fig 2.3b).
- `entropy_densities`: a Gaussian KDE of that entropy, split into the classes that kept labels
  and those that never had any (Fig 2.2).
- `regime_table`: cluster accuracy per label regime x model from the runs that exist (Table 2.2).

Everything takes a model with `classify(x) -> log q(y | x)` (engine.models.semi_supervised)
and returns numpy arrays or plain values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from engine.errors import AtlasError
from engine.models.cluster_accuracy import ClusterAccuracy, cluster_accuracy


@dataclass
class ClassReport:
    probs: np.ndarray  # (n, K) q(y | x) of every test input
    labels: np.ndarray  # (n,) true classes
    accuracy: ClusterAccuracy  # majority mapping; .table is (K, C)
    confusion: np.ndarray  # (C, C): rows true classes, columns the class each input's component maps to
    classes: list[str]

    @property
    def components(self) -> np.ndarray:
        return self.probs.argmax(1)

    @property
    def entropy(self) -> np.ndarray:
        p = np.clip(self.probs, 1e-12, 1.0)
        return -(p * np.log(p)).sum(1)


@torch.no_grad()
def class_probabilities(model, x: torch.Tensor, chunk: int = 1000) -> np.ndarray:
    """q(y | x), (n, K), in chunks."""
    device = next(model.parameters()).device
    parts = [model.classify(x[s : s + chunk].to(device)).exp().cpu() for s in range(0, len(x), chunk)]
    return torch.cat(parts).double().numpy()


def class_report(model, data, factor: str | None = None, n: int | None = None) -> ClassReport:
    """The first n (default all) examples of `data` scored against the categorical label
    `factor` (default the first)."""
    categorical = [name for name, col in data.labels.items() if col.is_categorical]
    if not categorical:
        raise AtlasError(f"{data.name!r} has no categorical label to score the components against")
    factor = factor or categorical[0]
    if factor not in categorical:
        raise AtlasError(f"{factor!r} is not a categorical label of {data.name!r}; choose one of {categorical}")
    n = len(data) if n is None else min(n, len(data))
    column = data.labels[factor]
    probs = class_probabilities(model, data.batch(torch.arange(n)))
    labels = column.values[:n].numpy()
    k, c = probs.shape[1], len(column.categories)
    acc = cluster_accuracy(probs.argmax(1), labels, k, c, method="majority")
    mapped = np.array([acc.mapping.get(int(j), -1) for j in probs.argmax(1)])
    confusion = np.zeros((c, c), dtype=np.int64)
    np.add.at(confusion, (labels, mapped), 1)  # every component of a member is occupied, so mapped >= 0
    return ClassReport(probs, labels, acc, confusion, list(column.categories))


@torch.no_grad()
def yz_grid(model, rows: int, components: list[int] | None = None, seed: int = 0) -> torch.Tensor:
    """Decoded means (rows * len(components), *input_shape), row by row: row r shares one
    standard-normal draw eps_r, column j decodes y = components[j] with z = mu_y + sigma_y eps_r."""
    k = model.config.components
    components = list(range(k)) if components is None else components
    if not components or any(c not in range(k) for c in components):
        raise AtlasError(f"components must be values of y in 0..{k - 1}, got {components}")
    device = next(model.parameters()).device
    eps = torch.randn(rows, model.config.latent_dim, generator=torch.Generator().manual_seed(seed)).to(device)
    y = torch.tensor(components, device=device)
    mean, logvar = model.p_z(torch.nn.functional.one_hot(y, k).float())  # (columns, d_z)
    z = mean + (0.5 * logvar).exp() * eps[:, None, :]  # (rows, columns, d_z)
    return model.decode_y(z.flatten(0, 1), y.repeat(rows)).cpu()


def most_confident(probs: np.ndarray, per_component: int = 10) -> dict[int, np.ndarray]:
    """{component: indices of its members with the highest q(y = k | x), best first}, for
    the components that have members (argmax q(y | x) = k)."""
    assigned = probs.argmax(1)
    out = {}
    for k in np.unique(assigned):
        members = np.flatnonzero(assigned == k)
        out[int(k)] = members[np.argsort(-probs[members, k], kind="stable")][:per_component]
    return out


def entropy_densities(
    entropy: np.ndarray, labels: np.ndarray, labelled: list[int], points: int = 200
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Gaussian KDEs (Scott's bandwidth) of the entropy of q(y | x) on [0, max entropy], one for
    the inputs of the `labelled` classes and one for the others: {"labelled classes": (grid,
    density), "never-labelled classes": ...}; a group with fewer than two distinct values is left out."""
    from scipy.stats import gaussian_kde

    grid = np.linspace(0.0, max(float(entropy.max()), 1e-3) * 1.05, points)
    inside = np.isin(labels, labelled)
    out = {}
    for name, mask in (("labelled classes", inside), ("never-labelled classes", ~inside)):
        values = entropy[mask]
        if len(np.unique(values)) >= 2:
            out[name] = (grid, gaussian_kde(values)(grid))
    return out


def regime_table(runs: list[dict]) -> list[dict]:
    """Rows {model, us, ss, sus, accidental-sus: "mean ± sd (n)"} from runs given as
    {"model": family, "regime": regime or None, "accuracy": test cluster accuracy in [0, 1]};
    a run without a regime counts as US (it saw no labels)."""
    cells: dict[tuple[str, str], list[float]] = {}
    for r in runs:
        if r["accuracy"] is None or not math.isfinite(r["accuracy"]):
            continue
        cells.setdefault((r["model"], r["regime"] or "us"), []).append(100 * r["accuracy"])
    rows = []
    for model in sorted({m for m, _ in cells}):
        row = {"model": model}
        for regime in ("us", "ss", "sus", "accidental-sus"):
            values = cells.get((model, regime))
            if values:
                sd = f" ± {np.std(values, ddof=1):.1f}" if len(values) > 1 else ""
                row[regime] = f"{np.mean(values):.1f}{sd} ({len(values)})"
            else:
                row[regime] = ""
        rows.append(row)
    return rows
