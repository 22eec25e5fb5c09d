"""Where the bare training step of the pythae-comparison VAE spends its time, at 1 and 2 threads,
and how close its matrix work comes to this CPU's measured matmul peak.
Writes benchmarks/results/step_anatomy.json.

    .venv/bin/python benchmarks/step_anatomy.py            # about 2 minutes on 2 cores
    .venv/bin/python benchmarks/step_anatomy.py --quick    # a smoke test

The model and step are those of benchmarks/vae_throughput.py part (a): the 784-512-256-16 MLP
VAE, batch 128, forward + loss + backward + Adam. For each OpenMP wait policy (`--policies`:
OpenMP's default, a bounded spin before sleeping, and PASSIVE, each in a fresh process, since
OpenMP reads it once) and each thread count:

- step time: median of `--blocks` blocks of `--steps` steps, after warm-up;
- the step under torch.profiler, its self CPU time summed by kind of operator: matrix products
  (addmm, mm, bmm, linear's backward products), the optimiser (Adam's foreach ops), the loss,
  element-wise and activation ops, and the rest (copies, views, autograd bookkeeping);
- FLOPs of the step's matrix products, counted from the layer sizes (forward 2*m*n*k per
  linear layer, backward twice that; the first layer's input gradient is not needed), and the
  achieved GFLOP/s: over the whole step and over the time in matrix products alone;
- the machine's matmul peak: `torch.mm` on the step's own shapes and on 1024x1024 float32
  matrices, GFLOP/s, median of several.

The JSON reports where the second thread helps (matrix products) and where it does not (the
small element-wise, loss and optimiser ops, whose time is set by dispatch and memory, not
arithmetic).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from torch.profiler import ProfilerActivity, profile  # noqa: E402

from benchmarks.common import display_path, environment, loadavg  # noqa: E402
from engine.models.vae import VAE, VAEConfig  # noqa: E402

INPUT, HIDDEN, LATENT, BATCH = 784, (512, 256), 16, 128
KINDS = {
    "matrix products": ("addmm", "aten::mm", "aten::bmm", "aten::matmul", "aten::linear"),
    "optimiser (Adam)": ("_foreach", "adam", "aten::lerp", "aten::addcmul", "aten::addcdiv", "aten::sqrt"),
    "loss": ("binary_cross_entropy", "log_sigmoid", "softplus"),
    "element-wise and activations": ("silu", "aten::mul", "aten::add", "aten::sub", "aten::exp", "aten::div", "clamp"),
}


def matmul_flops_per_step() -> float:
    """2*m*n*k per linear layer forward; backward computes the weight gradient (2*m*n*k) and the
    input gradient (2*m*n*k) except for the first layer, whose input needs none."""
    encoder = [INPUT, *HIDDEN, 2 * LATENT]
    decoder = [LATENT, *HIDDEN[::-1], INPUT]
    total = 0.0
    for sizes, first_needs_input_grad in ((encoder, False), (decoder, True)):
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            forward = 2.0 * BATCH * a * b
            total += forward + forward + (forward if (i > 0 or first_needs_input_grad) else 0.0)
    return total


def build():
    torch.manual_seed(0)
    model = VAE(
        VAEConfig(input_shape=(1, 28, 28), arch="mlp", hidden=HIDDEN, latent_dim=LATENT, likelihood="bernoulli")
    )
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.rand(BATCH, 1, 28, 28, generator=torch.Generator().manual_seed(1)).round()

    def step():
        loss, _ = model.training_loss(x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def step_time(step, steps: int, blocks: int) -> float:
    for _ in range(steps):
        step()
    times = []
    for _ in range(blocks):
        start = time.perf_counter()
        for _ in range(steps):
            step()
        times.append((time.perf_counter() - start) / steps)
    return statistics.median(times)


def profile_kinds(step, steps: int) -> dict[str, float]:
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    by_kind = dict.fromkeys([*KINDS, "other"], 0.0)
    for event in prof.key_averages():
        name = event.key.lower()
        kind = next((k for k, keys in KINDS.items() if any(key.lower() in name for key in keys)), "other")
        by_kind[kind] += event.self_cpu_time_total / 1e3 / steps  # ms per step
    return {k: round(v, 4) for k, v in by_kind.items()}


def matmul_peak(shapes: list[tuple[int, int, int]], repeats: int) -> dict[str, float]:
    out = {}
    for m, k, n in shapes:
        a, b = torch.randn(m, k), torch.randn(k, n)
        calls = max(3, int(2e9 / (2 * m * k * n)))  # about 2 GFLOP per timing
        for _ in range(3):
            torch.mm(a, b)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            for _ in range(calls):
                torch.mm(a, b)
            times.append((time.perf_counter() - start) / calls)
        out[f"{m}x{k} @ {k}x{n}"] = round(2 * m * k * n / statistics.median(times) / 1e9, 1)
    return out


POLICIES = {  # OpenMP's default spin (libgomp: 300,000), the engine's short spin, and sleeping at once
    "default": {"GOMP_SPINCOUNT": "300000"},
    "short spin": {"GOMP_SPINCOUNT": "1000"},
    "PASSIVE": {"OMP_WAIT_POLICY": "PASSIVE"},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policies", default=",".join(POLICIES), help="OpenMP wait policies, each in its own process")
    parser.add_argument("--one-policy", action="store_true", help=argparse.SUPPRESS)  # a child of the above
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--blocks", type=int, default=15)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "step_anatomy.json")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.blocks = 5, 2
    if not args.one_policy:
        return each_policy(args)
    load_at_start = loadavg()
    flops = matmul_flops_per_step()
    shapes = [(BATCH, INPUT, HIDDEN[0]), (BATCH, HIDDEN[0], HIDDEN[1]), (BATCH, HIDDEN[1], INPUT), (1024, 1024, 1024)]
    results = {}
    for threads in [int(t) for t in args.threads.split(",")]:
        torch.set_num_threads(threads)
        step = build()
        seconds = step_time(step, args.steps, args.blocks)
        kinds = profile_kinds(step, args.steps)
        profiled_total = sum(kinds.values())
        matmul_ms = kinds["matrix products"]
        results[threads] = {
            "step_ms": round(seconds * 1e3, 3),
            "samples_per_s": round(BATCH / seconds),
            "profile_ms_per_step": kinds,
            "profile_share": {k: round(v / profiled_total, 3) for k, v in kinds.items()},
            "achieved_gflops_whole_step": round(flops / seconds / 1e9, 1),
            "achieved_gflops_in_matrix_products": round(flops / (matmul_ms / 1e3) / 1e9, 1) if matmul_ms else None,
            "matmul_peak_gflops": matmul_peak(shapes, 3 if args.quick else 7),
        }
        print(f"{threads} thread(s): {results[threads]}")
    if 1 in results and 2 in results:
        one, two = results[1]["profile_ms_per_step"], results[2]["profile_ms_per_step"]
        speedups = {k: round(one[k] / two[k], 2) if two[k] else None for k in one}
        speedups["whole step"] = round(results[1]["step_ms"] / results[2]["step_ms"], 2)
    else:
        speedups = None
    out = {
        "benchmark": "step_anatomy",
        "model": f"MLP VAE {INPUT}-{HIDDEN[0]}-{HIDDEN[1]}-{2 * LATENT} / {LATENT}-{HIDDEN[1]}-{HIDDEN[0]}-{INPUT}",
        "batch": BATCH,
        "matmul_gflop_per_step": round(flops / 1e9, 4),
        "steps_per_block": args.steps,
        "blocks": args.blocks,
        "environment": environment(load_at_start),
        "by_threads": results,
        "speedup_from_the_second_thread": speedups,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps({"speedup_from_the_second_thread": speedups}, indent=2))
    print(f"wrote {display_path(args.out)}")


def each_policy(args) -> None:
    """Run this script once per wait policy in a fresh process; one JSON with all of them."""
    import os
    import subprocess
    import tempfile

    load_at_start = loadavg()
    by_policy = {}
    with tempfile.TemporaryDirectory() as tmp:
        for policy in args.policies.split(","):
            out = Path(tmp) / f"{policy}.json"
            env = {k: v for k, v in os.environ.items() if not k.startswith(("OMP_", "GOMP_"))}
            env.update(POLICIES[policy])
            command = [sys.executable, __file__, "--one-policy", "--out", str(out), "--threads", args.threads]
            command += ["--steps", str(args.steps), "--blocks", str(args.blocks)] + (["--quick"] if args.quick else [])
            print(f"-- OpenMP wait policy: {policy}", flush=True)
            subprocess.run(command, env=env, check=True)
            by_policy[policy] = json.loads(out.read_text())
    first = next(iter(by_policy.values()))
    combined = {
        "benchmark": "step_anatomy",
        "model": first["model"],
        "batch": BATCH,
        "matmul_gflop_per_step": first["matmul_gflop_per_step"],
        "steps_per_block": args.steps,
        "blocks": args.blocks,
        "loadavg_at_start": load_at_start,
        "loadavg_at_end": loadavg(),
        "by_wait_policy": {
            policy: {k: r[k] for k in ("environment", "by_threads", "speedup_from_the_second_thread")}
            for policy, r in by_policy.items()
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(combined, indent=2) + "\n")
    print(f"wrote {display_path(args.out)}")


if __name__ == "__main__":
    main()
