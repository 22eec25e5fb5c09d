"""scripts/dctvae_comparison.py's summary over seeds and its README tables, on made-up rows."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SPEC = importlib.util.spec_from_file_location(
    "dctvae_comparison", Path(__file__).resolve().parent.parent / "scripts" / "dctvae_comparison.py"
)
dc = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(dc)


def row(in_use: int, groups: int, nll: float, attack: float, psnr: float, context: bool) -> dict:
    kept = {"psnr": psnr, "ms_ssim": 0.5, "bits_per_pixel": 0.1}
    compression = (
        {"context_only": kept, "jpeg_at_context_psnr": {**kept, "psnr": psnr + 1}}
        if context
        else {f"top_{n}": {**kept, "psnr": psnr + n} for n in range(1, 5)}
    )
    return {
        "layer_use": {"groups_in_use": in_use, "gaussian_layers_in_use": in_use - context, "latent_groups": groups},
        "likelihood": {"nll_iwae_k1000": nll, "elbo": -nll - 1},
        "attack": {str(n): {"ms_ssim": attack + 0.01 * n} for n in dc.ATTACKED},
        "compression": compression,
    }


def test_the_summary_pairs_seeds_and_counts_where_the_dctvae_is_higher():
    results = {
        "HVAE": {"0": row(2, 14, 100.0, 0.80, 12.0, False), "1": row(2, 14, 102.0, 0.70, 13.0, False)},
        "DCT-VAE": {
            "0": row(5, 14, 101.0, 0.85, 20.0, True),
            "1": row(3, 14, 105.0, 0.60, 18.0, True),
            "2": row(9, 14, 90.0, 0.99, 30.0, True),  # no HVAE of seed 2: left out of every figure
        },
    }
    s = dc.summarise(results)
    assert s["seeds"] == ["0", "1"]
    assert s["DCT-VAE"]["groups_in_use"]["mean"] == 4.0 and s["HVAE"]["groups_in_use"]["mean"] == 2.0
    assert s["nll_gap_dct_minus_hvae"]["mean"] == pytest.approx(2.0)  # (1 + 3) / 2
    assert s["nll_gap_dct_minus_hvae"]["sd"] == pytest.approx(2**0.5)
    assert all(v == 1 for v in s["attack_dct_higher"].values())  # seed 0 higher, seed 1 lower
    assert s["compression"]["DCT-VAE context only"]["psnr"]["mean"] == pytest.approx(19.0)
    assert s["compression"]["HVAE top 2"]["psnr"]["mean"] == pytest.approx(14.5)
    table = dc.markdown_table({"summary": s})
    assert "| latent groups above 0.01 nats per unit | 2.00 ± 0.00 of 14 | 4.00 ± 1.41 of 14" in table
    assert (
        "| 1 top group | 0.76 ± 0.07 | 0.73 ± 0.18 | 1 of 2 seeds |" in table
        and "| HVAE top 4 | 16.50 ± 0.71 | 0.50 ± 0.00 | 0.100 ± 0.000 |" in table
    )


def test_the_blind_attack_joins_the_table_when_every_dctvae_seed_has_it():
    results = {
        "HVAE": {"0": row(2, 14, 100.0, 0.80, 12.0, False)},
        "DCT-VAE": {"0": row(1, 14, 107.0, 0.70, 20.0, True)},
    }
    assert "attack_no_stand_in" not in dc.summarise(results)["DCT-VAE"]
    results["DCT-VAE"]["0"]["attack_no_stand_in"] = {str(n): {"ms_ssim": 0.85} for n in dc.ATTACKED}
    s = dc.summarise(results)
    assert (
        s["attack_no_stand_in_dct_higher"]["1"] == 1 and s["attack_no_stand_in_dct_higher"]["8"] == 0
    )  # 0.85 vs 0.81 and 0.88
    assert (
        "| 2 top groups | 0.82 ± 0.00 | 0.72 ± 0.00 | 0 of 1 seeds | 0.85 ± 0.00 | 1 of 1 seeds |"
        in dc.markdown_table({"summary": s})
    )


def test_no_summary_without_both_models_of_a_seed():
    assert dc.summarise({"HVAE": {"0": row(2, 14, 100.0, 0.8, 12.0, False)}}) == {}
