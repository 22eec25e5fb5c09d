"""The discrete hierarchies against seed001 ch. 3 (Tables 3.1, 3.2 and 3.3) on the CPU presets.

For each dataset, model and seed this trains (or reuses, under --runs-root) the preset
`{dataset}-{model}` and measures:

- test and train bits/dim from the importance-weighted bound with hard codes (k = --k, on the
  first --images images of each split): Table 3.1's ordering Spatial-VAE < RRVQ-VAE < rVQ-VAE,
  and Table 3.3's RRVQ against the other three corners (sigma = 1 or learned x Direct-Cat or
  Embedding-Cat in the prior);
- a linear probe (multinomial logistic regression) of the class from each layer's most
  probable codes, one-hot: Table 3.2's direction, the RRVQ-VAE's middle layer z2 against the
  rVQ-VAE's codes (the thesis trained small convnets on SVHN embeddings);
- code usage per layer on the test images: perplexity and dead codes.

    python scripts/rrvq_study.py --datasets digits --seeds 0 1 2 --runs-root runs/rrvq-study
    python scripts/rrvq_study.py --table

Writes scripts/results/rrvq.json after every measurement; what is in it is skipped on a rerun.
--merge folds in the results of other invocations (run in parallel processes).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from engine.diagnostics.codes import code_indices, code_usage, linear_probe, one_hot_features  # noqa: E402
from engine.loading import load_run_model  # noqa: E402
from engine.randomness import random_stream  # noqa: E402
from engine.training import RunSpec, train_or_reuse  # noqa: E402
from engine.training.presets import CODE_MODELS  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
SHORT = {"eval_every": 1000, "checkpoint_every": 3000, "keep_checkpoints": 1, "progress": False}
PROBE_TRAIN = 2000  # training images the probe is fitted on
LABEL = {"digits": "digit", "fashion": "class"}
TABLE_3_1 = ("spatial-vae", "rrvq", "rvq")
CORNERS = ("rrvq-unit-direct", "rrvq-unit-embedding", "rrvq-learned-direct")


def trained(dataset: str, key: str, seed: int, runs_root: str, steps: int | None):
    train = {"seed": seed, **SHORT, **({"steps": steps} if steps else {})}
    spec = RunSpec.from_preset(f"{dataset}-{key}", {"train": train})
    t0 = time.time()
    run = train_or_reuse(spec, runs_root, f"{dataset}-{key}-s{seed}", reuse=True)
    loaded = load_run_model(run)
    return loaded.model.eval(), loaded.spec, {"run": run.dir.name, "train_seconds": round(time.time() - t0, 1)}


@torch.no_grad()
def bits_per_dim(model, data, images: int, k: int, seed: int) -> float:
    x = data.batch(torch.arange(min(images, len(data))))
    dims = math.prod(x.shape[1:])
    with random_stream(seed):
        bound = torch.cat([model.elbo(chunk, k=k).total for chunk in x.split(50)])
    return float((-bound / (dims * math.log(2))).mean())


def probe(model, spec, label: str) -> dict[str, float]:
    train, test = spec.load_data("train"), spec.load_data("test")
    n = min(PROBE_TRAIN, len(train))
    x_train, y_train = train.batch(torch.arange(n)), train.labels[label].values[:n].numpy()
    x_test, y_test = test.batch(torch.arange(len(test))), test.labels[label].values.numpy()
    if len(test) > 2000:
        x_test, y_test = x_test[:2000], y_test[:2000]
    codes_train, codes_test = code_indices(model, x_train), code_indices(model, x_test)
    k = model.config.codes
    return {
        name: linear_probe(
            one_hot_features(codes_train[name], k), y_train, one_hot_features(codes_test[name], k), y_test
        )
        for name in model.names
    }


def measure(dataset: str, key: str, seed: int, args) -> dict:
    model, spec, info = trained(dataset, key, seed, args.runs_root, args.steps)
    t0 = time.time()
    row = {**info, "model": model.config.model_name}
    row["test_bpd"] = bits_per_dim(model, spec.load_data("test"), args.images, args.k, seed)
    row["train_bpd"] = bits_per_dim(model, spec.load_data("train"), args.images, args.k, seed)
    if model.discrete:
        test = spec.load_data("test")
        usage = code_usage(model, test.batch(torch.arange(min(args.images, len(test)))))
        row["usage"] = {name: {"perplexity": u.perplexity, "dead": u.dead} for name, u in usage.items()}
        row["probe"] = probe(model, spec, LABEL[dataset])
    row["measure_seconds"] = round(time.time() - t0, 1)
    return row


def summarise(results: dict) -> dict:
    out = {}
    for dataset, rows in results.items():
        seeds = sorted({s for per in rows.values() for s in per}, key=int)
        bpd = {key: [rows[key][s]["test_bpd"] for s in seeds if s in rows.get(key, {})] for key in rows}
        summary = {
            "test_bpd_mean": {key: statistics.fmean(v) for key, v in bpd.items() if v},
            "test_bpd_sd": {key: statistics.stdev(v) for key, v in bpd.items() if len(v) > 1},
        }
        complete = [s for s in seeds if all(s in rows.get(key, {}) for key in TABLE_3_1)]
        summary["table_3_1_order_holds"] = {
            s: rows["spatial-vae"][s]["test_bpd"] < rows["rrvq"][s]["test_bpd"] < rows["rvq"][s]["test_bpd"]
            for s in complete
        }
        summary["rrvq_beats_corner"] = {
            corner: {
                s: rows["rrvq"][s]["test_bpd"] < rows[corner][s]["test_bpd"]
                for s in seeds
                if s in rows.get(corner, {}) and s in rows.get("rrvq", {})
            }
            for corner in CORNERS
            if corner in rows
        }
        if "rrvq" in rows and "rvq" in rows:
            pairs = [s for s in seeds if s in rows["rrvq"] and s in rows["rvq"]]
            summary["probe_z2_rrvq_vs_rvq"] = {
                s: [rows["rrvq"][s]["probe"]["z2"], rows["rvq"][s]["probe"]["z1"]] for s in pairs
            }
            summary["probe_direction_holds"] = {
                s: rows["rrvq"][s]["probe"]["z2"] > rows["rvq"][s]["probe"]["z1"] for s in pairs
            }
        out[dataset] = summary
    return out


def markdown_table(report: dict) -> str:
    lines = []
    for dataset, summary in report["summary"].items():
        lines += [f"### {dataset}", "", "| model | test bits/dim (mean ± sd) |", "|---|---|"]
        for key, mean in summary["test_bpd_mean"].items():
            sd = summary["test_bpd_sd"].get(key)
            lines.append(f"| {CODE_MODELS[key][0]} | {mean:.3f}" + (f" ± {sd:.3f} |" if sd is not None else " |"))
        lines.append("")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", nargs="+", default=["digits"], choices=sorted(LABEL))
    parser.add_argument("--models", nargs="+", default=list(CODE_MODELS), choices=list(CODE_MODELS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--k", type=int, default=100, help="importance samples of the bits/dim")
    parser.add_argument("--images", type=int, default=500, help="images of each split the bits/dim averages")
    parser.add_argument("--steps", type=int, default=None, help="training steps (default: the preset's)")
    parser.add_argument("--runs-root", default="runs/rrvq-study")
    parser.add_argument("--out", default=str(RESULTS / "rrvq.json"))
    parser.add_argument("--merge", nargs="*", default=[], help="result files of other invocations")
    parser.add_argument("--table", action="store_true", help="print the summary table from --out and stop")
    args = parser.parse_args()
    out = Path(args.out)
    if args.table:
        print(markdown_table(json.loads(out.read_text())))
        return 0
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    previous = json.loads(out.read_text()) if out.exists() else {}
    results: dict = previous.get("results", {})
    for other in args.merge:
        for dataset, rows in json.loads(Path(other).read_text())["results"].items():
            for key, per_seed in rows.items():
                for seed, row in per_seed.items():
                    results.setdefault(dataset, {}).setdefault(key, {}).setdefault(seed, row)
    started = time.time()

    def write() -> None:
        report = {
            "what": "RRVQ-VAE, rVQ-VAE, Spatial-VAE and Table 3.3's corners against seed001 Tables 3.1-3.3",
            "settings": {
                "k": args.k,
                "images": args.images,
                "probe_train_images": PROBE_TRAIN,
                "train_overrides": SHORT,
                "steps": args.steps or "the presets'",
                "notes": [
                    "bits/dim: -IWAE bound with hard codes / (D ln 2), discretised logistic likelihood over 256 levels",
                    "probe: logistic regression on one-hot most-probable codes of one layer (thesis: small convnets)",
                    "Adam at a constant learning rate 1e-3 (thesis: AdaMax 2e-3 with decay), no weight normalisation",
                ],
            },
            "results": results,
            "summary": summarise(results),
            "environment": {
                "torch": torch.__version__,
                "machine": f"{platform.machine()}, {os.cpu_count()} cores",
                "threads": torch.get_num_threads(),
                "load_average": os.getloadavg(),
                "seconds_this_invocation": round(time.time() - started, 1),
            },
        }
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2) + "\n")

    for seed in args.seeds:
        for dataset in args.datasets:
            for key in args.models:
                per_seed = results.setdefault(dataset, {}).setdefault(key, {})
                if str(seed) in per_seed:
                    continue
                per_seed[str(seed)] = measure(dataset, key, seed, args)
                print(dataset, key, seed, per_seed[str(seed)]["test_bpd"], flush=True)
                write()
    write()
    print(markdown_table(json.loads(out.read_text())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
