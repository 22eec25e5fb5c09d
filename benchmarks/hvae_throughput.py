"""Training throughput (images/s) of the small HVAE presets: the full step (ELBO over all
latent layers, backward, gradient clipping, Adam), on CPU and, where there is a GPU,
on CUDA in float32 and with bfloat16 autocast (the trainer's mixed precision).

    .venv/bin/python benchmarks/hvae_throughput.py [--steps 30] [--presets digits-hvae ...]

Writes benchmarks/results/hvae_throughput[_cuda].json.
"""

from __future__ import annotations

import argparse
import contextlib
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


def throughput(preset: str, device: str, amp: bool, steps: int, repeats: int) -> dict:
    spec = RunSpec.from_preset(preset)
    data = spec.load_data("train")
    spec.model = spec.model_config(data)
    torch.manual_seed(0)
    model = build_model(spec.family, spec.model).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=spec.train.lr)
    bs = spec.train.batch_size
    batches = [data.batch(torch.randint(len(data), (bs,))).to(device) for _ in range(8)]

    def step(x):
        ctx = torch.autocast("cuda", dtype=torch.bfloat16) if amp else contextlib.nullcontext()
        with ctx:
            loss, _ = model.training_loss(x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), spec.train.grad_clip)
        opt.step()

    for i in range(5):  # warm-up
        step(batches[i % 8])
    rates = []
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for i in range(steps):
            step(batches[i % 8])
        if device == "cuda":
            torch.cuda.synchronize()
        rates.append(steps * bs / (time.perf_counter() - t0))
    return {
        "preset": preset,
        "device": device,
        "amp_bf16": amp,
        "batch_size": bs,
        "input_shape": list(data.shape),
        "latent_layers": len(model.names),
        "parameters": sum(p.numel() for p in model.parameters()),
        "images_per_s_median": statistics.median(rates),
        "images_per_s": rates,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", nargs="+", default=["digits-hvae", "digits-hvae-shared", "shapes-hvae"])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    load_at_start = loadavg()
    results = []
    for preset in args.presets:
        modes = [False, True] if args.device == "cuda" else [False]
        for amp in modes:
            r = throughput(preset, args.device, amp, args.steps, args.repeats)
            results.append(r)
            print(
                f"{preset} on {args.device}{' bf16' if amp else ''}: {r['images_per_s_median']:.0f} images/s "
                f"(batch {r['batch_size']}, {r['latent_layers']} latent layers)"
            )
    name = "hvae_throughput" + ("_cuda" if args.device == "cuda" else "")
    out = ROOT / "benchmarks" / "results" / f"{name}.json"
    out.write_text(
        json.dumps(
            {
                "benchmark": "hvae_throughput",
                "device": torch.cuda.get_device_name() if args.device == "cuda" else platform.processor() or "cpu",
                "cpu_threads": torch.get_num_threads(),
                "torch": torch.__version__,
                "environment": environment(load_at_start),
                "results": results,
            },
            indent=1,
        )
    )
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
