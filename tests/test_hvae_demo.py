"""The shipped HVAE demos show what the thesis reports (seed000 ch. 3): the top-down
residual-state norm grows within every resolution, the normalised-state ablation is
clearly worse in likelihood, and per-layer KL and active units agree on collapse."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.diagnostics.hvae import layer_statistics, residual_norms
from engine.loading import evaluate_bounds, load_run_model
from engine.store import Run

ASSETS = Path(__file__).resolve().parent.parent / "assets" / "runs"


def demo(preset: str):
    dirs = [d for d in ASSETS.iterdir() if json.loads((d / "config.json").read_text()).get("preset") == preset]
    assert len(dirs) == 1, f"expected one {preset} demo under assets/runs, found {dirs}"
    run = Run.from_dir(dirs[0], readonly=True)
    loaded = load_run_model(run)
    return run, loaded.model, loaded.spec.load_data("test")


@pytest.fixture(scope="module")
def plain():
    return demo("digits-hvae")


def test_top_down_norm_grows_within_every_resolution(plain):
    _, model, test = plain
    profile = residual_norms(model, test, n_batches=3, batch_size=100)
    rho = profile.within_resolution_spearman("down", min_blocks=3)
    assert set(rho) == {r for r, n in model.layers_per_resolution().items() if n >= 3}
    assert all(r >= 0.8 for r in rho.values()), rho


def test_the_norm_profile_forms_during_training(plain):
    """The published demo keeps checkpoints from along training; the latest shows a
    larger top-down norm at the last block than the first kept one."""
    run, _, test = plain
    steps = [c.step for c in run.checkpoints()]
    assert len(steps) >= 3
    first = load_run_model(run, steps[0]).model
    last = load_run_model(run, steps[-1]).model
    end = [residual_norms(m, test, n_batches=1, batch_size=100).down_mean[-1] for m in (first, last)]
    assert end[1] > end[0], f"last block's top-down norm at step {steps[-1]}: {end[1]:.3f}, at {steps[0]}: {end[0]:.3f}"


def test_normalised_state_ablation_is_clearly_worse():
    results = {}
    for preset in ("digits-hvae", "digits-hvae-normalised"):
        _, model, test = demo(preset)
        torch.manual_seed(0)
        results[preset] = evaluate_bounds(model, test, k=20, n=150)["iwae"]
    assert results["digits-hvae-normalised"] < results["digits-hvae"] - 5.0, results  # nats per image


def test_collapsed_layers_agree_between_kl_and_active_units(plain):
    _, model, test = plain
    stats = layer_statistics(model, test, n=500)
    assert 0 < stats.collapsed.sum() < len(stats.collapsed)  # some layers collapsed, some did not
    np.testing.assert_array_equal(stats.collapsed, stats.active_units == 0)
    assert stats.kl[~stats.collapsed].sum() > 0.95 * stats.kl.sum()  # the live layers hold the KL
