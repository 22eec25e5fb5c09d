"""scripts/disentanglement_sweep.py's summary over seeds and its table, on made-up rows."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SPEC = importlib.util.spec_from_file_location(
    "disentanglement_sweep", Path(__file__).resolve().parent.parent / "scripts" / "disentanglement_sweep.py"
)
sweep = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(sweep)


def row(objective: str, beta: float, seed: int, mig: float) -> dict:
    scores = {name: 0.5 for name in sweep.SCORES}
    return {"objective": objective, "beta": beta, "seed": seed, "test_elbo": -700.0 - seed, **scores, "mig": mig}


def test_the_vae_is_one_row_and_each_objective_and_beta_another_with_mean_and_sd_over_seeds():
    results = {
        "vae-b1-s0": row("vae", 1.0, 0, 0.1),
        "vae-b1-s1": row("vae", 1.0, 1, 0.3),
        "beta-tcvae-b4-s0": row("beta-tcvae", 4.0, 0, 0.2),
        "beta-vae-b4-s0": row("beta-vae", 4.0, 0, 0.4),
        "demo": {**row("beta-vae", 2.0, 0, 0.9), "objective": "beta-vae"},  # reported apart
    }
    summary = sweep.summary(results)
    assert [(r["objective"], r["beta"], r["seeds"]) for r in summary] == [
        ("vae", 1.0, [0, 1]),
        ("beta-tcvae", 4.0, [0]),
        ("beta-vae", 4.0, [0]),
    ]
    assert summary[0]["mig"]["mean"] == pytest.approx(0.2) and summary[0]["mig"]["sd"] == pytest.approx(
        0.1414, abs=1e-4
    )
    assert summary[1]["mig"]["sd"] == 0.0
    table = sweep.table({"summary": summary, "results": results})
    assert "| VAE | 1 | 2 | -700.5 ± 0.7 | 0.200 ± 0.141 |" in table
    assert table.splitlines()[-1].startswith("| shapes demo (β-VAE, 12,000 steps) | 2 | 1 | -700.0 | 0.900 |")
    assert sweep.key_of("beta-vae", 1.0, 2) == "vae-b1-s2" and sweep.key_of("beta-tcvae", 6.0, 0) == "beta-tcvae-b6-s0"
