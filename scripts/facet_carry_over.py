"""Do the MFCVAE's facets carry over to two-factor data they were not tuned on? (issue 19)

Five two-factor image datasets: `facet-digits` (digit x colour) and `shapes` (shape x
colour), which the first MFCVAE presets were tuned on, and the three `styled-digits`
(digit x rotation, digit x stroke thickness, digit x background texture). On each, with
one recipe (`engine.training.presets.mfcvae_recipe`) and for each seed, this trains
the two-facet MFCVAE and the single-facet VaDE (the same network with facet 0 only),
runs k-means on the test pixels at each facet's K, and scores every clustering on the
test split against both factors (majority mapping when K exceeds the number of values).

The issue asks, on every dataset:
  1. each factor's best facet beats k-means on pixels at that facet's K;
  2. the MFCVAE beats VaDE on the factor VaDE loses: the factor on which VaDE falls
     furthest below k-means at its K (its one clustering follows the other factor).

    python scripts/facet_carry_over.py --seeds 0 1 2 3 4
    python scripts/facet_carry_over.py --datasets rotation texture --seeds 0 --out /tmp/try.json \\
        --model '{"beta": [1, 1]}'

Writes the JSON after every seed (default scripts/results/facet-carry-over.json) and
prints the table the README quotes.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from facet_seeds import facet_scores, kmeans_scores, single_facet  # noqa: E402

from engine.training import RunSpec, train_or_reuse  # noqa: E402
from engine.training.presets import CARRY_OVER, mfcvae_recipe  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def spec_for(dataset: str, seed: int, model: dict, train: dict) -> RunSpec:
    recipe = mfcvae_recipe(CARRY_OVER[dataset][0])
    recipe["model"].update(model)
    recipe["train"].update({**train, "seed": seed, "progress": False})
    return RunSpec.from_dict({**recipe, "preset": f"{dataset}-mfcvae"})


def run_seed(dataset: str, spec: RunSpec, runs_root: str) -> dict:
    t0, seed = time.time(), spec.train.seed
    mfcvae = facet_scores(train_or_reuse(spec, runs_root, f"{dataset}-s{seed}"), with_probe=False)
    t1 = time.time()
    vade_spec = RunSpec.from_dict({**spec.to_dict(), "model": {**spec.model, **single_facet(spec.model)}})
    vade = facet_scores(train_or_reuse(vade_spec, runs_root, f"{dataset}-vade-s{seed}"), with_probe=False)
    t2 = time.time()
    kmeans = {f"K={k}": kmeans_scores(spec, k, seed) for k in sorted(set(spec.model["clusters"]))}
    return {
        "seed": seed,
        "mfcvae": mfcvae["accuracy"],
        "vade": vade["accuracy"],
        "kmeans": kmeans,
        "seconds": {"mfcvae": round(t1 - t0, 1), "vade": round(t2 - t1, 1), "kmeans": round(time.time() - t2, 1)},
    }


@functools.cache  # the summary is rewritten after every seed
def pixel_variance_share(dataset: str) -> dict[str, float]:
    """How much of the test pixels' variance each factor explains on its own: the variance
    of the class means (weighted by class size) over the total variance, summed over pixels."""
    data, factors = CARRY_OVER[dataset]
    test = RunSpec.from_dict(mfcvae_recipe(data)).load_data("test")
    x = test.batch(torch.arange(len(test))).flatten(1).double()
    total = ((x - x.mean(0)) ** 2).sum()
    share = {}
    for factor in factors:
        codes = test.labels[factor].values
        between = sum((codes == c).sum() * ((x[codes == c].mean(0) - x.mean(0)) ** 2).sum() for c in codes.unique())
        share[factor] = float(between / total)
    return share


def kmeans_by_k(dataset: str, ks=(4, 10, 30, 150), seed: int = 0) -> dict:
    """k-means on the test pixels at several K (one seed), scored on both factors: how
    much of each factor the pixels give away at each K."""
    data, factors = CARRY_OVER[dataset]
    spec = RunSpec.from_dict({**mfcvae_recipe(data), "train": {"seed": seed}})
    return {f"K={k}": {f: v for f, v in kmeans_scores(spec, k, seed).items() if f.split("/")[1] in factors} for k in ks}


def stat(values) -> dict:
    v = np.asarray(values, dtype=float)
    return {"mean": float(v.mean()), "sd": float(v.std(ddof=1)) if len(v) > 1 else 0.0, "values": v.tolist()}


def summarise(dataset: str, rows: list[dict], clusters: list[int]) -> dict:
    """Per factor: every facet's accuracy, the best facet (by mean over seeds), k-means at
    its K and VaDE; then the two goals."""
    factors = CARRY_OVER[dataset][1]
    out: dict = {"factors": {}, "pixel variance explained": pixel_variance_share(dataset)}
    for factor in factors:
        facets = {f"facet{j}": stat([r["mfcvae"][f"facet{j}/{factor}"] for r in rows]) for j in range(len(clusters))}
        best = max(facets, key=lambda f: facets[f]["mean"])
        k = clusters[int(best.removeprefix("facet"))]
        k_vade = clusters[0]
        out["factors"][factor] = {
            "facets": facets,
            "best facet": best,
            f"k-means at the best facet's K ({k})": stat([r["kmeans"][f"K={k}"][f"pixels/{factor}"] for r in rows]),
            "vade": stat([r["vade"][f"facet0/{factor}"] for r in rows]),
            f"k-means at VaDE's K ({k_vade})": stat([r["kmeans"][f"K={k_vade}"][f"pixels/{factor}"] for r in rows]),
        }
    row = out["factors"]

    def kmeans_at_best(f):
        return next(v for name, v in row[f].items() if name.startswith("k-means at the best"))

    def kmeans_at_vade(f):
        return next(v for name, v in row[f].items() if name.startswith("k-means at VaDE"))

    lost = min(factors, key=lambda f: row[f]["vade"]["mean"] - kmeans_at_vade(f)["mean"])
    best_on_lost = row[lost]["facets"][row[lost]["best facet"]]
    out["factor vade loses"] = lost
    out["goals"] = {
        **{
            f"{f}: best facet beats k-means": row[f]["facets"][row[f]["best facet"]]["mean"] > kmeans_at_best(f)["mean"]
            for f in factors
        },
        f"{lost}: mfcvae beats vade": best_on_lost["mean"] > row[lost]["vade"]["mean"],
    }
    out["seeds where goals hold"] = {
        **{
            f"{f}: best facet beats k-means": int(
                sum(
                    a > b for a, b in zip(row[f]["facets"][row[f]["best facet"]]["values"], kmeans_at_best(f)["values"])
                )
            )
            for f in factors
        },
        f"{lost}: mfcvae beats vade": int(
            sum(a > b for a, b in zip(best_on_lost["values"], row[lost]["vade"]["values"]))
        ),
    }
    return out


def markdown(results: dict) -> str:
    lines = [
        "| dataset | factor | MFCVAE best facet | k-means, same K | VaDE (J = 1) | goals |",
        "|---|---|---|---|---|---|",
    ]
    for dataset, entry in results.items():
        s = entry["summary"]
        for factor, row in s["factors"].items():
            best = row["facets"][row["best facet"]]
            km = next(v for name, v in row.items() if name.startswith("k-means at the best"))
            k = next(name for name in row if name.startswith("k-means at the best")).split("(")[1].rstrip(")")
            goals = [
                f"{name.split(': ')[1]} {s['seeds where goals hold'][name]}/{len(best['values'])}"
                for name in s["goals"]
                if name.startswith(f"{factor}:")
            ]
            lines.append(
                f"| {dataset} | {factor} | {row['best facet']}: {100 * best['mean']:.1f} ± {100 * best['sd']:.1f} "
                f"| {100 * km['mean']:.1f} ± {100 * km['sd']:.1f} (K = {k}) "
                f"| {100 * row['vade']['mean']:.1f} ± {100 * row['vade']['sd']:.1f} | {'; '.join(goals)} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="+", default=list(CARRY_OVER), choices=list(CARRY_OVER))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--model", default="{}", help="JSON overrides of the recipe's model config")
    parser.add_argument("--train", default="{}", help="JSON overrides of the recipe's train config")
    parser.add_argument("--runs", default=None, help="keep the trained runs here (default: a temporary directory)")
    parser.add_argument("--out", default=str(RESULTS / "facet-carry-over.json"))
    args = parser.parse_args(argv)
    model, train = json.loads(args.model), json.loads(args.train)
    out = Path(args.out)
    results = json.loads(out.read_text())["datasets"] if out.exists() else {}
    with tempfile.TemporaryDirectory() as tmp:
        for dataset in args.datasets:
            rows = []
            for seed in args.seeds:
                spec = spec_for(dataset, seed, model, train)
                rows.append(run_seed(dataset, spec, args.runs or tmp))
                print(json.dumps({"dataset": dataset, "seed": seed, **rows[-1]["seconds"]}), flush=True)
                results[dataset] = {
                    "config": {"data": spec.data, "model": spec.model, "train": spec.to_dict()["train"]},
                    "k-means by K (seed 0)": results.get(dataset, {}).get("k-means by K (seed 0)")
                    or kmeans_by_k(dataset),
                    "summary": summarise(dataset, rows, list(spec.model["clusters"])),
                    "seeds": rows,
                }
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_text(
                    json.dumps(
                        {
                            "machine": platform.machine(),
                            "threads": torch.get_num_threads(),
                            "load_average": os.getloadavg(),
                            "datasets": results,
                        },
                        indent=1,
                    )
                )
    print(markdown(results))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
