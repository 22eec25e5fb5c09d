"""engine/projection/factors.py: which label columns are factors, FactorVAE's sampler on a finite
data set, and the report on codes whose relation to the factors is known by construction."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.data.base import LabelColumn
from engine.errors import AtlasError
from engine.models.base import LatentGroup
from engine.models.posteriors import DiagonalGaussian
from engine.projection.factors import MAX_FACTOR_VALUES, disentanglement_report, fixed_factor_draws, known_factors


class Labelled:
    """The least a data set offers here: labels, len(), batch(index)."""

    def __init__(self, x: torch.Tensor, labels: dict[str, LabelColumn]):
        self.x, self.labels, self.shape = x, labels, tuple(x.shape[1:])

    def __len__(self) -> int:
        return len(self.x)

    def batch(self, index) -> torch.Tensor:
        return self.x[index]


class Identity(torch.nn.Module):
    """A "model" whose posterior mean is its input: the codes are whatever the test makes them."""

    def __init__(self, d: int):
        super().__init__()
        self.latent_groups = [LatentGroup("z", (d,))]
        self.anchor = torch.nn.Parameter(torch.zeros(()))

    def encode(self, x):
        return {"z": DiagonalGaussian(x, torch.zeros_like(x))}


def factor_data(n: int = 3000, seed: int = 0) -> tuple[np.ndarray, dict[str, LabelColumn]]:
    rng = np.random.default_rng(seed)
    a, b = rng.integers(4, size=n), rng.integers(5, size=n)
    labels = {
        "a": LabelColumn("a", torch.as_tensor(a), categories=list("wxyz")),
        "b": LabelColumn("b", torch.as_tensor(0.25 * b, dtype=torch.float32)),  # numeric, 5 values
        "noise": LabelColumn("noise", torch.as_tensor(rng.random(n), dtype=torch.float32)),  # continuous
        "constant": LabelColumn("constant", torch.zeros(n, dtype=torch.int64), categories=["only"]),
    }
    return np.stack([a, b], 1), labels


def test_categorical_and_few_valued_numeric_columns_are_factors_and_the_others_are_not():
    factors, labels = factor_data()
    names, values = known_factors(Labelled(torch.zeros(len(factors), 2), labels), 2000)
    assert names == ["a", "b"]
    np.testing.assert_array_equal(values, factors[:2000])  # b's values 0, 0.25, ... become classes 0..4
    many = {"c": LabelColumn("c", torch.arange(2 * MAX_FACTOR_VALUES, dtype=torch.float32))}
    with pytest.raises(AtlasError, match="no label column with a few distinct values"):
        known_factors(Labelled(torch.zeros(2 * MAX_FACTOR_VALUES, 2), many), 1000)


def test_a_fixed_factor_draw_shares_the_value_and_lets_the_others_vary():
    factors, _ = factor_data()
    draw, rng = fixed_factor_draws(factors), np.random.default_rng(1)
    for k in (0, 1):
        index = draw(k, 64, rng)
        assert len(index) == 64 and len(np.unique(factors[index, k])) == 1
        assert len(np.unique(factors[index, 1 - k])) > 1


def test_codes_that_copy_the_factors_score_high_and_pure_noise_scores_low():
    factors, labels = factor_data()
    rng = np.random.default_rng(2)
    copies = np.concatenate(
        [factors + 0.1 * rng.standard_normal(factors.shape), rng.standard_normal((len(factors), 1))], 1
    )
    noise = rng.standard_normal((len(factors), 3))
    scores = {}
    for name, codes in (("copies", copies), ("noise", noise)):
        data = Labelled(torch.as_tensor(codes, dtype=torch.float32), labels)
        scores[name] = disentanglement_report(Identity(codes.shape[1]), data, None, 2000, with_factor_vae=True)
    copy, pure = scores["copies"], scores["noise"]
    assert copy["factor_vae"].score == 1.0 and copy["mig"] > 0.7 and copy["sap"] > 0.5
    assert list(copy["factor_vae"].majority[:2]) == [0, 1]  # each copy votes for its own factor
    assert pure["mig"] < 0.05 and pure["sap"] < 0.05 and pure["factor_vae"].score < 0.8
