"""Speed of the sparse-latent families (issue 21): training throughput of TD-VAE / TD-IWAE and
Bijecta at their CPU presets' sizes and at the thesis's sizes, and the time to draw the
projective-field gallery of 450 units (goal: under a second) and to fit a Gabor to each field.

Each figure is the median of several repeats, one after another in one process, with the
thread count and the load average recorded. There is no peer implementation of these models
to run beside them; the Gabor fits are put beside scikit-learn's FastICA on the same patches,
the classical way to get such fields, as a reference for what a page waits for.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/sparse_codes_speed.py [--repeats 5]

Writes benchmarks/results/sparse_codes_speed.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.common import environment, loadavg, median_time, preset_case, training_throughput  # noqa: E402
from engine.data import load_dataset  # noqa: E402
from engine.diagnostics.receptive_fields import field_gallery, fit_gabors  # noqa: E402
from engine.diagnostics.sparse_codes import projective_fields  # noqa: E402
from engine.models import FAMILIES, build_model  # noqa: E402

THESIS = {"input_shape": [1, 20, 20], "z1_dim": 450, "z2_dim": 20, "hidden": [1000], "head_hidden": [500]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "sparse_codes_speed.json")
    args = parser.parse_args()
    start_load = loadavg()
    results: dict = {"training": {}, "gallery": {}}

    presets = ["patches-tdvae", "patches-tdiwae-k4", "patches-tdiwae-k10"]
    presets += [p for p in ("hearts-bijecta", "digits-bijecta", "digits-linear-ica") if "bijecta" in FAMILIES]
    for preset in presets:
        family, config, batch = preset_case(preset)
        steps = 20 if family != "bijecta" else 5
        results["training"][preset] = training_throughput(family, config, batch, steps, args.repeats)
        print(preset, round(results["training"][preset]["median_examples_per_s"]), "examples/s", flush=True)
    thesis_batch = torch.randn(400, 1, 20, 20)
    for family, extra in (("tdvae", {}), ("tdiwae", {"k": 10})):
        name = f"{family}-thesis-size" + (f"-k{extra['k']}" if extra else "")
        results["training"][name] = training_throughput(family, {**THESIS, **extra}, thesis_batch, 3, args.repeats)
        print(name, round(results["training"][name]["median_examples_per_s"]), "examples/s", flush=True)

    torch.manual_seed(0)
    model = build_model("tdvae", THESIS).eval()
    fields = projective_fields(model)
    gallery_s, gallery_times = median_time(lambda: field_gallery(projective_fields(model), upscale=2), args.repeats)
    results["gallery"]["projective_fields_and_gallery_450_units_s"] = gallery_s
    results["gallery"]["gallery_seconds"] = [round(t, 4) for t in gallery_times]
    fit_s, _ = median_time(lambda: fit_gabors(fields[:45]), max(1, args.repeats // 2))
    results["gallery"]["gabor_fits_per_unit_s"] = fit_s / 45
    results["gallery"]["gabor_fits_450_units_s_estimated"] = 450 * fit_s / 45

    from sklearn.decomposition import FastICA

    patches = load_dataset("patches", split="train", seed=0, size=20, n=12_500).x[torch.arange(10_000)]
    x = patches.flatten(1).numpy().astype(np.float64)
    ica_s, _ = median_time(
        lambda: FastICA(n_components=100, whiten="unit-variance", max_iter=200, random_state=0).fit(x), 1
    )
    results["gallery"]["reference_fastica_100_components_10000_patches_s"] = ica_s
    results["environment"] = environment(start_load)
    results["repeats"] = args.repeats
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1))
    print(json.dumps(results["gallery"], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
