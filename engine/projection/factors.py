"""A model's latents scored against the known factors of its data: the numbers the Latent
activity page, the Compare page's sweep and scripts/disentanglement_sweep.py show.

    names, factors = known_factors(test, n=2000)
    report = disentanglement_report(model, test, group=None, with_dci=True, with_factor_vae=True)

The factors are the data set's label columns that vary: categorical ones, and numeric ones
with at most MAX_FACTOR_VALUES distinct values (shapes' scale, rotation, x and y are such),
each read as a discrete factor of its values. The codes are the posterior means E[z|x].
"""

from __future__ import annotations

import numpy as np

from engine.diagnostics.disentanglement import dci, factor_vae_score, mig, sap
from engine.errors import AtlasError
from engine.projection.encoding import encode_points

MAX_FACTOR_VALUES = 64  # a numeric label column with more distinct values is continuous, not a factor
FACTOR_VAE_VOTES = 800  # votes of batch FACTOR_VAE_BATCH (disentanglement_lib: 10,000 + 5,000 of 64)
FACTOR_VAE_BATCH = 64


def known_factors(data, n: int) -> tuple[list[str], np.ndarray]:
    """The names and the (n, k) integer values of the factors of the first n examples."""
    names, columns = [], []
    for name, column in data.labels.items():
        values = column.values[:n].numpy()
        if not column.is_categorical:
            if not np.all(np.isfinite(values)):
                continue
            distinct, values = np.unique(values, return_inverse=True)
            if len(distinct) > MAX_FACTOR_VALUES:
                continue
        if len(np.unique(values)) > 1:  # a constant column says nothing
            names.append(name)
            columns.append(values.astype(np.int64))
    if not names:
        raise AtlasError(
            "this data set has no label column with a few distinct values that varies, to score the latents against"
        )
    return names, np.stack(columns, 1)


def fixed_factor_draws(factors: np.ndarray):
    """FactorVAE's sampler on a finite data set: `draw(k, n, rng)` picks a value of factor k
    as it occurs (an example at random) and returns n indices of examples that share it, drawn
    with replacement; the other factors follow their distribution given that value, which is
    their own where the factors are independent (a full factorial set like shapes or dSprites)."""
    by_value = [{v: np.flatnonzero(column == v) for v in np.unique(column)} for column in factors.T]

    def draw(k: int, n: int, rng: np.random.Generator) -> np.ndarray:
        value = factors[rng.integers(len(factors)), k]
        return rng.choice(by_value[k][value], size=n, replace=True)

    return draw


def disentanglement_report(
    model,
    data,
    group: str | None,
    n: int = 2000,
    with_dci: bool = False,
    with_factor_vae: bool = False,
    seed: int = 0,
) -> dict:
    """MIG on the first n test examples; SAP (and DCI, which fits a boosted classifier per
    factor) fitted on the first half and scored on the second; the FactorVAE score with votes
    drawn from the same n examples. Returns {"factors", "dims", "mi" (d, k) nats,
    "entropies" (k,), "mig", "mig_per_factor", "sap", "dci" (DCIResult or None), "dci_error",
    "factor_vae" (FactorVAEResult or None), "n"}."""
    n = min(n, len(data))
    names, factors = known_factors(data, n)
    codes = encode_points(model, data, group, n)
    half = n // 2
    result = mig(codes, factors)
    report = {
        "factors": names,
        "dims": codes.shape[1],
        "n": n,
        "mi": result.mi,
        "entropies": result.entropies,
        "mig": result.score,
        "mig_per_factor": result.per_factor,
        "sap": sap(codes[:half], factors[:half], codes[half:], factors[half:]).score,
        "dci": None,
        "dci_error": None,
        "factor_vae": None,
    }
    if with_dci:
        try:
            report["dci"] = dci(codes[:half], factors[:half], codes[half:], factors[half:], seed=seed)
        except AtlasError as err:
            report["dci_error"] = str(err)
    if with_factor_vae:
        sizes = [max(2, len(np.unique(column))) for column in factors.T]
        report["factor_vae"] = factor_vae_score(
            lambda index: codes[index],
            fixed_factor_draws(factors),
            sizes,
            n_votes=FACTOR_VAE_VOTES,
            batch=FACTOR_VAE_BATCH,
            n_var=n,
            seed=seed,
            draw_any=lambda m, rng: np.arange(m) % n,
        )
    return report
