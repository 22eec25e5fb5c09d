"""Do total-correlation penalties and depth make a VAE costlier to attack? (seed001 §4.5)

Trains (or, with --reuse, finds) the digits models of one beta sweep at equal budgets:
the VAE (beta-TCVAE at beta = 1), beta-TCVAE and Seatbelt-VAE (two latent layers) at
beta = 2, 4, 6, and the hierarchical baseline (Seatbelt at beta = 1). Every model is
attacked on the same random test pairs (input and target of different digits) at the
seed's 50 values of lambda in geomspace(2^-20, 2^20), with L-BFGS-B, in three modes:
the latent KL attack, the latent 2-Wasserstein attack and the output (ELBO) attack.

    python scripts/attack_sweep.py --runs /tmp/attack-runs --seeds 0 1 2 [--reuse]

Writes scripts/results/attack-sweep.json and prints the README's table: averages over
every pair and lambda of the adversarial loss Delta (the attacker's objective at its
optimum; higher: costlier to attack) and of -log p(x^t | z*) (higher: the attack got
the target less well), the seed's two headline metrics (Figs 5.4, 5.6, D.2).
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from engine.inference.attacks import attack, random_pairs, seed_lambdas
from engine.loading import load_run_model
from engine.training import RunSpec, train_or_reuse

RESULTS = Path(__file__).resolve().parent / "results"
MODELS = [  # (label, family, beta, preset)
    ("VAE", "vae", 1.0, "digits-tcvae-b1"),
    ("β-TCVAE", "vae", 2.0, "digits-tcvae-b2"),
    ("β-TCVAE", "vae", 4.0, "digits-tcvae-b4"),
    ("β-TCVAE", "vae", 6.0, "digits-tcvae"),
    ("Seatbelt (L = 2)", "seatbelt", 1.0, "digits-seatbelt-b1"),
    ("Seatbelt (L = 2)", "seatbelt", 2.0, "digits-seatbelt-b2"),
    ("Seatbelt (L = 2)", "seatbelt", 4.0, "digits-seatbelt-b4"),
    ("Seatbelt (L = 2)", "seatbelt", 6.0, "digits-seatbelt"),
]
MODES = {"latent KL": ("latent", "kl"), "latent W2": ("latent", "w2"), "output": ("output", "kl")}


def attack_model(
    preset: str, seed: int, runs_root: str, reuse: bool, pairs: np.ndarray, lambdas: np.ndarray, steps: int
) -> dict:
    t0 = time.time()
    # seed 0 is the preset as it stands (its default training seed)
    spec = RunSpec.from_preset(preset) if seed == 0 else RunSpec.from_preset(preset, {"train": {"seed": seed}})
    run = train_or_reuse(spec, runs_root, preset if seed == 0 else f"{preset}-s{seed}", reuse)
    loaded = load_run_model(run)
    model, test = loaded.model, loaded.spec.load_data("test")
    t1 = time.time()
    x, t = test.batch(torch.as_tensor(pairs[:, 0])), test.batch(torch.as_tensor(pairs[:, 1]))
    with torch.no_grad():
        elbo = float(
            torch.cat(
                [
                    model.elbo(test.batch(torch.arange(i, min(i + 500, len(test))))).total
                    for i in range(0, len(test), 500)
                ]
            ).mean()
        )
    out = {"preset": preset, "seed": seed, "run": run.dir.name, "test_elbo": elbo, "modes": {}}
    for name, (mode, divergence) in MODES.items():
        result = attack(model, x, t, lambdas, mode=mode, divergence=divergence, steps=steps, bounds=test.value_range)
        out["modes"][name] = {
            **result.summary(),
            "lowered_divergence_fraction": float((result.divergence < result.divergence_clean[:, None]).mean()),
            "lowered_divergence_all_pairs": bool((result.divergence.min(1) < result.divergence_clean).all()),
            "divergence_clean_mean": float(result.divergence_clean.mean()),
            "target_nll_clean_mean": float(result.target_nll_clean.mean()),
            "target_nll_own_mean": float(result.target_nll_own.mean()),
            "loss": result.loss.tolist(),
        }
    out["seconds"] = {"train_or_load": round(t1 - t0, 1), "attacks": round(time.time() - t1, 1)}
    return out


METRICS = {
    "Δ latent KL": ("latent KL", "loss_mean"),
    "Δ latent W2": ("latent W2", "loss_mean"),
    "Δ output": ("output", "loss_mean"),
    "−log p(xᵗ|z*), KL attack": ("latent KL", "target_nll_mean"),
    "−log p(xᵗ|z*), output attack": ("output", "target_nll_mean"),
}


def summarise(rows: list[dict]) -> list[dict]:
    """Mean and sd over training seeds of each model's averages, in MODELS order."""
    out = []
    for label, family, beta, preset in MODELS:
        mine = [r for r in rows if r["preset"] == preset]
        stats = {"test ELBO": [r["test_elbo"] for r in mine]}
        stats.update({name: [r["modes"][mode][field] for r in mine] for name, (mode, field) in METRICS.items()})
        stats["divergence lowered on every pair"] = [
            r["modes"]["latent KL"]["lowered_divergence_all_pairs"] for r in mine
        ]
        out.append(
            {
                "label": label,
                "family": family,
                "beta": beta,
                "preset": preset,
                "seeds": [r["seed"] for r in mine],
                **{
                    k: {"mean": float(np.mean(v)), "sd": float(np.std(v, ddof=1)) if len(v) > 1 else 0.0, "values": v}
                    for k, v in stats.items()
                },
            }
        )
    return out


def markdown(summary: list[dict]) -> str:
    cols = ["test ELBO", *METRICS]
    lines = [
        "| model | β | " + " | ".join(c.replace("|", "\\|") for c in cols) + " |",
        "|---|---|" + "---|" * len(cols),
    ]
    for row in summary:
        cells = [
            f"{row[c]['mean']:.2f} ± {row[c]['sd']:.2f}" if row[c]["sd"] else f"{row[c]['mean']:.2f}" for c in cols
        ]
        lines.append(f"| {row['label']} | {row['beta']:g} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", default=None, help="keep the trained runs here (default: a temporary directory)")
    parser.add_argument("--reuse", action="store_true", help="attack finished runs of exactly these presets in --runs")
    parser.add_argument("--pairs", type=int, default=10)
    parser.add_argument("--lambdas", type=int, default=50)
    parser.add_argument("--steps", type=int, default=100, help="L-BFGS-B iterations per lambda")
    parser.add_argument("--seed", type=int, default=0, help="chooses the pairs")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="training seeds of every model")
    args = parser.parse_args(argv)
    lambdas = seed_lambdas(args.lambdas)
    torch.manual_seed(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        runs_root = args.runs or tmp
        test = RunSpec.from_preset(MODELS[0][3]).load_data("test")
        pairs = random_pairs(test.labels["digit"].values.numpy(), args.pairs, len(test), seed=args.seed)
        rows = []
        for seed in args.seeds:
            for label, family, beta, preset in MODELS:
                rows.append(
                    {
                        "label": label,
                        "family": family,
                        "beta": beta,
                        **attack_model(preset, seed, runs_root, args.reuse, pairs, lambdas, args.steps),
                    }
                )
                print(
                    json.dumps(
                        {
                            "preset": preset,
                            "seed": seed,
                            **rows[-1]["seconds"],
                            **{k: round(v["loss_mean"], 3) for k, v in rows[-1]["modes"].items()},
                        }
                    ),
                    flush=True,
                )
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "attack-sweep.json"
    summary = summarise(rows)
    out.write_text(
        json.dumps(
            {
                "machine": platform.machine(),
                "pairs": pairs.tolist(),
                "lambdas": lambdas.tolist(),
                "steps": args.steps,
                "seeds": args.seeds,
                "summary": summary,
                "runs": rows,
            },
            indent=1,
        )
    )
    print(markdown(summary))
    print(f"wrote {out.relative_to(RESULTS.parent.parent)}")


if __name__ == "__main__":
    main()
