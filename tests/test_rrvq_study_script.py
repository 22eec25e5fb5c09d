"""scripts/rrvq_study.py's summary over seeds (Tables 3.1-3.3's orderings), on made-up rows."""

from __future__ import annotations

import importlib.util
from pathlib import Path

SPEC = importlib.util.spec_from_file_location(
    "rrvq_study", Path(__file__).resolve().parent.parent / "scripts" / "rrvq_study.py"
)
study = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(study)


def row(bpd: float, probe: dict | None = None) -> dict:
    return {"test_bpd": bpd, **({"probe": probe} if probe else {})}


def test_orderings_are_read_per_seed_and_missing_seeds_are_left_out():
    results = {
        "digits": {
            "spatial-vae": {"0": row(2.5), "1": row(2.6)},
            "rrvq": {"0": row(2.8, {"z2": 0.7, "z1": 0.9}), "1": row(3.0, {"z2": 0.5, "z1": 0.9})},
            "rvq": {"0": row(3.1, {"z1": 0.6}), "1": row(2.9, {"z1": 0.6})},
            "rrvq-unit-direct": {"0": row(2.7), "2": row(3.5)},  # seed 2 has no rrvq: not compared
        }
    }
    summary = study.summarise(results)["digits"]
    assert summary["table_3_1_order_holds"] == {"0": True, "1": False}  # seed 1: rVQ below RRVQ
    assert summary["rrvq_beats_corner"] == {"rrvq-unit-direct": {"0": False}}
    assert summary["probe_direction_holds"] == {"0": True, "1": False}
    assert summary["test_bpd_mean"]["rrvq"] == 2.9 and round(summary["test_bpd_sd"]["rvq"], 6) == 0.141421
    table = study.markdown_table({"summary": {"digits": summary}})
    assert "| RRVQ-VAE | 2.900 ± 0.141 |" in table
