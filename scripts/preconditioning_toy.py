"""The preconditioning toy of seed000 Fig. 4.2 / C.12: every (target, preconditioner) pair over
five seeds, for the chosen reading of "apply R D times" and the alternatives
(engine/models/preconditioning.py says which is which and why).

    python scripts/preconditioning_toy.py [--readings stream composition ...] [--seeds 5]

Writes scripts/results/preconditioning-toy.json: per reading and pair the MSE per seed and its
median, and the two ratios of the goal (median MSE of the good preconditioner over the bad one's,
for v² and for v³; the goal is both below 0.1); the settings and the torch version.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import torch

from engine.models.preconditioning import GOOD, PRECONDITIONERS, READINGS, TARGETS, PreconditioningConfig, fit

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "scripts" / "results" / "preconditioning-toy.json"


def measure(reading: str, seeds: list[int]) -> dict:
    pairs, medians = {}, {}
    for target in TARGETS:
        for pre in PRECONDITIONERS:
            config = PreconditioningConfig(target=target, preconditioner=pre, reading=reading)
            mse = [fit(config, seed).mse for seed in seeds]
            medians[target, pre] = float(np.median(mse))
            pairs[f"{target} with {pre}"] = {"target": target, "preconditioner": pre, "mse": mse}
            pairs[f"{target} with {pre}"]["median"] = medians[target, pre]
            print(f"{reading:15s} {target} with {pre:3s}: median MSE {medians[target, pre]:.2e}", flush=True)
    ratios = {}
    for target, good in GOOD.items():
        bad = next(p for p in PRECONDITIONERS if p != good)
        ratios[f"{target}: {good} / {bad}"] = medians[target, good] / medians[target, bad]
    return {"pairs": pairs, "ratios": ratios, "goal_holds": all(r < 0.1 for r in ratios.values())}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--readings", nargs="+", choices=READINGS, default=list(READINGS))
    parser.add_argument("--seeds", type=int, default=5)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    seeds = list(range(args.seeds))
    start = time.time()
    readings = {reading: measure(reading, seeds) for reading in args.readings}
    settings = {
        k: v
        for k, v in dataclasses.asdict(PreconditioningConfig()).items()
        if k not in ("target", "preconditioner", "reading")
    }
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(
        json.dumps(
            {
                "chosen_reading": PreconditioningConfig().reading,
                "settings": {**settings, "seeds": seeds, "optimiser": "Adam, full batch"},
                "torch": torch.__version__,
                "seconds": round(time.time() - start),
                "readings": readings,
            },
            indent=1,
        )
    )
    print("| reading | v² with v | v² with \\|v\\| | v³ with v | v³ with \\|v\\| | ratio v² | ratio v³ | goal |")
    print("|---|---|---|---|---|---|---|---|")
    for reading, r in readings.items():
        cells = " | ".join(f"{p['median']:.2g}" for p in r["pairs"].values())
        ratios = " | ".join(f"{x:.2g}" for x in r["ratios"].values())
        print(f"| {reading} | {cells} | {ratios} | {'holds' if r['goal_holds'] else 'fails'} |")
    print(f"wrote {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
