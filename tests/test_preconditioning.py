"""The preconditioning toy (engine/models/preconditioning.py): the constraint holds, the
preconditioner is the model's starting point, and the good preconditioner wins."""

import dataclasses

import numpy as np
import pytest
import torch

from engine.errors import AtlasError
from engine.models.preconditioning import (
    GOOD,
    PRECONDITIONERS,
    PreconditionedResNet,
    PreconditioningConfig,
    fit,
    train,
)


def test_every_weight_matrix_keeps_a_frobenius_norm_below_one_while_training():
    config = PreconditioningConfig(target="v^3", preconditioner="v", steps=30, lr=0.5)  # large steps push hard
    model = PreconditionedResNet(config, torch.Generator().manual_seed(0))
    losses = train(model)
    assert np.isfinite(losses).all()
    norms = [model.inner.weight.norm().item(), model.outer.weight.norm().item()]
    assert max(norms) <= config.max_norm + 1e-6 < 1
    assert model.outer.weight.norm().item() > 0.5  # it did move: the bound is active, not idle


@pytest.mark.parametrize("reading", ["stream", "composition", "flow-increment", "repeat"])
@pytest.mark.parametrize("pre", list(PRECONDITIONERS))
def test_with_r_silenced_the_model_is_its_preconditioner(reading, pre):
    config = PreconditioningConfig(target="v^2", preconditioner=pre, reading=reading, steps=20, lr=0.05)
    model = PreconditionedResNet(config, torch.Generator().manual_seed(1))
    train(model)  # weights away from their start
    with torch.no_grad():
        model.outer.weight.zero_()
        model.outer.bias.zero_()
        v, _ = config.grid()
        assert torch.equal(model(v), PRECONDITIONERS[pre](v))


@pytest.mark.parametrize("target", ["v^2", "v^3"])
def test_a_short_fit_with_the_good_preconditioner_beats_the_bad_one_tenfold(target):
    good = GOOD[target]
    bad = next(p for p in PRECONDITIONERS if p != good)
    mse = {p: fit(PreconditioningConfig(target=target, preconditioner=p, steps=100), seed=3).mse for p in (good, bad)}
    assert mse[good] < 0.1 * mse[bad], mse


def test_a_fit_is_deterministic_per_seed():
    config = PreconditioningConfig(steps=40)
    a, b, c = fit(config, 5), fit(config, 5), fit(config, 6)
    assert np.array_equal(a.fitted, b.fitted) and np.array_equal(a.losses, b.losses)
    assert not np.array_equal(a.fitted, c.fitted)
    assert a.mse == pytest.approx(np.mean((a.fitted - a.target) ** 2), rel=1e-5)
    assert np.array_equal(a.target, a.v**2) and np.array_equal(a.preconditioner, np.abs(a.v))


def test_bad_settings_are_refused():
    with pytest.raises(AtlasError, match="target"):
        PreconditioningConfig(target="v^4")
    with pytest.raises(AtlasError, match="max_norm"):
        dataclasses.replace(PreconditioningConfig(), max_norm=1.0)
