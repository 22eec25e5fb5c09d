"""MFCVAE training epoch time on `facet-digits` and `shapes` (the fast presets).

One epoch = one pass over the preset's training split in the preset's batch size, with
the full training step (the 5-term loss of seed000 eq. A.48, backward, gradient clipping,
Adam), all facets faded in. Batches are drawn the way the trainer draws them. The prior's
GaussianMixture initialisation is timed separately (it runs once per run).

    .venv/bin/python benchmarks/mfcvae_epoch.py [--epochs 3] [--device cpu|cuda]

Writes benchmarks/results/mfcvae_epoch[_cuda].json. For scale, the paper's own report
(seed000 §1.6): MNIST, 60,000 images, 402 epochs in 31 min on a Tesla M60, i.e. about
4.6 s per epoch; that number is quoted, not measured here.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.common import environment, loadavg  # noqa: E402
from engine.models import build_model  # noqa: E402
from engine.training import RunSpec  # noqa: E402

PRESETS = ("facet-digits-mfcvae", "shapes-mfcvae")


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def epoch_times(preset: str, epochs: int, device: str) -> dict:
    spec = RunSpec.from_preset(preset)
    train_data = spec.load_data("train")
    spec.model = spec.model_config(train_data)
    torch.manual_seed(0)
    model = build_model(spec.family, spec.model).to(device)
    t0 = time.perf_counter()
    model.initialize(train_data)
    sync(device)
    init_s = time.perf_counter() - t0
    model.set_step(10**9)  # every facet fully faded in: the steady-state cost
    opt = torch.optim.Adam(model.parameters(), lr=spec.train.lr)
    bs, n = spec.train.batch_size, len(train_data)
    times = []
    for _ in range(epochs + 1):  # the first epoch warms up allocators and kernels; dropped
        order = torch.randperm(n)
        sync(device)
        t0 = time.perf_counter()
        for start in range(0, n - bs + 1, bs):
            x = train_data.batch(order[start : start + bs]).to(device, non_blocking=True)
            loss, _ = model.training_loss(x)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), spec.train.grad_clip)
            opt.step()
        sync(device)
        times.append(time.perf_counter() - t0)
    times = times[1:]
    return {
        "preset": preset,
        "train_examples": n,
        "batch_size": bs,
        "input_shape": list(train_data.shape),
        "epoch_s_median": statistics.median(times),
        "epoch_s": times,
        "examples_per_s": n / statistics.median(times),
        "gmm_init_s": init_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load_at_start = loadavg()
    results = [epoch_times(p, args.epochs, args.device) for p in PRESETS]
    for r in results:
        print(
            f"{r['preset']}: {r['epoch_s_median']:.2f} s/epoch ({r['train_examples']} examples, "
            f"{r['examples_per_s']:.0f}/s), GMM init {r['gmm_init_s']:.2f} s"
        )
    name = "mfcvae_epoch" + ("_cuda" if args.device == "cuda" else "")
    out = args.out or ROOT / "benchmarks" / "results" / f"{name}.json"
    out.write_text(
        json.dumps(
            {
                "benchmark": "mfcvae_epoch",
                "device": args.device if args.device != "cuda" else torch.cuda.get_device_name(),
                "cpu_threads": args.threads,
                "machine": platform.machine(),
                "torch": torch.__version__,
                "reference": {"paper_mnist_s_per_epoch_tesla_m60": round(31 * 60 / 402, 2)},
                "environment": environment(load_at_start),
                "results": results,
            },
            indent=1,
        )
    )
    print(f"wrote {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")


if __name__ == "__main__":
    main()
