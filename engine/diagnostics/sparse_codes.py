"""Reading a TD-VAE or TD-IWAE the way the thesis does (seed003 §5.3–5.4; spec seed003_004
§2.8–2.10): per-unit activity, the projective fields of z1 with their Gabor census, texture
decoding from z2 and z1, and the posterior correlations of z1.

- Per-unit activity (Figs. 5.6–5.10, 5.14–5.18): over test inputs, the mean and sd of each
  unit's posterior location and the mean of its scale (z1: the Laplace location and scale b at
  the mean of q(z2 | x); z2: the Gaussian mean and sd). A unit is active when the variance of
  its location over inputs exceeds engine.diagnostics.activity's threshold (0.01); the thesis
  says "sd ≠ 0", which a float network never gives exactly.
- Projective fields (Fig. 5.19): decode(z1 + c e_j) - decode(z1 - c e_j) = 2c W[:, j] for the
  linear decoder, from z1 = 0; every active unit's field is fitted with a Gabor and sorted into
  localised / non-localised / other by engine.diagnostics.receptive_fields.
- Texture decoding (Tables 5.1–5.4): logistic regression on the posterior means of texture
  patches, trained on the textures' train split and scored on their test split, 5 fits; the
  greedy texture-selective z2 dimensions (Tables 5.2–5.3).
- The bound and its terms (Figs. 5.4–5.5): -IWAE at a large k and the ELBO's reconstruction,
  KL(z1) and KL(z2), averaged over a few draws per input.
- Posterior correlations (Tables 5.7–5.8): Pearson correlations of z1 over draws from the
  model's posterior (SIR for TD-IWAE) for the highest-contrast natural test patches (contrast:
  the sd of the raw grey patch before whitening), top-k |r| per patch and the consistency
  ratio of the reference pairs over other patches.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from engine.data import Dataset
from engine.data.patches import cut
from engine.diagnostics.activity import ACTIVE_THRESHOLD
from engine.diagnostics.decoding import (
    DecodingResult,
    SelectiveDims,
    consistency_ratio,
    greedy_selective_dims,
    linear_decoding,
    posterior_correlations,
    top_pairs,
)
from engine.diagnostics.receptive_fields import GaborFit, classify_fields, fit_gabors
from engine.models.posteriors import Laplace
from engine.randomness import random_stream

SHIFT = 1.0  # c of the projective fields


@dataclass
class UnitStatistics:
    """One latent group's per-unit statistics over a data set; arrays (dim,)."""

    loc_mean: np.ndarray  # mean over x of the posterior location
    loc_sd: np.ndarray  # sd over x of the posterior location
    scale_mean: np.ndarray  # mean over x of the posterior scale (Laplace b, Gaussian sd)
    scale_name: str  # "Laplace scale b" or "Gaussian sd"

    @property
    def active(self) -> np.ndarray:
        return self.loc_sd**2 > ACTIVE_THRESHOLD


def _batches(data: Dataset, n: int, batch_size: int = 500):
    for start in range(0, min(n, len(data)), batch_size):
        yield data.batch(torch.arange(start, min(start + batch_size, n, len(data))))


@torch.no_grad()
def unit_statistics(model, data: Dataset, n: int = 2000) -> dict[str, UnitStatistics]:
    """Per-unit location and scale statistics of every latent group over the first n examples."""
    device = next(model.parameters()).device
    locs: dict[str, list[torch.Tensor]] = {}
    scales: dict[str, list[torch.Tensor]] = {}
    kinds: dict[str, str] = {}
    for x in _batches(data, n):
        for name, q in model.encode(x.to(device)).items():
            laplace = isinstance(q, Laplace)
            kinds[name] = "Laplace scale b" if laplace else "Gaussian sd"
            locs.setdefault(name, []).append(q.mean.flatten(1).double().cpu())
            scales.setdefault(name, []).append((q.base_dist.scale if laplace else q.stddev).flatten(1).double().cpu())
    out = {}
    for name in locs:
        loc, scale = torch.cat(locs[name]), torch.cat(scales[name])
        out[name] = UnitStatistics(
            loc_mean=loc.mean(0).numpy(),
            loc_sd=loc.std(0, unbiased=False).numpy(),
            scale_mean=scale.mean(0).numpy(),
            scale_name=kinds[name],
        )
    return out


@torch.no_grad()
def projective_fields(model, shift: float = SHIFT) -> np.ndarray:
    """decode(z1 + c e_j) - decode(z1 - c e_j) at z1 = 0, z2 = 0 for every unit j: (z1_dim, h, w)."""
    groups = {g.name: g.size for g in model.latent_groups}
    device = next(model.parameters()).device
    eye = shift * torch.eye(groups["z1"], device=device)
    z2 = torch.zeros(groups["z1"], groups["z2"], device=device)
    diff = model.decode({"z1": eye, "z2": z2}) - model.decode({"z1": -eye, "z2": z2})
    return diff.reshape(groups["z1"], *diff.shape[-2:]).cpu().numpy()


@dataclass
class FieldCensus:
    """The projective fields of the active z1 units with their Gabor fits and classes."""

    units: np.ndarray  # the active units' indices
    fields: np.ndarray  # (units, h, w)
    fits: list[GaborFit]
    labels: list[str]  # "localised", "non-localised" or "other" per unit
    counts: dict[str, int]


def field_census(model, data: Dataset, n: int = 2000, stats: UnitStatistics | None = None) -> FieldCensus:
    """Fit a Gabor to the projective field of every active z1 unit and count the classes."""
    stats = stats or unit_statistics(model, data, n)["z1"]
    units = np.flatnonzero(stats.active)
    fields = projective_fields(model)[units]
    fits = fit_gabors(fields)
    classes = classify_fields(fits, fields.shape[-1])
    return FieldCensus(units=units, fields=fields, fits=fits, labels=list(classes.labels), counts=dict(classes.counts))


@torch.no_grad()
def posterior_means(model, data: Dataset, group: str, n: int) -> np.ndarray:
    """The posterior location of `group` for the first n examples, (n, dim)."""
    device = next(model.parameters()).device
    return np.concatenate([model.encode(x.to(device))[group].mean.cpu().numpy() for x in _batches(data, n)])


@torch.no_grad()
def bound_terms(
    model, data: Dataset, n_bound: int = 300, k: int = 1000, n_terms: int = 2000, draws: int = 10, seed: int = 0
) -> dict[str, float]:
    """-IWAE (k draws) over the first n_bound examples and the ELBO's terms over the first
    n_terms, averaged over `draws` draws each (beta = 1): nats per example."""
    device = next(model.parameters()).device
    with random_stream(seed, device):
        x = data.batch(torch.arange(min(n_bound, len(data)))).to(device)
        iwae = torch.cat([model.elbo(x[i : i + 25], k=k).total for i in range(0, len(x), 25)])
        x = data.batch(torch.arange(min(n_terms, len(data)))).to(device)
        parts = [model.elbo(x) for _ in range(draws)]
    mean = lambda ts: float(torch.stack(ts).double().mean())  # noqa: E731
    return {
        f"neg_iwae_k{k}": -float(iwae.double().mean()),
        "neg_elbo": -mean([p.total for p in parts]),
        "recon": mean([p.recon for p in parts]),
        "kl_z1": mean([p.kl["z1"] for p in parts]),
        "kl_z2": mean([p.kl["z2"] for p in parts]),
    }


@dataclass
class TextureDecoding:
    z2: DecodingResult
    z1: DecodingResult
    selective: SelectiveDims
    families: list[str]


def texture_decoding(
    model, train: Dataset, test: Dataset, n_train: int = 5000, n_test: int = 2000, seed: int = 0
) -> TextureDecoding:
    """Tables 5.1–5.4: the texture family decoded from z2 and from z1 posterior means."""
    y_train = train.labels["family"].values[: min(n_train, len(train))].numpy()
    y_test = test.labels["family"].values[: min(n_test, len(test))].numpy()
    features = {
        group: (posterior_means(model, train, group, n_train), posterior_means(model, test, group, n_test))
        for group in ("z2", "z1")
    }
    z2_train, z2_test = features["z2"]
    return TextureDecoding(
        z2=linear_decoding(z2_train, y_train, z2_test, y_test, seed=seed),
        z1=linear_decoding(*features["z1"][:1], y_train, features["z1"][1], y_test, seed=seed),
        selective=greedy_selective_dims(z2_train, y_train, z2_test, y_test, seed=seed),
        families=list(train.labels["family"].categories),
    )


def contrast_order(data: Dataset) -> np.ndarray:
    """Indices of a `patches` data set from the highest to the lowest contrast: the sd of the
    raw grey patch before whitening (after it, every patch has sd 1)."""
    raw = cut(data.meta["origins"], data.shape[-1]).flatten(1)
    return np.argsort(-raw.std(1).numpy(), kind="stable")


@dataclass
class CorrelationStudy:
    """z1 posterior correlations over draws, per patch (thesis §5.4.1)."""

    patches: np.ndarray  # the patches' indices in the data set, highest contrast first
    example: np.ndarray  # (d, d) the correlations of the example patch (the highest-contrast one)
    example_top: list[tuple[int, int, float]]  # its top-10 pairs by |r|
    top5_mean: np.ndarray  # per patch: mean of its top-5 |r|
    consistency: float  # Table 5.8's ratio: reference pairs of 3 patches over the others
    units: np.ndarray  # the units correlated: the active ones (every unit when fewer than 2 are active)


@torch.no_grad()
def correlation_study(
    model, data: Dataset, n_patches: int = 100, n_samples: int = 1000, proposals: int = 100, seed: int = 0
) -> CorrelationStudy:
    """Correlations of the active z1 units over n_samples posterior draws for each of the n_patches
    highest-contrast patches; the consistency ratio takes the top-5 pairs of 3 of them (chosen
    from the seed) and scores each pair over the other patches."""
    device = next(model.parameters()).device
    active = unit_statistics(model, data, 2000)["z1"].active
    units = np.flatnonzero(active) if active.sum() >= 2 else np.arange(len(active))  # all, if too few move
    order = contrast_order(data)[:n_patches]
    correlations = []
    with random_stream(seed, device):
        for i in order:
            x = data.batch(torch.tensor([int(i)])).to(device)
            z1 = model.posterior_samples(x, n_samples, proposals=proposals)["z1"][:, 0].cpu().numpy()
            correlations.append(posterior_correlations(z1[:, units]))
    r = np.stack(correlations)
    tops = [top_pairs(c, 5) for c in r]
    rng = np.random.default_rng(seed)
    refs = rng.choice(len(order), size=min(3, len(order)), replace=False)
    others = np.setdiff1d(np.arange(len(order)), refs)
    ratios = [consistency_ratio(tops[j], r[others]) for j in refs] if len(others) > 1 else [float("nan")]
    return CorrelationStudy(
        patches=order,
        example=r[0],
        example_top=top_pairs(r[0], 10),
        top5_mean=np.array([np.mean([abs(v) for *_, v in t]) for t in tops]),
        consistency=float(np.mean(ratios)),
        units=units,
    )
