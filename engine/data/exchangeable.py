"""`exchangeable`: sequences z_1..z_L with theta ~ prior and z_i ~ p(. | theta) i.i.d.,
the training data of the neural in-context learner (seed000 §4.5, "a small Transformer
trained by maximum likelihood on sequences with theta ~ prior, Z_i ~ p(. | theta)").

- family "bernoulli": theta ~ Beta(1, 1), z_i ~ Bernoulli(theta);
- family "gaussian":  theta ~ N(0, 1),    z_i ~ N(theta, 1).

The Bayes-optimal next-token predictor for these data is the conjugate model in
`engine.sequence.conjugate.PRIORS` (the reference a trained learner is compared with).
"""

from __future__ import annotations

import torch

from engine.data.base import Dataset, LabelColumn
from engine.data.checks import check_choice, check_fraction, check_int, check_seed, check_split
from engine.data.split import generator, split_parts
from engine.sequence.conjugate import PRIORS
from engine.sequence.data import sample_observations

FAMILIES = tuple(PRIORS)
MAX_VALUES = 50_000_000  # n * length floats kept in memory (200 MB)


def _make(part: str, count: int, seed: int, family: str, length: int) -> dict:
    """`count` sequences of `length` for `part` ("train" or "test")."""
    g = generator(seed, f"exchangeable/{family}/{part}")
    prior = PRIORS[family].posterior(torch.empty(count, 0))  # no observations: the prior, batch (count,)
    theta = prior.sample((), generator=g)  # (count,)
    return {"x": sample_observations(family, theta, length, g), "theta": theta}


def load(
    split: str = "train",
    seed: int = 0,
    *,
    family: str = "bernoulli",
    n: int = 20000,
    length: int = 128,
    test_fraction: float = 0.2,
) -> Dataset:
    """`n` sequences over train + test; x (n_split, length), label column "theta"."""
    split, seed = check_split(split), check_seed(seed)
    family = check_choice("family", family, FAMILIES)
    n = check_int("n", n, 10, 10_000_000)
    length = check_int("length", length, 2, 100_000)
    check_int("n * length", n * length, 20, MAX_VALUES)
    test_fraction = check_fraction("test_fraction", test_fraction)
    made = [_make(part, count, seed, family, length) for part, count in split_parts(split, n, test_fraction)]
    x = torch.cat([m["x"] for m in made])
    theta = torch.cat([m["theta"] for m in made])
    value_range = (0.0, 1.0) if family == "bernoulli" else (float(x.min()), float(x.max()))
    return Dataset(
        name="exchangeable",
        split=split,
        x=x,
        labels={"theta": LabelColumn("theta", theta)},
        shape=(length,),
        value_range=value_range,
        kind="sequence",
        meta={"family": family},
    )
