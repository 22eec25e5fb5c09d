"""GPU checks (issue 18): on a CUDA machine, the `gpu`-marked tests and the GPU benchmarks, in one run.

    bash benchmarks/gpu_check.sh                                # on a CUDA machine (see below for how long)
    bash benchmarks/gpu_check.sh --dry-run --out dry.json      # any machine: tiny sizes, under a minute

(gpu_check.sh runs this file with the repository's .venv/bin/python, else `python`, from the
repository root.) Five parts, written to benchmarks/results/gpu_check.json (`--out` elsewhere):

  (i)   the tests marked `gpu` (`python -m pytest -m gpu`): counts of passed, failed, skipped;
  (ii)  training throughput (samples/s) of every demo's preset (the presets named by
        assets/runs/*/config.json) on CUDA in float32 and with the trainer's bfloat16 autocast
        (TrainConfig.amp), against the same preset in float32 on the CPU at a fixed small
        number of steps. A step is the body of `Trainer.fit`'s loop (minibatch gather, copy to
        the device, `Trainer.train_step`: loss, backward, clipping, Adam) without logging,
        evaluation or checkpoints; warm-up steps first, then a median over timed blocks;
  (iii) HMC leapfrog throughput (chains x leapfrog steps per second) of the engine's
        `sample_hmc` (fixed step size, no adaptation, as benchmarks/hmc_speed.py) on the
        digits-vae demo's posterior p(z | x) for its first test image, 64 to 65,536 chains
        (powers of 4), CUDA synchronised before every clock reading;
  (iv)  training throughput of the HVAE family at the size of the thesis's MNIST model
        (seed000 §2.3, Table B.3: residual state 32 channels, 8 latent channels per layer,
        batch 200, VDVAE*'s block strings on 32x32 images): the digits-hvae preset with those
        overrides, the digits resized to 32x32. CUDA float32 and bfloat16, and the CPU.

How long: it has not run on a GPU yet. By estimate 4-5 minutes on an H100 (most of it the
CPU side and model set-up); `--budget-s` (420) stops starting new measurements after 7 minutes,
recording those left out as skipped, so that it ends within 8.

`--dry-run` runs every part start to finish on a machine without a GPU: the CPU stands in for
CUDA, bfloat16 autocast runs on the CPU (the trainer's own autocast is CUDA-only, so the dry
run swaps in torch.autocast("cpu")), and the sizes are tiny (batch 4 for every preset, no warm-up,
three blocks of one step, 4 to 64 chains, the thesis HVAE at batch 2), and pytest collects only the test files
that mention the marker. Its figures check that the script works; they measure nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
import torch  # noqa: E402

from benchmarks.common import Deadline, cpu_name, display_path, fixed_hmc, loadavg  # noqa: E402
from engine.data.base import Dataset  # noqa: E402
from engine.device import pick_device, seed_everything  # noqa: E402
from engine.errors import AtlasError  # noqa: E402
from engine.inference.posterior import latent_posterior  # noqa: E402
from engine.loading import load_run_model  # noqa: E402
from engine.models import build_model  # noqa: E402
from engine.models.base import DataInitialised, StepScheduled  # noqa: E402
from engine.store import Run, RunStore  # noqa: E402
from engine.store.atomic import atomic_write_json  # noqa: E402
from engine.training import RunSpec, Trainer  # noqa: E402

OUT_DEFAULT = REPO / "benchmarks" / "results" / "gpu_check.json"
DEMOS = REPO / "assets" / "runs"
HMC_DEMO_PRESET = "digits-vae"
DIFFUSION_DEMO_PRESET = "digits-ddpm-staged"  # issue 20: ancestral sampling of the demo DDPM

# The thesis's MNIST HVAE (seed000 §2.3): Table B.3's MNIST column (residual-state channels 32,
# z channels 8, batch 200) and the VDVAE* block strings for MNIST padded to 32x32. The same
# values as the mnist-hvae-thesis preset, which needs the MNIST files; here the digits at 32x32.
THESIS_MNIST_HVAE = {
    "source": (
        "seed000 §2.3: Table B.3, MNIST column (residual-state channels 32, z channels 8, batch 200); "
        "architecture strings of VDVAE* on MNIST padded to 32x32 (as the mnist-hvae-thesis preset)"
    ),
    "base_preset": "digits-hvae",
    "overrides": {
        "model": {
            "encoder": "32x11,32d2,16x6,16d2,8x6,8d2,4x3,4d4,1x3",
            "decoder": "1x1,4m1,4x2,8m4,8x5,16m8,16x10,32m16,32x21",
            "width": 32,
            "zdim": 8,
        },
        "data": {"options": {"size": 32}},
        "train": {"batch_size": 200},
    },
}


@dataclasses.dataclass
class Sizes:
    """How long each measurement runs."""

    warmup: int  # untimed steps first (allocator, cuDNN's choices, first calls)
    blocks: int  # timed blocks; the figure is their median
    block_steps: int  # steps per block; with target_block_s, the least
    target_block_s: float = 0.0  # > 0: steps per block from a probe, to take about this long
    max_block_steps: int = 0


# The real run and the dry run (well under a minute on 2 CPU cores).
REAL = {
    "cuda": Sizes(warmup=10, blocks=5, block_steps=5, target_block_s=0.5, max_block_steps=300),
    "cpu": Sizes(warmup=2, blocks=3, block_steps=5),
    "thesis_cpu": Sizes(warmup=1, blocks=3, block_steps=1),  # seconds per step at batch 200
    "hmc_chains": [4**k for k in range(3, 9)],  # 64 ... 65,536
    "hmc_target_s": 0.5,
    "hmc_repeats": 3,
    "batch": None,  # each preset's own
    "thesis_batch": None,  # Table B.3's 200
    "sampling_batches": {"cuda": [64, 256, 1024, 4096], "cpu": [64]},
    "sampling_repeats": 3,
}
DRY = {  # no warm-up: the dry run's figures measure nothing, and its time goes into CI
    "cuda": Sizes(warmup=0, blocks=3, block_steps=1),
    "cpu": Sizes(warmup=0, blocks=3, block_steps=1),
    "thesis_cpu": Sizes(warmup=0, blocks=3, block_steps=1),
    "hmc_chains": [4, 16, 64],
    "hmc_target_s": 0.0,  # fixed: 2 transitions per measurement
    "hmc_repeats": 3,
    "batch": 4,
    "thesis_batch": 2,
    "sampling_batches": {"cuda": [2, 4], "cpu": [2]},  # the CPU stands in for CUDA: measured once, as the CPU
    "sampling_repeats": 2,
}
HMC_STEP_SIZE, HMC_LEAPFROG = 0.1, 10  # sample_hmc's defaults, as in benchmarks/hmc_speed.py


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def clock(device: torch.device) -> float:
    """perf_counter after the device has finished its queued work."""
    sync(device)
    return time.perf_counter()


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


# -- (i) the gpu-marked tests -----------------------------------------------------------------------


def gpu_test_files() -> list[str]:
    """The test files that mark a test `gpu` (the dry run collects only these)."""
    return sorted(str(p.relative_to(REPO)) for p in (REPO / "tests").glob("test_*.py") if "mark.gpu" in p.read_text())


def gpu_tests(dry_run: bool) -> dict:
    """`pytest -m gpu` in a subprocess; counts from its JUnit XML. The real run collects the
    whole suite; the dry run, to stay short, only the files that mention the marker."""
    targets = gpu_test_files() if dry_run else []
    with tempfile.TemporaryDirectory() as tmp:
        xml = Path(tmp) / "gpu.xml"
        args = ["-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", *targets]
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(
                [sys.executable, *args, f"--junitxml={xml}"], cwd=REPO, capture_output=True, text=True, timeout=300
            )
        except subprocess.TimeoutExpired as err:
            proc = subprocess.CompletedProcess(err.cmd, 124, "", "pytest -m gpu timed out after 300 s")
        seconds = time.perf_counter() - t0
        counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
        if xml.exists():
            for suite in ET.parse(xml).getroot().iter("testsuite"):
                for key in counts:
                    counts[key] += int(suite.get(key, 0))
    lines = [line for line in proc.stdout.strip().splitlines() if line.strip()]
    return {
        "command": "python " + " ".join(args),
        "returncode": proc.returncode,
        "collected": counts["tests"],
        "passed": counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"],
        "failed": counts["failures"],
        "errors": counts["errors"],
        "skipped": counts["skipped"],
        "summary_line": lines[-1] if lines else "",
        "output_tail": proc.stdout[-3000:] + proc.stderr[-2000:] if proc.returncode else "",
        "seconds": seconds,
    }


# -- (ii) and (iv): training throughput --------------------------------------------------------------


def demo_presets() -> list[str]:
    """The presets the demo runs in assets/runs were trained from, sorted."""
    names = set()
    for config in DEMOS.glob("*/config.json"):
        preset = json.loads(config.read_text()).get("preset")
        if preset:
            names.add(preset)
    if not names:
        raise AtlasError(f"no demo runs with a preset under {display_path(DEMOS)}")
    return sorted(names)


def cpu_bf16_autocast() -> contextlib.AbstractContextManager:
    return torch.autocast("cpu", dtype=torch.bfloat16)


@dataclasses.dataclass
class Prepared:
    """A spec with its data and its initial model, shared by the three measurements."""

    spec: RunSpec
    train_data: Dataset
    test_data: Dataset
    model: torch.nn.Module  # on the CPU, initialised as Trainer.fit does on a fresh run


def prepare(name: str, overrides: dict | None = None) -> Prepared:
    spec = RunSpec.from_preset(name, overrides)
    train_data, test_data = spec.load_data("train"), spec.load_data("test")
    spec.model = spec.model_config(train_data)
    seed_everything(spec.train.seed)
    model = build_model(spec.family, spec.model)
    if isinstance(model, DataInitialised):  # as Trainer.fit does on a fresh run
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            torch.manual_seed(spec.train.seed)
            model.initialize(train_data)
    return Prepared(spec, train_data, test_data, model)


def measure_training(prep: Prepared, device: torch.device, bf16: bool, sizes: Sizes, runs_root: Path) -> dict:
    """Samples/s of a copy of `prep.model` trained on `device`: `sizes.warmup` steps, then the
    median of `sizes.blocks` timed blocks."""
    train_data = prep.train_data
    spec = copy.deepcopy(prep.spec)
    spec.train = dataclasses.replace(spec.train, device=str(device), amp=bf16, progress=False)
    run = RunStore(runs_root).create_run(spec.to_dict(), name_hint=spec.preset or spec.family)
    model = copy.deepcopy(prep.model)
    trainer = Trainer(model, train_data, prep.test_data, spec.train, run)
    autocast = "none"
    if bf16:
        if trainer.use_amp:
            autocast = "bfloat16 (the trainer's own, TrainConfig.amp on CUDA)"
        else:  # the trainer's autocast is CUDA-only: the dry run's CPU stand-in uses the CPU's
            trainer.autocast = cpu_bf16_autocast
            autocast = "bfloat16 (torch.autocast('cpu'), standing in for the trainer's CUDA autocast)"

    def steps(n: int) -> float:
        t0 = clock(device)
        for _ in range(n):
            step = trainer.step
            inputs = trainer.inputs(step)
            if isinstance(model, StepScheduled):
                model.set_step(step)
            trainer.train_step(inputs)
            trainer.step += 1
        return clock(device) - t0

    reset_peak_memory(device)
    steps(sizes.warmup)
    block = sizes.block_steps
    if sizes.target_block_s > 0:
        probe = steps(sizes.block_steps) / sizes.block_steps
        block = int(min(max(round(sizes.target_block_s / max(probe, 1e-9)), sizes.block_steps), sizes.max_block_steps))
    seconds = [steps(block) for _ in range(sizes.blocks)]
    bs = spec.train.batch_size
    rates = [block * bs / s for s in seconds]
    return {
        "device": str(device),
        "autocast": autocast,
        "torch_threads": torch.get_num_threads() if device.type == "cpu" else None,
        "batch_size": bs,
        "warmup_steps": sizes.warmup,
        "block_steps": block,
        "blocks": sizes.blocks,
        "block_seconds": seconds,
        "samples_per_s": rates,
        "median_samples_per_s": statistics.median(rates),
        "median_steps_per_s": statistics.median(block / s for s in seconds),
        "skipped_updates": trainer.skipped,  # non-finite or over-threshold steps (no Adam step: cheaper)
        "peak_memory_mib": peak_memory_mib(device),
    }


def model_facts(prep: Prepared) -> dict:
    return {
        "family": prep.spec.family,
        "dataset": prep.spec.data["name"],
        "data_options": prep.spec.data["options"],
        "input_shape": list(prep.train_data.shape),
        "train_examples": len(prep.train_data),
        "batch_size": prep.spec.train.batch_size,
        "parameters": sum(p.numel() for p in prep.model.parameters()),
    }


def training_modes(prep: Prepared, accel, cpu, cuda: Sizes, cpu_sizes: Sizes, deadline: Deadline, root) -> dict:
    """The three measurements of one spec: CUDA float32, CUDA bfloat16, CPU float32."""
    out = {}
    for key, device, bf16, size in (
        ("cuda_fp32", accel, False, cuda),
        ("cuda_bf16", accel, True, cuda),
        ("cpu_fp32", cpu, False, cpu_sizes),
    ):
        t0 = time.perf_counter()
        if deadline.remaining() < 20:
            out[key] = {"skipped": "time budget spent"}
            continue
        try:
            out[key] = measure_training(prep, device, bf16, size, root)
        except (AtlasError, RuntimeError) as err:  # recorded, and the check goes on
            out[key] = {"error": f"{type(err).__name__}: {err}"}
        print(f"    {key}: {describe(out[key])} ({time.perf_counter() - t0:.1f} s)", flush=True)
    ok = {k: v["median_samples_per_s"] for k, v in out.items() if "median_samples_per_s" in v}
    if "cuda_fp32" in ok and "cpu_fp32" in ok:
        out["speedup_cuda_fp32_over_cpu"] = ok["cuda_fp32"] / ok["cpu_fp32"]
    if "cuda_bf16" in ok and "cuda_fp32" in ok:
        out["speedup_bf16_over_fp32"] = ok["cuda_bf16"] / ok["cuda_fp32"]
    return out


def describe(entry: dict) -> str:
    if "error" in entry or "skipped" in entry:
        return entry.get("error") or entry["skipped"]
    return f"{entry['median_samples_per_s']:,.0f} samples/s ({entry['block_steps']} steps x {entry['blocks']})"


def training_part(accel, cpu, sizes, deadline, root) -> dict:
    presets = demo_presets()
    overrides = {"train": {"batch_size": sizes["batch"]}} if sizes["batch"] else None
    results = {}
    for name in presets:
        if deadline.remaining() < 30:
            results[name] = {"skipped": "time budget spent"}
            continue
        print(f"  {name}", flush=True)
        try:
            prep = prepare(name, overrides)
        except AtlasError as err:  # e.g. a data set's files missing: recorded, and the check goes on
            results[name] = {"error": f"{type(err).__name__}: {err}"}
            print(f"    {results[name]['error']}", flush=True)
            continue
        modes = training_modes(prep, accel, cpu, sizes["cuda"], sizes["cpu"], deadline, root)
        results[name] = {**model_facts(prep), **modes}
    return {
        "presets": presets,
        "batch_size": "each preset's own" if overrides is None else f"dry run: {sizes['batch']} for every preset",
        "results": results,
    }


def thesis_hvae_part(accel, cpu, sizes, deadline, root) -> dict:
    overrides = copy.deepcopy(THESIS_MNIST_HVAE["overrides"])
    if sizes["thesis_batch"]:
        overrides["train"]["batch_size"] = sizes["thesis_batch"]
    print(f"  {THESIS_MNIST_HVAE['base_preset']} at the thesis's MNIST size", flush=True)
    prep = prepare(THESIS_MNIST_HVAE["base_preset"], overrides)
    widths = {k: prep.spec.model[k] for k in ("width", "zdim", "bottleneck", "encoder", "decoder")}
    return {
        "base_preset": THESIS_MNIST_HVAE["base_preset"],
        "overrides": overrides,
        "widths": {
            **widths,
            "thesis_batch_size": THESIS_MNIST_HVAE["overrides"]["train"]["batch_size"],
            "source": THESIS_MNIST_HVAE["source"],
        },
        "batch_size_note": (
            None if not sizes["thesis_batch"] else f"dry run: batch {sizes['thesis_batch']} instead of 200"
        ),
        **model_facts(prep),
        **training_modes(prep, accel, cpu, sizes["cuda"], sizes["thesis_cpu"], deadline, root),
    }


# -- (iii) HMC leapfrog throughput -------------------------------------------------------------------


def hmc_part(device: torch.device, sizes: dict, deadline: Deadline) -> dict:
    run_dir = demo_run(HMC_DEMO_PRESET)
    loaded = load_run_model(Run.from_dir(run_dir, readonly=True), device=str(device))
    x = loaded.spec.load_data("test").x[:1].to(device)
    post = latent_posterior(loaded.model, x)

    def transitions(chains: int, n: int) -> float:
        z0 = post.initial(chains, seed=0)
        t0 = clock(device)
        fixed_hmc(post.log_prob, z0, n, HMC_LEAPFROG, HMC_STEP_SIZE)
        return clock(device) - t0

    table = {}
    for chains in sizes["hmc_chains"]:
        if deadline.remaining() < 10:
            table[str(chains)] = {"skipped": "time budget spent"}
            continue
        reset_peak_memory(device)
        try:
            transitions(chains, 1)  # warm-up
            n = 2
            if sizes["hmc_target_s"] > 0:
                probe = transitions(chains, 2) / 2
                n = int(min(max(round(sizes["hmc_target_s"] / probe), 2), 400))
            seconds = [transitions(chains, n) for _ in range(sizes["hmc_repeats"])]
        except RuntimeError as err:  # e.g. out of memory: recorded, and the check goes on
            table[str(chains)] = {"error": f"{type(err).__name__}: {err}"}
            print(f"  {chains:6d} chains: {table[str(chains)]['error']}", flush=True)
            continue
        med = statistics.median(seconds)
        steps = n * HMC_LEAPFROG
        table[str(chains)] = {
            "transitions_per_measurement": n,
            "seconds": seconds,
            "median_seconds": med,
            "chain_leapfrog_steps_per_s": chains * steps / med,
            "ms_per_leapfrog_step": 1000 * med / steps,  # one batched step of all chains
            "peak_memory_mib": peak_memory_mib(device),
        }
        print(
            f"  {chains:6d} chains: {table[str(chains)]['chain_leapfrog_steps_per_s']:,.0f} chain-steps/s "
            f"({table[str(chains)]['ms_per_leapfrog_step']:.3f} ms/step)",
            flush=True,
        )
    return {
        "target": (
            f"p(z | x) of the {HMC_DEMO_PRESET} demo ({display_path(run_dir)}, {post.mean.shape[-1]}-D latent) "
            "for its first test image"
        ),
        "sampler": "engine.inference.hmc.sample_hmc, no warm-up, fixed step, identity mass, no jitter",
        "step_size": HMC_STEP_SIZE,
        "n_leapfrog": HMC_LEAPFROG,
        "device": str(device),
        "repeats": sizes["hmc_repeats"],
        "chains": table,
    }


# -- (v) diffusion sampling ----------------------------------------------------------------------------


def demo_run(preset: str) -> Path:
    for config in sorted(DEMOS.glob("*/config.json")):
        if json.loads(config.read_text()).get("preset") == preset:
            return config.parent
    raise AtlasError(f"no {preset} demo under {display_path(DEMOS)}")


def diffusion_part(accel: torch.device, cpu: torch.device, sizes: dict, deadline: Deadline) -> dict:
    """Images/s of ancestral sampling (all T steps of the U-Net, EMA weights as the app uses them)
    of the DDPM demo, a batch of n at a time, on the accelerator and on the CPU."""
    run_dir = demo_run(DIFFUSION_DEMO_PRESET)
    table = {}
    for device in dict.fromkeys([accel, cpu]):
        model = load_run_model(Run.from_dir(run_dir, readonly=True), device=str(device)).model.eval()
        rows = {}
        for n in sizes["sampling_batches"]["cuda" if device.type != "cpu" else "cpu"]:
            if deadline.remaining() < 15:
                rows[str(n)] = {"skipped": "time budget spent"}
                continue
            reset_peak_memory(device)
            try:
                model.sample(n, generator=torch.Generator(device=device).manual_seed(0))  # warm-up
                seconds = []
                for r in range(sizes["sampling_repeats"]):
                    t0 = clock(device)
                    model.sample(n, generator=torch.Generator(device=device).manual_seed(r + 1))
                    seconds.append(clock(device) - t0)
            except RuntimeError as err:  # e.g. out of memory: recorded, and the check goes on
                rows[str(n)] = {"error": f"{type(err).__name__}: {err}"}
                continue
            med = statistics.median(seconds)
            rows[str(n)] = {"seconds": seconds, "images_per_s": n / med, "peak_memory_mib": peak_memory_mib(device)}
            print(f"  {device.type} {n:5d} images: {n / med:,.1f} images/s", flush=True)
        table[str(device)] = rows
    return {
        "model": f"the {DIFFUSION_DEMO_PRESET} demo ({display_path(run_dir)}), T = {model.config.steps} steps",
        "torch_threads_cpu": torch.get_num_threads(),
        "repeats": sizes["sampling_repeats"],
        "devices": table,
    }


# -- machine, summary, main ---------------------------------------------------------------------------


def machine(accel: torch.device) -> dict:
    info = {
        "cpu_model": cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "omp_num_threads_env": os.environ.get("OMP_NUM_THREADS"),
        "python_version": platform.python_version(),
        "torch_version": torch.__version__,
        "cuda_version": torch.version.cuda,
        "cudnn_version": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "cuda_available": torch.cuda.is_available(),
    }
    if accel.type == "cuda":
        props = torch.cuda.get_device_properties(accel)
        info.update(
            device_name=torch.cuda.get_device_name(accel),
            device_capability=f"{props.major}.{props.minor}",
            device_memory_gib=round(props.total_memory / 2**30, 1),
        )
    else:
        info.update(device_name=f"cpu standing in for cuda ({cpu_name()})")
    return info


def summarise(result: dict) -> dict:
    def median(entry: dict, key: str):
        return round(entry[key]["median_samples_per_s"], 1) if "median_samples_per_s" in entry.get(key, {}) else None

    training = {
        name: {key: median(entry, key) for key in ("cuda_fp32", "cuda_bf16", "cpu_fp32")}
        for name, entry in result["training"]["results"].items()
    }
    return {
        "training_median_samples_per_s": training,
        "hmc_chain_leapfrog_steps_per_s": {
            chains: round(v["chain_leapfrog_steps_per_s"]) if "chain_leapfrog_steps_per_s" in v else None
            for chains, v in result["hmc"]["chains"].items()
        },
        "thesis_hvae_median_samples_per_s": {
            key: median(result["thesis_hvae"], key) for key in ("cuda_fp32", "cuda_bf16", "cpu_fp32")
        },
        "diffusion_sampling_images_per_s": {
            device: {n: round(v["images_per_s"], 1) if "images_per_s" in v else None for n, v in rows.items()}
            for device, rows in result.get("diffusion", {}).get("devices", {}).items()
        },
        "gpu_tests": result["gpu_tests"]["summary_line"],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dry-run", action="store_true", help="tiny sizes, the CPU standing in for CUDA (no GPU needed)")
    p.add_argument("--out", type=Path, default=None, help=f"JSON to write (default {display_path(OUT_DEFAULT)})")
    p.add_argument("--budget-s", type=float, default=420.0, help="stop adding measurements after this many seconds")
    p.add_argument("--skip-tests", action="store_true", help="leave out part (i), the gpu-marked tests")
    args = p.parse_args(argv)
    caller_cwd = Path(os.environ.get("GPU_CHECK_CALLER_CWD", os.getcwd()))
    out = OUT_DEFAULT if args.out is None else (args.out if args.out.is_absolute() else caller_cwd / args.out)
    if args.dry_run and out.resolve() == OUT_DEFAULT.resolve():
        sys.exit("a dry run measures nothing: write it elsewhere with --out, not over the real results")
    started = time.perf_counter()
    deadline = Deadline(args.budget_s)
    cpu = torch.device("cpu")
    if args.dry_run:
        accel, sizes = pick_device("cpu"), DRY
    else:
        try:
            accel = pick_device("cuda")
        except AtlasError as err:
            sys.exit(f"{err}\n(gpu_check needs a CUDA device; --dry-run runs it on the CPU at tiny sizes)")
        sizes = REAL

    result: dict = {
        "benchmark": "gpu_check",
        "dry_run": args.dry_run,
        "command": "bash benchmarks/gpu_check.sh" + (" --dry-run" if args.dry_run else ""),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine(accel),
        "loadavg_at_start": loadavg(),
        "sizes": {k: dataclasses.asdict(v) if isinstance(v, Sizes) else v for k, v in sizes.items()},
    }
    print(f"gpu_check{' (dry run)' if args.dry_run else ''} on {result['machine']['device_name']}", flush=True)
    parts = {}

    def save(complete: bool) -> None:  # after every part, so that a run cut short keeps what it measured
        result.update(complete=complete, seconds_per_part=parts, seconds_total=time.perf_counter() - started)
        result["loadavg_at_end"] = loadavg()
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out, result)

    if args.skip_tests:
        result["gpu_tests"] = {"skipped": "--skip-tests", "summary_line": ""}
    else:
        print("(i) pytest -m gpu", flush=True)
        t0 = time.perf_counter()
        result["gpu_tests"] = gpu_tests(args.dry_run)
        parts["gpu_tests"] = time.perf_counter() - t0
        print(f"  {result['gpu_tests']['summary_line']}", flush=True)
        save(False)
    with tempfile.TemporaryDirectory() as root:
        print("(ii) training throughput of the demo presets", flush=True)
        t0 = time.perf_counter()
        result["training"] = training_part(accel, cpu, sizes, deadline, Path(root))
        parts["training"] = time.perf_counter() - t0
        save(False)
        print("(iii) HMC leapfrog throughput", flush=True)
        t0 = time.perf_counter()
        result["hmc"] = hmc_part(accel, sizes, deadline)
        parts["hmc"] = time.perf_counter() - t0
        save(False)
        print("(iv) HVAE at the thesis's MNIST size", flush=True)
        t0 = time.perf_counter()
        result["thesis_hvae"] = thesis_hvae_part(accel, cpu, sizes, deadline, Path(root))
        parts["thesis_hvae"] = time.perf_counter() - t0
        save(False)
        print("(v) diffusion sampling", flush=True)
        t0 = time.perf_counter()
        result["diffusion"] = diffusion_part(accel, cpu, sizes, deadline)
        parts["diffusion"] = time.perf_counter() - t0
    result["summary"] = summarise(result)
    save(True)
    print(f"wrote {display_path(out)} in {result['seconds_total']:.0f} s", flush=True)
    tests_ok = args.skip_tests or result["gpu_tests"]["returncode"] == 0
    failed = failed_measurements(result)
    if failed:
        print("failed: " + "; ".join(failed), flush=True)
    return 0 if tests_ok and not failed else 1


def failed_measurements(result: dict) -> list[str]:
    """Names of the measurements that raised or were cut by the time budget."""
    entries = {}
    for name, v in result["training"]["results"].items():
        entries.update({name: v} if "error" in v or "skipped" in v else {f"{name} {k}": m for k, m in v.items()})
    entries.update(
        {f"thesis_hvae {key}": result["thesis_hvae"].get(key) for key in ("cuda_fp32", "cuda_bf16", "cpu_fp32")}
    )
    entries.update({f"hmc {c} chains": v for c, v in result["hmc"]["chains"].items()})
    for device, rows in result.get("diffusion", {}).get("devices", {}).items():
        entries.update({f"diffusion sampling {device} {n}": v for n, v in rows.items()})
    return [
        f"{k}: {v.get('error') or v.get('skipped')}"
        for k, v in entries.items()
        if isinstance(v, dict) and ("error" in v or "skipped" in v)
    ]


if __name__ == "__main__":
    sys.exit(main())
