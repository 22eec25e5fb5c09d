"""GM-DGM and SSVAE: training throughput on their CPU presets, and the y x z grid's render time.

Training: the trainer's own step (`Trainer.inputs` draws the unlabelled and the labelled batch,
`Trainer.train_step` runs the objective of seed001 eq. 2.10 with y enumerated over K, backward,
clipping, Adam), timed over `--steps` steps after a warm-up, `--repeats` times; examples per
second count both batches. The enumeration is the cost: every unlabelled input is decoded once
per value of y, so a K = 45 preset does about 45 / (1 + 64 / 64) times the decoder work of a plain VAE.

Grid: `engine.diagnostics.semi_supervised.yz_grid` (6 rows of shared noise x every component)
decoded, tiled, zoomed and encoded as the PNG the Classes and clusters page shows (the page
caches that PNG by content; this is the first, uncached render), on the shipped demos; median
of `--grid-repeats`. The issue's goal is < 100 ms on a CPU.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/semi_supervised_speed.py

Writes benchmarks/results/semi_supervised_speed.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.common import environment, loadavg  # noqa: E402
from engine.diagnostics.semi_supervised import yz_grid  # noqa: E402
from engine.images import display_scale, image_grid, png_bytes, upscale  # noqa: E402
from engine.loading import load_run_model  # noqa: E402
from engine.models import build_model  # noqa: E402
from engine.store import Run  # noqa: E402
from engine.training import FollowerRun, RunSpec, Trainer  # noqa: E402

PRESETS = ("digits-gmdgm", "digits-ssvae", "digits16-gmdgm", "fashion-mnist-gmdgm", "fashion-mnist-ssvae")
DEMOS = ("digits-gmdgm", "digits-ssvae")


def throughput(preset: str, steps: int, repeats: int) -> dict:
    spec = RunSpec.from_preset(preset)
    train_data, test_data = spec.load_data("train"), spec.load_data("test")
    spec.model = spec.model_config(train_data)
    torch.manual_seed(0)
    model = build_model(spec.family, spec.model)
    spec.train.progress = False
    trainer = Trainer(model, train_data, test_data, spec.train, FollowerRun())
    model.initialize(train_data)
    per_step = spec.train.batch_size + spec.train.labelled_batch_size
    for step in range(5):  # warm-up
        trainer.train_step(trainer.inputs(step))
    times = []
    for r in range(repeats):
        t0 = time.perf_counter()
        for step in range(steps):
            trainer.train_step(trainer.inputs(5 + r * steps + step))
        times.append(time.perf_counter() - t0)
    median = statistics.median(times)
    return {
        "preset": preset,
        "components": model.config.components,
        "input_shape": list(train_data.shape),
        "hidden": model.config.hidden,
        "examples_per_step": per_step,
        "steps_timed": steps,
        "step_ms_median": 1000 * median / steps,
        "step_ms_repeats": [1000 * t / steps for t in times],
        "examples_per_s": per_step * steps / median,
        "epoch_s": len(trainer.labelled.hidden) / spec.train.batch_size * median / steps,
    }


def grid_time(preset: str, repeats: int) -> dict:
    run_dir = next(
        p for p in sorted((ROOT / "assets" / "runs").iterdir()) if p.name.split("-", 2)[-1].startswith(preset)
    )
    model = load_run_model(Run.from_dir(run_dir, readonly=True)).model.eval()
    k = model.config.components
    times, encode = [], []
    width = min(1100, 64 * k)  # as the page shows it
    for i in range(repeats + 1):
        t0 = time.perf_counter()
        picture = image_grid(yz_grid(model, 6, seed=i), nrow=k)
        t1 = time.perf_counter()
        png = png_bytes(upscale(picture, display_scale(picture.shape[1], width)))  # the page's zoom and PNG
        times.append(time.perf_counter() - t0)
        encode.append(time.perf_counter() - t1)
    times, encode = times[1:], encode[1:]
    return {
        "demo": preset,
        "grid": f"6 x {k}",
        "picture_shape": list(picture.shape),
        "png_bytes": len(png),
        "ms_median": 1000 * statistics.median(times),
        "png_zoom_and_encode_ms_median": 1000 * statistics.median(encode),
        "ms_p95": 1000 * sorted(times)[int(0.95 * (len(times) - 1))],
        "goal_ms": 100,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--grid-repeats", type=int, default=30)
    parser.add_argument("--presets", nargs="+", default=list(PRESETS))
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "semi_supervised_speed.json")
    args = parser.parse_args()
    load_at_start = loadavg()
    training = []
    for preset in args.presets:
        training.append(throughput(preset, args.steps, args.repeats))
        r = training[-1]
        print(
            f"{preset}: {r['step_ms_median']:.1f} ms/step, {r['examples_per_s']:.0f} examples/s, epoch {r['epoch_s']:.0f} s"
        )
    grids = [grid_time(d, args.grid_repeats) for d in DEMOS]
    for g in grids:
        print(f"y x z grid {g['grid']} on {g['demo']}: median {g['ms_median']:.1f} ms, p95 {g['ms_p95']:.1f} ms")
    args.out.write_text(
        json.dumps(
            {
                "benchmark": "semi_supervised_speed",
                "device": "cpu",
                "torch": torch.__version__,
                "environment": environment(load_at_start),
                "training": training,
                "yz_grid": grids,
            },
            indent=1,
        )
    )
    print(f"wrote {args.out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
