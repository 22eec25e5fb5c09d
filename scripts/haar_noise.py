"""Theorem 4.2 of seed000 measured: the noise variance of each Haar level along a DDPM forward
process, relative to the base level, against 2^(j−1) (1-D along rows) and 4^(j−1) (the square
2-D transform), and each level's signal-to-noise ratio on real images (engine/haar.py).

    python scripts/haar_noise.py

Linear and cosine β schedules of T = 1000 steps (engine.models.diffusion); the test images of
digits (32×32), Fashion-MNIST (28×28 padded to 32×32, first 2,000; skipped when its files are
missing) and shapes (32×32, 400). Writes scripts/results/haar-noise.json and prints the
README's tables.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from engine.data import load_dataset
from engine.errors import AtlasError
from engine.haar import TRANSFORMS, haar_noise, to_power_of_two
from engine.models.diffusion import beta_schedule

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "scripts" / "results" / "haar-noise.json"
STEPS = 1000
TIMES = [1, 10, 50, 100, 250, 500, 750, 1000]
BASE_COUNT = 100_000  # base-level coefficients per t: a standard error of about 0.45% on every ratio


def alpha_bars(kind: str) -> np.ndarray:
    return torch.cumprod(1 - beta_schedule(kind, STEPS), 0).numpy()


def datasets() -> dict[str, torch.Tensor]:
    found = {"digits": load_dataset("digits", split="test", size=32).x}
    try:
        found["fashion-mnist"] = to_power_of_two(load_dataset("fashion-mnist", split="test").x[:2000])
    except AtlasError as err:
        print(f"fashion-mnist skipped: {err}")
    shapes = load_dataset("shapes", split="test", n=2000, size=32)
    found["shapes"] = shapes.batch(torch.arange(len(shapes)))
    return found


def main() -> None:
    torch.set_num_threads(1)
    start = time.time()
    results = {}
    for s, schedule in enumerate(("linear", "cosine")):
        abar = alpha_bars(schedule)[np.array(TIMES) - 1]
        for d, (name, x0) in enumerate(datasets().items()):
            seed = 10 * s + d  # independent noise for every schedule and dataset
            for transform in TRANSFORMS:
                r = haar_noise(x0.float(), abar.tolist(), transform, base_count=BASE_COUNT, seed=seed)
                deviation = np.abs(r.ratio / r.theory - 1)
                results[f"{schedule}/{name}/{transform}"] = {
                    "schedule": schedule,
                    "dataset": name,
                    "images": int(x0.shape[0]),
                    "shape": list(x0.shape[1:]),
                    "transform": transform,
                    "t": TIMES,
                    "alpha_bar": r.alpha_bars.tolist(),
                    "theory": r.theory.tolist(),
                    "ratio": r.ratio.tolist(),
                    "ratio_se": r.ratio_se.tolist(),
                    "ratio_mean_over_t": r.ratio.mean(0).tolist(),
                    "max_relative_deviation": float(deviation.max()),
                    "noise_var": r.noise_var.tolist(),
                    "signal_var": r.signal_var.tolist(),
                    "snr": r.snr.tolist(),
                    "draws_per_t": r.draws,
                    "base_coefficients_per_t": r.base_count,
                }
                print(
                    f"{schedule:6s} {name:13s} {transform:6s} ratio (mean over t) "
                    + " ".join(f"{x:.3f}" for x in r.ratio.mean(0))
                    + f"  theory {' '.join(f'{x:g}' for x in r.theory)}  max deviation {deviation.max():.1%}",
                    flush=True,
                )
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(
        json.dumps(
            {"steps": STEPS, "torch": torch.__version__, "seconds": round(time.time() - start), "results": results},
            indent=1,
        )
    )
    print(f"wrote {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
