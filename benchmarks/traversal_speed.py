"""How long the full traversal grid takes to compute for each demo model: every latent
dimension x 11 steps, decoded in one batch (the work the Latent traversals page does
when a control changes). Writes benchmarks/results/traversal_speed.json.

    .venv/bin/python benchmarks/traversal_speed.py
"""

from __future__ import annotations

import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.diagnostics.activity import latent_activity  # noqa: E402
from engine.loading import load_run_model  # noqa: E402
from engine.models import family_kind  # noqa: E402
from engine.store import Run, RunStore  # noqa: E402
from engine.traversal import decode_group, traversal_latents, traversal_range  # noqa: E402

REPEATS = 50
STEPS = 11


def main() -> None:
    torch.set_num_threads(2)
    results = []
    for info in RunStore(ROOT / "assets" / "runs").list_runs():
        if family_kind(info.model) != "latent":  # a sequential predictor has no latents to traverse
            continue
        loaded = load_run_model(Run.from_dir(info.dir, readonly=True))
        model = loaded.model
        group = model.latent_groups[0]
        act = latent_activity(model, loaded.spec.load_data("test"), n=500)[group.name]
        low, high = traversal_range("prior", act)
        base = {g.name: torch.zeros(g.size) for g in model.latent_groups}
        times = []
        with torch.no_grad():
            for i in range(REPEATS + 5):
                t0 = time.perf_counter()
                latents = traversal_latents(base[group.name], act.order(), low, high, steps=STEPS)
                decode_group(model, base, group.name, latents)
                if i >= 5:  # warm-up excluded
                    times.append((time.perf_counter() - t0) * 1000)
        times.sort()
        results.append(
            {
                "run": info.id,
                "dataset": loaded.spec.data["name"],
                "input_shape": list(model.config.input_shape),
                "latent_dims": group.size,
                "images_per_grid": group.size * STEPS,
                "median_ms": statistics.median(times),
                "p95_ms": times[int(0.95 * (len(times) - 1))],
            }
        )
        print(f"{info.id}: {group.size} x {STEPS} images, median {results[-1]['median_ms']:.2f} ms")
    out = {
        "benchmark": "traversal_grid",
        "goal": "full grid under 30 ms on 2 CPU cores",
        "repeats": REPEATS,
        "machine": {"cpu_count": torch.get_num_threads(), "torch": torch.__version__, "platform": platform.platform()},
        "results": results,
    }
    path = ROOT / "benchmarks" / "results" / "traversal_speed.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
