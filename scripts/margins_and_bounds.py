"""The r-robustness margin against its bound, and the IWAE bound against k, on the demo models.

For each digits demo (VAE, beta-TCVAE, Seatbelt-VAE) and the first --inputs test inputs:
r is set so that p(||Delta(x)|| <= r) = 0.9 (seed001 App. E.5), then Theorem 6.1's bound
and the empirical margin (Algorithm E.2) are computed (engine.diagnostics.robustness).
For every latent demo the IWAE bound L^k for k = 1 ... 5000 on the first --bound-inputs
test inputs (engine.inference.importance).

    python scripts/margins_and_bounds.py

Writes scripts/results/margins-and-bounds.json and prints the README's tables.
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import numpy as np
import torch

from engine.diagnostics.robustness import robustness_report
from engine.inference.importance import bound_curve, log_importance_weights
from engine.loading import load_run_model
from engine.store import Run

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "scripts" / "results"
MARGIN_DEMOS = ("digits-vae", "digits-tcvae", "digits-seatbelt")
BOUND_DEMOS = ("digits-vae", "digits-vae-2d", "digits-tcvae", "digits-seatbelt", "facet-digits-vae", "shapes-vae")
KS = [1, 10, 100, 1000, 5000]


def demo(preset: str):
    for d in sorted((ROOT / "assets" / "runs").iterdir()):
        if json.loads((d / "config.json").read_text()).get("preset") == preset:
            loaded = load_run_model(Run.from_dir(d, readonly=True))
            return loaded.model, loaded.spec.load_data("test")
    raise SystemExit(f"no demo run of preset {preset}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--inputs", type=int, default=25, help="test inputs per model for the margins")
    parser.add_argument("--bound-inputs", type=int, default=50, help="test inputs per model for the IWAE bound")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    margins, bounds = {}, {}
    for preset in MARGIN_DEMOS:
        model, test = demo(preset)
        reports = robustness_report(model, test.batch(torch.arange(args.inputs)), p_target=0.9, n_samples=1000)
        rows = [r.__dict__ for r in reports]
        b, e = np.array([r["bound"] for r in rows]), np.array([r["empirical_margin"] for r in rows])
        margins[preset] = {
            "inputs": rows,
            "bound_mean": float(b.mean()),
            "empirical_mean": float(e.mean()),
            "bound_below_empirical_on_every_input": bool((b <= e).all()),
            "ratio_mean": float((e / np.maximum(b, 1e-12)).mean()),
            "correlation": float(np.corrcoef(b, e)[0, 1]),
            "censored": int(sum(r["margin_censored"] for r in rows)),
        }
        print(preset, {k: v for k, v in margins[preset].items() if k != "inputs"}, flush=True)
    for preset in BOUND_DEMOS:
        model, test = demo(preset)
        x = test.batch(torch.arange(args.bound_inputs))
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            log_w = log_importance_weights(model, x, max(KS))
        curve = bound_curve(log_w, KS).tolist()
        bounds[preset] = dict(zip(map(str, KS), curve))
        print(preset, {k: round(v, 2) for k, v in bounds[preset].items()}, flush=True)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "margins-and-bounds.json"
    out.write_text(
        json.dumps(
            {
                "machine": platform.machine(),
                "margins": margins,
                "iwae": bounds,
                "inputs": args.inputs,
                "bound_inputs": args.bound_inputs,
            },
            indent=1,
        )
    )
    print(
        "| model | mean bound | mean empirical margin | empirical / bound | correlation | bound below on every input |"
    )
    print("|---|---|---|---|---|---|")
    for p, m in margins.items():
        print(
            f"| {p} | {m['bound_mean']:.3f} | {m['empirical_mean']:.3f} | {m['ratio_mean']:.1f} | "
            f"{m['correlation']:.2f} | {'yes' if m['bound_below_empirical_on_every_input'] else 'NO'} |"
        )
    print("| model | " + " | ".join(f"L^{k}" for k in KS) + " |")
    print("|---|" + "---|" * len(KS))
    for p, c in bounds.items():
        print(f"| {p} | " + " | ".join(f"{c[str(k)]:.2f}" for k in KS) + " |")
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
