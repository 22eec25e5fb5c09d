"""Speed of the hierarchies of codes (issue 22): training throughput of the CPU presets, beside
the VDVAE-style HVAE's digits preset as a reference, and the time the Discrete codes page's
views take on the demo model: the layerwise resampling grid (4 x 8) and the index map of 12
test images (goal: each under 200 ms), and the 32 decoded swaps of a code.

Each figure is the median of several repeats, one after another in one process, with the
thread count and the load average recorded.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/rrvq_speed.py [--repeats 5]

Writes benchmarks/results/rrvq_speed.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.common import environment, loadavg, median_time, preset_case, training_throughput  # noqa: E402
from engine.diagnostics.codes import index_map, index_map_tiles, swap_codes  # noqa: E402
from engine.images import tile_rows, to_pixels  # noqa: E402
from engine.loading import load_run_model  # noqa: E402
from engine.store import Run  # noqa: E402
from engine.training import RunSpec  # noqa: E402

PRESETS = [
    "digits-rrvq",
    "digits-rvq",
    "digits-spatial-vae",
    "digits-rrvq-unit-direct",
    "fashion-rrvq",
    "fashion-rvq",
    "fashion-spatial-vae",
    "swatches-mlp-rvq",
    "digits-hvae",  # reference: the Gaussian VDVAE-style HVAE
]


def demo_run() -> Path:
    found = sorted((ROOT / "assets" / "runs").glob("*-digits-rrvq-*"))
    if not found:
        raise SystemExit("no digits-rrvq demo under assets/runs")
    return found[-1]


def views(repeats: int) -> dict:
    run = Run.from_dir(demo_run(), readonly=True)
    model = load_run_model(run).model.eval()
    data = RunSpec.from_dict(run.config).load_data("test")
    x = data.batch(torch.arange(12))

    def layerwise():
        return model.layerwise_samples("z2", 4, 8)

    def index_picture():
        indices, norms = index_map(model, x, "z1")
        all_norms = model.code_norms("z1")
        return tile_rows(index_map_tiles(to_pixels(x), norms, float(all_norms.min()), float(all_norms.max())), 8)

    def swaps():
        with torch.no_grad():
            return swap_codes(model, x[:1], "z2", range(model.config.codes), below="mode")

    out = {"demo": run.dir.name}
    for name, fn in (
        ("layerwise_grid_4x8_s", layerwise),
        ("index_map_12_images_s", index_picture),
        ("swaps_32_s", swaps),
    ):
        median, times = median_time(fn, repeats)
        out[name] = median
        out[name.removesuffix("_s") + "_seconds"] = [round(t, 4) for t in times]
        print(name, round(1000 * median, 1), "ms", flush=True)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "rrvq_speed.json")
    args = parser.parse_args()
    start_load = loadavg()
    results: dict = {"views": views(args.repeats), "training": {}}
    for preset in PRESETS:
        family, config, batch = preset_case(preset)
        results["training"][preset] = training_throughput(family, config, batch, 10, args.repeats)
        print(preset, round(results["training"][preset]["median_steps_per_s"], 1), "steps/s", flush=True)
    results["environment"] = environment(start_load)
    results["repeats"] = args.repeats
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
