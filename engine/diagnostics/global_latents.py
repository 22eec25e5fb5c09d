"""What UG-VAE's global latent beta holds (seed002 ch. 4): the engine side of the "Global and
local latents" page and of scripts/ugvae_groups.py.

- `component_usage`: how many test inputs each mixture component d takes (argmax q(d | x)),
  to pick the panels of the Fig. 4.4 grid (`global_local_panels`, one per component);
- `structured_groups`: test or training groups that share something, as Sec. 4.3.3 builds
  them: one label value (a parity, a stroke colour), a digit series (Fig. 4.8c), one domain
  (Fig. 4.7), optionally with a share of random groups as a further kind;
- `group_posteriors`: q(beta | X) of each group (seed002 eqs. 4.8-4.9);
- `beta_map`: the groups' posterior means in 2-D (the top two principal axes; the thesis draws
  a t-SNE, Figs. 4.7b and 4.8) with the straight path between two groups' means, the betas the
  alignment grid (Fig. 4.7a) decodes row by row;
- `classifier_table`: Table 4.2, linear and RBF SVMs fitted on the training split's groups and
  scored on the test split's, on draws from q(beta) (as the thesis) or on its means, with and
  without the random groups as a class; `separation`: the silhouette of the groups' means by kind;
  `spread_and_width`: how far apart the groups' means lie against how wide each posterior is.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from engine.data.base import Dataset
from engine.data.groups import (
    RANDOM,
    SERIES,
    domain_groups,
    label_groups,
    random_groups,
    series_groups,
)
from engine.errors import AtlasError
from engine.models.base import model_device
from engine.models.ugvae import UGVAE

PARITY, SERIES_STRUCTURE, DOMAINS = "parity", "series", "domains"
LABEL_PREFIX = "label:"


@dataclass
class GroupSet:
    """Groups of a split: indices (n_groups, group_size) into it, their kinds (n_groups,) and
    the kinds' names ({kind: name}; RANDOM is "random")."""

    groups: torch.Tensor
    kinds: np.ndarray
    names: dict[int, str]

    def __len__(self) -> int:
        return len(self.groups)

    @property
    def group_size(self) -> int:
        return self.groups.shape[1]


@dataclass
class GroupPosteriors:
    """q(beta | X) of every group of a GroupSet: means and standard deviations (n_groups, g)."""

    mean: np.ndarray
    sd: np.ndarray
    kinds: np.ndarray
    names: dict[int, str]


@dataclass
class BetaMap:
    """Group posterior means in 2-D, points (n_groups, 2), and the path (steps, 2) between two of
    them, by one linear map x -> (x - center) @ axes.T; `explained` is each axis's share of the
    means' variance (1 and 0 for raw coordinates, when beta has at most 2 dims)."""

    points: np.ndarray
    path: np.ndarray
    path_betas: np.ndarray  # (steps, g): the interpolated betas the path shows
    axes: np.ndarray
    center: np.ndarray
    explained: np.ndarray
    method: str


# -- components and the Fig. 4.4 panels -------------------------------------------------------------
@torch.no_grad()
def component_usage(model: UGVAE, data: Dataset, n: int = 1000, chunk: int = 1000) -> np.ndarray:
    """How many of the first n inputs of `data` each component takes, argmax_d q(d | E[z | x]): (K,)."""
    n = min(n, len(data))
    device = model_device(model)
    counts = np.zeros(model.config.components, np.int64)
    for start in range(0, n, chunk):
        x = data.batch(torch.arange(start, min(start + chunk, n))).to(device)
        d = model.cluster_probabilities(x).argmax(-1).cpu().numpy()
        counts += np.bincount(d, minlength=len(counts))
    return counts


@torch.no_grad()
def global_local_panels(
    model: UGVAE,
    components: list[int],
    n_rows: int = 7,
    n_cols: int = 7,
    beta_span: float = 1.5,
    z_span: float = 3.0,
) -> torch.Tensor:
    """The Fig. 4.4 grid of each component (`global_local_grid`): (len(components), n_rows, n_cols,
    *shape); row r holds beta = r-th level of -beta_span..beta_span on every dimension, column c
    z = mu_z^(d)(beta) + t_c, t_c in -z_span..z_span. All panels are decoded in one batch."""
    if not components:
        raise AtlasError("pick at least one component to draw")
    for component in components:
        model._checked_component(component)
    model._require_global("global/local grid")
    g, shape = model.config.global_dim, model.config.input_shape
    device = model_device(model)
    betas = torch.linspace(-beta_span, beta_span, n_rows, device=device)[:, None].expand(-1, g)
    mean, _ = model.prior_params(betas)  # (rows, K, d)
    steps = torch.linspace(-z_span, z_span, n_cols, device=device)
    index = torch.as_tensor(components, device=device)
    z = mean[:, index].transpose(0, 1)[:, :, None, :] + steps[None, None, :, None]  # (P, rows, cols, d)
    beta = betas[None, :, None, :].expand(len(components), -1, n_cols, -1)
    return model.decode({"z": z, "beta": beta}).reshape(len(components), n_rows, n_cols, *shape)


def panel_components(usage: np.ndarray, n: int = 3) -> list[int]:
    """The n components that take the most inputs, most first (the panels a page opens on)."""
    order = np.argsort(-usage, kind="stable")
    return [int(c) for c in order[: max(1, min(n, len(order)))]]


# -- structured groups ----------------------------------------------------------------------------------
def group_structures(data: Dataset) -> list[str]:
    """The structures `structured_groups` can build on `data`: "parity" and "series" for a digit
    label of 10 values, "domains" for a "domain" label of two, and "label:<name>" for every
    categorical label."""
    out = []
    digit = data.labels.get("digit")
    if digit is not None and digit.is_categorical and len(digit.categories) == 10:
        out += [PARITY, SERIES_STRUCTURE]
    domain = data.labels.get("domain")
    if domain is not None and domain.is_categorical and len(domain.categories) == 2:
        out.append(DOMAINS)
    out += [LABEL_PREFIX + name for name, col in data.labels.items() if col.is_categorical]
    return out


def structured_groups(
    data: Dataset,
    structure: str,
    group_size: int,
    random_share: float = 0.0,
    epochs: int = 1,
    seed: int = 0,
) -> GroupSet:
    """Groups of `data` that share `structure` (one of `group_structures(data)`), drawn over
    `epochs` orders (epoch 0, 1, ...; groups of different epochs may share examples, as the
    digits' test split is small), plus random groups of the whole split (kind RANDOM, "random")
    until they are about `random_share` of all groups:

    - "parity": each group all even or all odd digits (kinds 0 even, 1 odd);
    - "series": position j of a group holds the j-th term of a digit series (kinds: SERIES);
    - "domains": each group from one domain (kinds 0 and 1, the label's categories);
    - "label:<name>": each group one value of that categorical label."""
    if structure not in group_structures(data):
        raise AtlasError(
            f"{data.name!r} cannot be grouped by {structure!r}; choose one of {', '.join(group_structures(data))}"
        )
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise AtlasError(f"epochs must be a positive integer, got {epochs!r}")
    if not 0.0 <= random_share < 1.0:
        raise AtlasError(f"random_share must be in [0, 1), got {random_share!r}")
    orders = [_order(data, structure, group_size, seed, epoch) for epoch in range(epochs)]
    groups = torch.cat([o[0] for o in orders])
    kinds = torch.cat([o[1] for o in orders]).numpy()
    names = _kind_names(data, structure)
    n_random = round(random_share / (1.0 - random_share) * len(groups))
    if n_random:
        per_epoch = len(data) // group_size
        extra = [random_groups(len(data), group_size, seed, epochs + e)[0] for e in range(-(-n_random // per_epoch))]
        groups = torch.cat([groups, torch.cat(extra)[:n_random]])
        kinds = np.concatenate([kinds, np.full(n_random, RANDOM)])
        names[RANDOM] = "random"
    return GroupSet(groups, kinds, names)


def _order(data: Dataset, structure: str, group_size: int, seed: int, epoch: int):
    if structure == PARITY:
        return label_groups(data.labels["digit"].values % 2, group_size, seed=seed, epoch=epoch)
    if structure == SERIES_STRUCTURE:
        per_series = max(1, len(data) // (len(SERIES) * group_size))
        return series_groups(data.labels["digit"].values, group_size, per_series, seed=seed, epoch=epoch)
    if structure == DOMAINS:
        domain = data.labels["domain"].values.numpy()
        a, b = np.flatnonzero(domain == 0), np.flatnonzero(domain == 1)
        groups, kinds = domain_groups(len(a), len(b), group_size, seed=seed, epoch=epoch)
        return torch.as_tensor(np.concatenate([a, b]))[groups], kinds  # kinds DOMAIN_A = 0, DOMAIN_B = 1
    return label_groups(data.labels[structure.removeprefix(LABEL_PREFIX)].values, group_size, seed=seed, epoch=epoch)


def _kind_names(data: Dataset, structure: str) -> dict[int, str]:
    if structure == PARITY:
        return {0: "even", 1: "odd"}
    if structure == SERIES_STRUCTURE:
        return dict(enumerate(SERIES))
    label = "domain" if structure == DOMAINS else structure.removeprefix(LABEL_PREFIX)
    return dict(enumerate(data.labels[label].categories))


@torch.no_grad()
def group_posteriors(model: UGVAE, data: Dataset, groups: GroupSet, chunk_rows: int = 8192) -> GroupPosteriors:
    """q(beta | X, Z) of every group (Z at the posterior means; seed002 eqs. 4.8-4.9), encoded in
    chunks of whole groups."""
    model._require_global("a group posterior")
    device = model_device(model)
    per_chunk = max(1, chunk_rows // groups.group_size)
    means, logvars = [], []
    for start in range(0, len(groups), per_chunk):
        block = groups.groups[start : start + per_chunk]
        q = model.encode_groups(data.batch(block.reshape(-1)).to(device), groups.group_size)
        means.append(q.mean.cpu())
        logvars.append(q.logvar.cpu())
    mean, logvar = torch.cat(means).double().numpy(), torch.cat(logvars).double().numpy()
    return GroupPosteriors(mean, np.exp(0.5 * logvar), groups.kinds, dict(groups.names))


# -- the map --------------------------------------------------------------------------------------------
def beta_map(means: np.ndarray, a: int, b: int, steps: int = 7) -> BetaMap:
    """The group means (n, g) in 2-D and the straight path from group a's mean to group b's in
    `steps` betas: raw coordinates when g <= 2 (g = 1 gets a zero second axis), else the top two
    principal axes of the means. The map is linear, so the path is straight in it too."""
    means = np.asarray(means, dtype=np.float64)
    if means.ndim != 2 or len(means) < 2:
        raise AtlasError(f"a map needs the means of at least two groups, (n, g); got shape {means.shape}")
    n, g = means.shape
    for name, i in (("a", a), ("b", b)):
        if not 0 <= i < n:
            raise AtlasError(f"group {name} must be in 0..{n - 1}, got {i}")
    if steps < 2:
        raise AtlasError(f"an interpolation path needs at least 2 steps, got {steps}")
    if g <= 2:
        axes, center, method = np.eye(2, g), np.zeros(g), "raw"
    else:
        center = means.mean(0)
        _, _, vt = np.linalg.svd(means - center, full_matrices=False)
        axes, method = vt[:2], "pca"
    t = np.linspace(0.0, 1.0, steps)[:, None]
    path_betas = (1 - t) * means[a] + t * means[b]
    points = (means - center) @ axes.T
    total = means.var(0).sum()
    explained = points.var(0) / total if total > 0 else np.zeros(2)
    return BetaMap(points, (path_betas - center) @ axes.T, path_betas, axes, center, explained, method)


# -- Table 4.2 ------------------------------------------------------------------------------------------
def posterior_features(
    post: GroupPosteriors, draws: int = 0, seed: int = 0, keep: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(features, kinds) of the groups where `keep` (bool, (n_groups,)) holds: the posterior means
    (draws = 0), or `draws` samples of q(beta | X) per group (the thesis fits its classifiers on
    samples of q(beta)), each with its group's kind."""
    keep = np.ones(len(post.kinds), bool) if keep is None else keep
    mean, sd, kinds = post.mean[keep], post.sd[keep], post.kinds[keep]
    if draws == 0:
        return mean, kinds
    eps = np.random.default_rng(seed).standard_normal((draws, *mean.shape))
    return (mean + sd * eps).reshape(-1, mean.shape[1]), np.tile(kinds, draws)


def classifier_table(
    train: GroupPosteriors, test: GroupPosteriors, draws: int = 10, seed: int = 0
) -> list[dict[str, object]]:
    """Table 4.2: for the structured kinds alone and, when there are random groups, with
    "random" as one more class, a linear and an RBF SVM (on standardised features) fitted on the
    training groups' features and scored on both splits. Each row: classes, classifier, train
    and test accuracy, the test split's chance level (its largest class's share) and the counts."""
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    rows = []
    for with_random in (False, True) if (train.kinds == RANDOM).any() else (False,):
        keep_train = np.ones(len(train.kinds), bool) if with_random else train.kinds != RANDOM
        keep_test = np.ones(len(test.kinds), bool) if with_random else test.kinds != RANDOM
        x_train, y_train = posterior_features(train, draws, seed, keep_train)
        x_test, y_test = posterior_features(test, draws, seed + 1, keep_test)
        if len(np.unique(y_train)) < 2:
            raise AtlasError(
                f"the training groups hold {len(np.unique(y_train))} kind(s); a classifier needs two; "
                "use smaller groups or more epochs"
            )
        classes = " vs ".join(train.names[k] for k in sorted(np.unique(y_train), key=lambda k: (k == RANDOM, k)))
        chance = chance_level(y_test)
        for name, kernel in (("linear SVM", "linear"), ("RBF SVM", "rbf")):
            fitted = make_pipeline(StandardScaler(), SVC(kernel=kernel)).fit(x_train, y_train)
            rows.append(
                {
                    "classes": classes,
                    "random_class": with_random,
                    "classifier": name,
                    "train_accuracy": float(fitted.score(x_train, y_train)),
                    "test_accuracy": float(fitted.score(x_test, y_test)),
                    "test_chance": chance,
                    "train_groups": int(keep_train.sum()),
                    "test_groups": int(keep_test.sum()),
                    "draws_per_group": draws,
                }
            )
    return rows


def separation(post: GroupPosteriors, with_random: bool = False) -> float:
    """The silhouette (-1..1) of the groups' posterior means by kind, random groups left out
    unless `with_random`: how far apart the kinds lie in beta space relative to their spread,
    whatever the scale of beta (a ratio of distances)."""
    from sklearn.metrics import silhouette_score

    keep = np.ones(len(post.kinds), bool) if with_random else post.kinds != RANDOM
    kinds = post.kinds[keep]
    if len(np.unique(kinds)) < 2 or len(kinds) <= len(np.unique(kinds)):
        raise AtlasError("a separation needs at least two kinds of groups and more groups than kinds")
    return float(silhouette_score(post.mean[keep], kinds))


def spread_and_width(post: GroupPosteriors, with_random: bool = False) -> tuple[float, float]:
    """(spread, width): the standard deviation of the groups' posterior means over the groups and
    the mean posterior standard deviation, each averaged over beta's dimensions. A spread much
    smaller than the width means that draws from q(beta | X) barely tell one group from another,
    however well their means do."""
    keep = np.ones(len(post.kinds), bool) if with_random else post.kinds != RANDOM
    return float(post.mean[keep].std(0).mean()), float(post.sd[keep].mean())


def chance_level(kinds: np.ndarray) -> float:
    """The accuracy of always guessing the most frequent kind."""
    _, counts = np.unique(kinds, return_counts=True)
    return float(counts.max() / counts.sum())
