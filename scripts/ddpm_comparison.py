"""Residual U-Net against Multi-ResNets, staged against not (issue 20; seed000 Table C.1).

For each denoiser preset on the 16x16 digits and each seed, this trains the DDPM (or reuses
a finished run of the same spec under --runs-root), draws samples from its EMA weights and
scores them by the Fréchet distance on the features of a small classifier trained on the
same digits (engine.diagnostics.frechet: not Inception, whose features describe 299x299
photographs). The reference is the test split; the distance of the training images to it
is printed beside as the floor that real digits reach.

Table C.1 (CIFAR-10, FID): Residual U-Net 7.86 < Multi-ResNet with the saved parameters
12.44 < without them 14.87; staged 8.33 against 7.86 non-staged.

    python scripts/ddpm_comparison.py --seeds 0 1 2
    python scripts/ddpm_comparison.py --presets digits-ddpm --seeds 0 --samples 100 --out /tmp/try.json

Writes the JSON after every run (default scripts/results/ddpm-comparison.json); a run the
file has scored already is skipped, and --merge folds in the results of other files (seeds
run in parallel processes).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from engine.diagnostics.frechet import classifier_frechet_distance, train_feature_classifier  # noqa: E402
from engine.loading import load_run_model  # noqa: E402
from engine.training import RunSpec, train_or_reuse  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
PRESETS = [
    "digits-ddpm",
    "digits-multiresnet-v1",
    "digits-multiresnet",
    "digits-ddpm-staged",
    "digits-ddpm-staged-frozen",
]
SEED_PAPER = {
    "digits-ddpm": 7.86,
    "digits-multiresnet-v1": 12.44,
    "digits-multiresnet": 14.87,
    "digits-ddpm-staged": 8.33,
}


def images(spec: RunSpec, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    data = spec.load_data(split)
    x = data.batch(torch.arange(len(data)))
    return x, data.labels["digit"].values


BOUND_IMAGES = 100  # the first test images, for the bound over every step


def score_run(run, classifier, reference: torch.Tensor, samples: int, seed: int) -> dict:
    loaded = load_run_model(run)
    model = loaded.model.eval()
    t0 = time.time()
    x = model.sample(samples, generator=torch.Generator().manual_seed(1000 + seed))
    sampling = time.time() - t0
    return {
        "frechet": classifier_frechet_distance(classifier, reference, x),
        **bound_score(model, reference, seed),
        "parameters": sum(p.numel() for p in model.parameters()),
        "sampling_seconds": round(sampling, 1),
        "weights": loaded.weights,
    }


def bound_score(model, reference: torch.Tensor, seed: int) -> dict:
    """Test bits/dim of the bound with every one of the T steps computed (no step sampled)."""
    with torch.no_grad():
        x = reference[:BOUND_IMAGES]
        bound = model.bound(x, every_step=True, generator=torch.Generator().manual_seed(seed))
    return {"test_bpd": model.bits_per_dim(bound).mean().item(), "bound_images": len(x)}


def summarise(results: dict) -> dict:
    summary = {}
    for preset, runs in results.items():
        fd = [r["frechet"] for r in runs.values()]
        summary[preset] = {
            "frechet_mean": statistics.mean(fd),
            "frechet_sd": statistics.stdev(fd) if len(fd) > 1 else 0.0,
            "test_bpd_mean": statistics.mean(r["test_bpd"] for r in runs.values()),
            "seeds": len(fd),
            "seed000_table_c1_fid": SEED_PAPER.get(preset),
        }
    mean = {p: s["frechet_mean"] for p, s in summary.items()}
    checks = {}
    if {"digits-ddpm", "digits-multiresnet-v1", "digits-multiresnet"} <= set(mean):
        checks["unet < multiresnet-v1 < multiresnet (Table C.1's order)"] = (
            mean["digits-ddpm"] < mean["digits-multiresnet-v1"] < mean["digits-multiresnet"]
        )
    if {"digits-ddpm", "digits-ddpm-staged"} <= set(mean):
        checks["staged within 10% of non-staged (8.33 vs 7.86)"] = (
            abs(mean["digits-ddpm-staged"] - mean["digits-ddpm"]) <= 0.1 * mean["digits-ddpm"]
        )
    return {"per_preset": summary, "checks": checks}


def markdown_table(report: dict) -> str:
    """The README's table: one row per preset, from a result file."""
    names = {
        "digits-ddpm": "Residual U-Net",
        "digits-multiresnet-v1": "Multi-ResNet, saved parameters in the decoder",
        "digits-multiresnet": "Multi-ResNet, saved parameters unused",
        "digits-ddpm-staged": "Residual U-Net, staged (Algorithm 1)",
        "digits-ddpm-staged-frozen": "Residual U-Net, staged, trained levels frozen",
    }
    lines = [
        "| denoiser (preset) | parameters | Fréchet distance, mean ± sd (per seed) | test bits/dim | Table C.1 FID (CIFAR-10) |",
        "|---|---|---|---|---|",
    ]
    summary = report["summary"]["per_preset"]
    for preset, runs in report["results"].items():
        row, seeds = summary[preset], sorted(runs, key=int)
        per_seed = ", ".join(f"{runs[s]['frechet']:.1f}" for s in seeds)
        paper = row["seed000_table_c1_fid"]
        lines.append(
            f"| {names.get(preset, preset)} (`{preset}`) | {runs[seeds[0]]['parameters']:,} | "
            f"{row['frechet_mean']:.1f} ± {row['frechet_sd']:.1f} ({per_seed}) | {row['test_bpd_mean']:.2f} | "
            f"{paper if paper is not None else '—'} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--presets", nargs="+", default=PRESETS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--samples", type=int, default=500, help="samples per model for the Fréchet distance")
    parser.add_argument("--runs-root", default="runs/ddpm-comparison")
    parser.add_argument("--out", default=str(RESULTS / "ddpm-comparison.json"))
    parser.add_argument(
        "--rescore-bounds",
        action="store_true",
        help="recompute the test bound over every step for scored runs whose bound was sampled",
    )
    parser.add_argument(
        "--merge", nargs="*", default=[], help="result files of other runs of this script (e.g. other seeds) to fold in"
    )
    parser.add_argument("--table", action="store_true", help="print the README's table from --out and stop")
    args = parser.parse_args()
    if args.table:
        print(markdown_table(json.loads(Path(args.out).read_text())))
        return 0

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    base = RunSpec.from_preset(args.presets[0])
    x_train, y_train = images(base, "train")
    reference, y_test = images(base, "test")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread: every invocation (and --merge'd file) scores with the same features
    trained = train_feature_classifier(x_train, y_train, reference, y_test)
    torch.set_num_threads(threads)
    floor = classifier_frechet_distance(trained.net, reference, x_train)
    print(
        f"feature classifier: test accuracy {trained.test_accuracy:.3f}; train images vs test: {floor:.3f}", flush=True
    )

    out = Path(args.out)
    previous = json.loads(out.read_text()) if out.exists() else {}
    results: dict = previous.get("results", {})
    for other in args.merge:  # a run (preset, seed) scored in two files keeps this file's score
        for preset, runs in json.loads(Path(other).read_text())["results"].items():
            for seed, row in runs.items():
                results.setdefault(preset, {}).setdefault(seed, row)

    def write() -> None:
        report = {
            "what": "Fréchet distance of DDPM samples to the 16x16 digits' test split, on the features of a small "
            "classifier trained on the training split (not Inception); seed000 Table C.1's FIDs beside",
            "classifier": {"test_accuracy": trained.test_accuracy, "train_vs_test_frechet": floor},
            "samples_per_model": args.samples,
            "reference_images": len(reference),
            "results": results,
            "summary": summarise(results),
            "torch": torch.__version__,
            "machine": f"{platform.machine()}, {os.cpu_count()} cores",
            "threads": torch.get_num_threads(),
        }
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2) + "\n")

    for seed in args.seeds:
        for preset in args.presets:
            row = results.get(preset, {}).get(str(seed))
            if row is not None and not (args.rescore_bounds and row.get("bound_images") != BOUND_IMAGES):
                continue  # scored already
            spec = RunSpec.from_preset(preset, {"train": {"seed": seed, "progress": False}})
            t0 = time.time()
            run = train_or_reuse(spec, args.runs_root, f"{preset}-s{seed}", reuse=True)
            if row is not None:  # only the bound again, over every step
                row = {**row, **bound_score(load_run_model(run).model.eval(), reference, seed)}
            else:
                row = {
                    "train_seconds": round(time.time() - t0, 1),
                    **score_run(run, trained.net, reference, args.samples, seed),
                }
            results.setdefault(preset, {})[str(seed)] = row
            print(f"{preset} seed {seed}: Fréchet {row['frechet']:.3f}, test {row['test_bpd']:.3f} bpd", flush=True)
            write()
    write()  # also when every run was scored before: merged files and the classifier's facts
    print(json.dumps(summarise(results), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
