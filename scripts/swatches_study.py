"""Patchwork prior samples from spatially arranged codes (seed001 §3.5, Fig. 3.1) on the nine
colour swatches.

Trains (or reuses, under --runs-root) swatches-spatial-vae, swatches-rvq and swatches-mlp-rvq,
then measures on each: how well it reconstructs the test swatches (mean squared error) and how
much colour varies within its prior samples (engine.diagnostics.codes.colour_spread, the mean
over --samples samples). The thesis: both convolutional models reconstruct well and sample
patchwork; the MLP rVQ-VAE samples single-colour images. The issue's check: the convolutional
models' within-image spread is at least five times the MLP's.

    python scripts/swatches_study.py --seeds 0 1 2 --runs-root runs/swatches-study --figure docs/swatches.png

Writes scripts/results/swatches.json, and with --figure a picture of the first seed's models:
test reconstructions and prior samples, one pair of rows per model.
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
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from engine.diagnostics.codes import colour_spread  # noqa: E402
from engine.images import labelled_rows  # noqa: E402
from engine.loading import load_run_model  # noqa: E402
from engine.randomness import random_stream  # noqa: E402
from engine.training import RunSpec, train_or_reuse  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
MODELS = ("spatial-vae", "rvq", "mlp-rvq")


def measure(key: str, seed: int, runs_root: str, samples: int) -> dict:
    spec = RunSpec.from_preset(f"swatches-{key}", {"train": {"seed": seed, "progress": False}})
    t0 = time.time()
    run = train_or_reuse(spec, runs_root, f"swatches-{key}-s{seed}", reuse=True)
    model = load_run_model(run).model.eval()
    with torch.no_grad():
        return {"run": run.dir.name, **spread_of(model, spec, seed, samples), "seconds": round(time.time() - t0, 1)}


def spread_of(model, spec, seed: int, samples: int) -> dict:
    test = spec.load_data("test")
    x = test.batch(torch.arange(min(500, len(test))))
    recon = model.decode({name: q.mean for name, q in model.encode(x).items()})
    with random_stream(seed):
        drawn = model.sample(samples)
    return {
        "model": model.config.model_name,
        "recon_mse": float((recon - x).pow(2).mean()),
        "sample_spread": float(colour_spread(drawn).mean()),
        "recon_spread": float(colour_spread(recon).mean()),
    }


@torch.no_grad()
def save_figure(path: Path, seed: int, runs_root: str) -> None:
    rows, labels = [], []
    for key in MODELS:
        spec = RunSpec.from_preset(f"swatches-{key}", {"train": {"seed": seed, "progress": False}})
        model = load_run_model(train_or_reuse(spec, runs_root, f"swatches-{key}-s{seed}", reuse=True)).model.eval()
        x = spec.load_data("test").batch(torch.arange(12))
        with random_stream(seed):
            rows += [model.decode({n: q.mean for n, q in model.encode(x).items()}), model.sample(12)]
        labels += [f"{model.config.model_name}: recon", "prior samples"]
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(labelled_rows(rows, labels, label_width=200)).save(path, optimize=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--samples", type=int, default=256)
    parser.add_argument("--runs-root", default="runs/swatches-study")
    parser.add_argument("--out", default=str(RESULTS / "swatches.json"))
    parser.add_argument("--figure", help="a PNG of the first seed's reconstructions and samples")
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    started = time.time()
    results = {key: {str(s): measure(key, s, args.runs_root, args.samples) for s in args.seeds} for key in MODELS}
    spread = {key: statistics.fmean(r["sample_spread"] for r in rows.values()) for key, rows in results.items()}
    report = {
        "what": "within-image colour spread of prior samples on nine colour swatches (seed001 §3.5, Fig. 3.1)",
        "samples": args.samples,
        "results": results,
        "summary": {
            "sample_spread": spread,
            "ratio_to_mlp": {key: spread[key] / spread["mlp-rvq"] for key in ("spatial-vae", "rvq")},
            "conv_at_least_5x_mlp": all(spread[key] >= 5 * spread["mlp-rvq"] for key in ("spatial-vae", "rvq")),
        },
        "environment": {
            "torch": torch.__version__,
            "machine": f"{platform.machine()}, {os.cpu_count()} cores",
            "threads": torch.get_num_threads(),
            "load_average": os.getloadavg(),
            "seconds": round(time.time() - started, 1),
        },
    }
    if args.figure:
        save_figure(Path(args.figure), args.seeds[0], args.runs_root)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report["summary"], indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
