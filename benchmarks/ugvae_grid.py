"""UG-VAE on the CPU: how long the Global and local latents page takes to render its global x
local grid (seed002 Fig. 4.4) when a control changes, and the training throughput of the
digits-ugvae preset.

- grid: the page's default, three component panels of 7 x 7 (beta from -1.5 to +1.5 down, z
  around mu_z^(d)(beta) +- 3 across), timed in three cumulative stages: the decoded panels
  (`global_local_panels`, one batch), then each panel labelled as a picture (`labelled_rows`),
  then each picture zoomed and encoded as the PNG the browser gets (what `show_image` does on
  a cache miss). Median and p95 of --repeats after 5 warm-ups; goal: the whole under 100 ms.
- training: examples/s of the trainer's full step on digits-ugvae (a group of 64 from the
  group order, the group bound, backward, clipping, Adam), --steps steps per repeat, median of
  --train-repeats; beside it the bare step (the same group, no data order), for the overhead.

The weights are the preset's initial ones: neither timing depends on what they are.

    OMP_NUM_THREADS=1 taskset -c 1 .venv/bin/python benchmarks/ugvae_grid.py     # about a minute

Writes benchmarks/results/ugvae_grid.json.
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
from engine.device import seed_everything  # noqa: E402
from engine.diagnostics.global_latents import global_local_panels  # noqa: E402
from engine.images import display_scale, labelled_rows, png_bytes, upscale  # noqa: E402
from engine.models import build_model  # noqa: E402
from engine.training import FollowerRun, RunSpec, Trainer  # noqa: E402

PRESET = "digits-ugvae"
COMPONENTS = [0, 1, 2]  # the page's three panels
STEPS, BETA_SPAN, Z_SPAN = 7, 1.5, 3.0
WARMUP = 5
GOAL_MS = 100.0
PANEL_WIDTH = 320  # pages/global_latents.py: show_image(..., target_width=320)


def summary(ms: list[float]) -> dict:
    ms = sorted(ms)
    return {"median_ms": round(statistics.median(ms), 3), "p95_ms": round(ms[round(0.95 * (len(ms) - 1))], 3)}


def grid_times(model, value_range, repeats: int) -> dict:
    """The three cumulative stages of a render, each (median, p95) over `repeats`."""
    stages = {"panels": [], "labelled": [], "png": []}
    levels = [f"beta {v:+.2f}" for v in torch.linspace(-BETA_SPAN, BETA_SPAN, STEPS).tolist()]
    for i in range(repeats + WARMUP):
        t0 = time.perf_counter()
        panels = global_local_panels(model, COMPONENTS, STEPS, STEPS, BETA_SPAN, Z_SPAN)
        t1 = time.perf_counter()
        pictures = [labelled_rows(list(p), levels, value_range=value_range, label_width=90) for p in panels]
        t2 = time.perf_counter()
        for picture in pictures:
            if picture.shape[1] < PANEL_WIDTH // 2:
                picture = upscale(picture, display_scale(picture.shape[1], PANEL_WIDTH))
            png_bytes(picture)
        t3 = time.perf_counter()
        if i >= WARMUP:
            stages["panels"].append((t1 - t0) * 1000)
            stages["labelled"].append((t2 - t0) * 1000)
            stages["png"].append((t3 - t0) * 1000)
    return {name: summary(ms) for name, ms in stages.items()}


def training_throughput(spec: RunSpec, train_data, steps: int, repeats: int) -> dict:
    """Examples/s of the trainer's step (order + step) and of the bare step on the same groups."""
    seed_everything(0)
    model = build_model(spec.family, spec.model)
    trainer = Trainer(model, train_data, train_data, spec.train, FollowerRun())
    for step in range(WARMUP):
        trainer.train_step(trainer.inputs(step))
    full, bare = [], []
    opt = torch.optim.Adam(model.parameters(), lr=spec.train.lr)
    groups = [trainer.inputs(s)[0] for s in range(steps)]
    for r in range(repeats):
        t0 = time.perf_counter()
        for step in range(steps):
            trainer.train_step(trainer.inputs(WARMUP + r * steps + step))
        full.append(steps * spec.train.batch_size / (time.perf_counter() - t0))
        t0 = time.perf_counter()
        for x in groups:
            loss, _ = model.training_loss(x)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        bare.append(steps * spec.train.batch_size / (time.perf_counter() - t0))
    return {
        "batch_size": spec.train.batch_size,
        "steps_per_repeat": steps,
        "trainer_examples_per_s_median": round(statistics.median(full), 1),
        "trainer_examples_per_s": [round(v, 1) for v in full],
        "bare_step_examples_per_s_median": round(statistics.median(bare), 1),
        "bare_step_examples_per_s": [round(v, 1) for v in bare],
        "preset_steps": RunSpec.from_preset(PRESET).train.steps,
        "preset_training_s_estimate": round(
            RunSpec.from_preset(PRESET).train.steps * spec.train.batch_size / statistics.median(full), 1
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=50, help="timed grid renders")
    parser.add_argument("--steps", type=int, default=200, help="training steps per timed repeat")
    parser.add_argument("--train-repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the goal's setting: 1)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "ugvae_grid.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load_at_start = loadavg()
    spec = RunSpec.from_preset(PRESET, {"train": {"device": "cpu", "progress": False}})
    train_data = spec.load_data("train")
    spec.model = spec.model_config(train_data)
    seed_everything(0)
    model = build_model(spec.family, spec.model).eval()
    grid = grid_times(model, train_data.value_range, args.repeats)
    print(
        f"grid of {len(COMPONENTS)} panels of {STEPS}x{STEPS}: decoded {grid['panels']['median_ms']:.1f} ms, "
        f"labelled {grid['labelled']['median_ms']:.1f} ms, as PNGs {grid['png']['median_ms']:.1f} ms "
        f"(p95 {grid['png']['p95_ms']:.1f} ms)",
        flush=True,
    )
    throughput = training_throughput(spec, train_data, args.steps, args.train_repeats)
    print(
        f"{PRESET} training: {throughput['trainer_examples_per_s_median']:.0f} examples/s with the trainer, "
        f"{throughput['bare_step_examples_per_s_median']:.0f} bare, at {args.threads} thread(s)",
        flush=True,
    )
    out = {
        "benchmark": "ugvae_grid",
        "what": (
            f"the Global and local latents page's global x local grid ({len(COMPONENTS)} panels of {STEPS}x{STEPS} "
            f"8x8 digits: global_local_panels, labelled_rows, PNG), and {PRESET}'s training throughput"
        ),
        "goal": f"the whole grid render's median under {GOAL_MS:.0f} ms at {args.threads} thread(s)",
        "summary": {
            "grid_render_median_ms": grid["png"]["median_ms"],
            "grid_render_p95_ms": grid["png"]["p95_ms"],
            "goal_met": grid["png"]["median_ms"] < GOAL_MS,
            "training_examples_per_s": throughput["trainer_examples_per_s_median"],
        },
        "grid": {"stages_cumulative": grid, "repeats": args.repeats, "warmup": WARMUP},
        "training": throughput,
        "model": spec.model,
        "torch": torch.__version__,
        "environment": environment(load_at_start),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
