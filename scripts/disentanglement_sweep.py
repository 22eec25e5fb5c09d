"""Disentanglement scores of a β sweep on the procedural shapes (six known factors: shape,
scale, rotation, x, y, colour), and their relation to the attack cost Δ (seed001 Fig. D.4).

For each objective (β-VAE, β-TCVAE), β in --betas and seed in --seeds this trains (or reuses,
under --runs-root) shapes-vae's convolutional VAE at --steps, β = 1 once per seed (both
objectives are then the ELBO), and measures on the first --n test images:

- MIG, SAP, DCI (disentanglement, completeness, informativeness) and the FactorVAE score
  (engine.projection.factors: the codes are posterior means, the factors the label columns);
- Δ, the latent KL attack's adversarial loss averaged over --pairs input/target pairs of
  different shapes and --lambdas values of λ in seed001's geometric grid (engine.inference.attacks);
- the test ELBO.

The shapes demo (assets/runs, 12,000 steps at β = 2) is scored too.

    python scripts/disentanglement_sweep.py --runs-root runs/sweep --seeds 0 1 2
    python scripts/disentanglement_sweep.py --table

Writes scripts/results/disentanglement-sweep.json after every model; what is in it is skipped
on a rerun, and --merge folds in the files of other invocations (parallel processes).
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
from engine.inference.attacks import attack, random_pairs, seed_lambdas  # noqa: E402
from engine.loading import load_run_model  # noqa: E402
from engine.projection.factors import disentanglement_report  # noqa: E402
from engine.store.runs import Run  # noqa: E402
from engine.training import RunSpec, train_or_reuse  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "scripts" / "results"
DEMO = ROOT / "assets" / "runs" / "20261121-112815-shapes-vae-051a"
SHORT = {"eval_every": 1000, "checkpoint_every": 100_000, "keep_checkpoints": 1, "progress": False}
SCORES = ("mig", "sap", "dci_disentanglement", "dci_completeness", "dci_informativeness", "factor_vae", "delta")


def key_of(objective: str, beta: float, seed: int) -> str:
    return f"{'vae' if beta == 1 else objective}-b{beta:g}-s{seed}"


def trained(objective: str, beta: float, seed: int, steps: int, runs_root: str):
    model = {"objective": "elbo" if beta == 1 else objective, "beta": beta}
    spec = RunSpec.from_preset("shapes-vae", {"model": model, "train": {"seed": seed, "steps": steps, **SHORT}})
    run = train_or_reuse(spec, runs_root, f"shapes-{key_of(objective, beta, seed)}", reuse=True)
    return run


@torch.no_grad()
def test_elbo(model, test, n: int) -> float:
    x = test.batch(torch.arange(n))
    return float(torch.cat([model.elbo(x[i : i + 500]).total for i in range(0, n, 500)]).mean())


def measure(run, args) -> dict:
    loaded = load_run_model(run)
    model, test = loaded.model.eval(), loaded.spec.load_data("test")
    t0 = time.time()
    report = disentanglement_report(model, test, None, args.n, with_dci=True, with_factor_vae=True)
    t1 = time.time()
    pairs = random_pairs(test.labels["shape"].values.numpy(), args.pairs, len(test), seed=0)
    x, t = test.batch(torch.as_tensor(pairs[:, 0])), test.batch(torch.as_tensor(pairs[:, 1]))
    lambdas = seed_lambdas(args.lambdas)
    result = attack(model, x, t, lambdas, mode="latent", divergence="kl", steps=args.attack_steps)
    dci = report["dci"]
    return {
        "run": run.dir.name,
        "step": loaded.step,
        "test_elbo": test_elbo(model, test, min(args.n, len(test))),
        "factors": report["factors"],
        "mig": report["mig"],
        "mig_per_factor": report["mig_per_factor"].tolist(),
        "sap": report["sap"],
        "dci_disentanglement": dci.disentanglement,
        "dci_completeness": dci.completeness,
        "dci_informativeness": dci.informativeness,
        "factor_vae": report["factor_vae"].score,
        "delta": float(result.summary()["loss_mean"]),
        "seconds": {"scores": round(t1 - t0, 1), "attack": round(time.time() - t1, 1)},
    }


def summary(results: dict) -> list[dict]:
    """Mean and sd over seeds of every score, per objective and β (β = 1 is the VAE of both)."""
    rows = []
    groups: dict[tuple[str, float], list[dict]] = {}
    for key, r in results.items():
        if key == "demo":
            continue
        groups.setdefault((r["objective"], r["beta"]), []).append(r)
    for (objective, beta), rs in sorted(groups.items(), key=lambda kv: (kv[0][1] != 1, kv[0])):
        row = {"objective": objective, "beta": beta, "seeds": sorted(r["seed"] for r in rs)}
        for name in ("test_elbo", *SCORES):
            values = [r[name] for r in rs]
            row[name] = {"mean": statistics.fmean(values), "sd": statistics.stdev(values) if len(values) > 1 else 0.0}
        rows.append(row)
    return rows


def table(data: dict) -> str:
    head = "| model | β | seeds | test ELBO | MIG | SAP | DCI D | DCI C | DCI I | FactorVAE | Δ (latent KL) |"
    lines = [head, "|---|---|---|---|---|---|---|---|---|---|---|"]
    names = {"vae": "VAE", "beta-vae": "β-VAE", "beta-tcvae": "β-TCVAE"}
    for row in data["summary"]:
        cells = [f"{row[s]['mean']:.3f} ± {row[s]['sd']:.3f}" for s in SCORES]
        elbo = f"{row['test_elbo']['mean']:.1f} ± {row['test_elbo']['sd']:.1f}"
        lines.append(
            f"| {names[row['objective']]} | {row['beta']:g} | {len(row['seeds'])} | {elbo} | "
            + " | ".join(cells)
            + " |"
        )
    if "demo" in data["results"]:
        d = data["results"]["demo"]
        cells = [f"{d[s]:.3f}" for s in SCORES]
        lines.append(
            f"| shapes demo (β-VAE, 12,000 steps) | 2 | 1 | {d['test_elbo']:.1f} | " + " | ".join(cells) + " |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--objectives", nargs="+", default=["beta-vae", "beta-tcvae"])
    parser.add_argument("--betas", nargs="+", type=float, default=[1.0, 2.0, 4.0, 6.0])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=2000, help="training steps (the preset trains 12,000)")
    parser.add_argument("--n", type=int, default=2000, help="test images the scores use")
    parser.add_argument("--pairs", type=int, default=5, help="attack pairs")
    parser.add_argument("--lambdas", type=int, default=10, help="values of λ in the attack grid")
    parser.add_argument("--attack-steps", type=int, default=50, help="L-BFGS-B iterations per λ")
    parser.add_argument("--no-demo", action="store_true", help="do not score the shapes demo")
    parser.add_argument("--runs-root", default="runs/disentanglement-sweep")
    parser.add_argument("--out", default=str(RESULTS / "disentanglement-sweep.json"))
    parser.add_argument("--merge", nargs="*", default=[], help="result files of other invocations")
    parser.add_argument("--table", action="store_true", help="print the table from --out and stop")
    args = parser.parse_args(argv)
    out = Path(args.out)
    data = json.loads(out.read_text()) if out.exists() else {"results": {}}
    for extra in args.merge:
        data["results"].update(json.loads(Path(extra).read_text())["results"])
    if args.table:
        print(table(data))
        return
    data.update(
        what="MIG, SAP, DCI and FactorVAE scores and the latent KL attack cost of a β sweep on shapes",
        settings={k: v for k, v in vars(args).items() if k not in ("merge", "table", "out", "runs_root")},
        environment={
            "machine": platform.machine(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "load_average": os.getloadavg(),
        },
    )

    def save():
        data["summary"] = summary(data["results"])
        out.write_text(json.dumps(data, indent=1))

    if not args.no_demo and "demo" not in data["results"]:
        data["results"]["demo"] = {"objective": "beta-vae", "beta": 2.0, **measure(Run.from_dir(DEMO, True), args)}
        save()
        print("demo", json.dumps({s: round(data["results"]["demo"][s], 3) for s in SCORES}), flush=True)
    for seed in args.seeds:
        for beta in args.betas:
            for objective in args.objectives if beta != 1 else args.objectives[:1]:
                key = key_of(objective, beta, seed)
                if key in data["results"]:
                    continue
                t0 = time.time()
                run = trained(objective, beta, seed, args.steps, args.runs_root)
                train_seconds = round(time.time() - t0, 1)
                row = measure(run, args)
                row["seconds"]["train"] = train_seconds
                data["results"][key] = {
                    "objective": "vae" if beta == 1 else objective,
                    "beta": beta,
                    "seed": seed,
                    **row,
                }
                save()
                print(key, json.dumps({s: round(row[s], 3) for s in SCORES}), row["seconds"], flush=True)
    save()
    print(table(data))


if __name__ == "__main__":
    main()
