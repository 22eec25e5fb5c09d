"""Small helpers the benchmark scripts share (run them from the repository root)."""

from __future__ import annotations

import contextlib
import os
import statistics
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def loadavg() -> list[float] | None:
    """The 1, 5 and 15 minute load averages, recorded beside timings from a shared machine."""
    with contextlib.suppress(OSError):
        return [round(v, 2) for v in os.getloadavg()]
    return None


def cpu_name() -> str:
    """The processor's model name from /proc/cpuinfo ("unknown" elsewhere)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "unknown"


def display_path(path: Path) -> str:
    """A path relative to the repository when it lies inside it (no machine paths in results)."""
    try:
        return str(path.resolve().relative_to(REPO))
    except ValueError:
        return path.name


def environment(load_at_start: list[float] | None = None) -> dict:
    """What a timing depends on besides the code, for a result's JSON: the date, the processor,
    the cores, every thread setting (torch's own count where torch is loaded, and the OpenMP, MKL
    and numba variables) and the load average (at the start, if given, and now)."""
    import datetime as dt
    import platform
    import sys

    threads = {name: os.environ.get(name) for name in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "MKL_NUM_THREADS")}
    threads["NUMBA_NUM_THREADS"] = os.environ.get("NUMBA_NUM_THREADS")
    if "torch" in sys.modules:
        threads["torch_threads"] = sys.modules["torch"].get_num_threads()
        threads["torch_interop_threads"] = sys.modules["torch"].get_num_interop_threads()
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "cpu": cpu_name(),
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "threads": threads,
        "loadavg_at_start": load_at_start,
        "loadavg_at_end": loadavg(),
    }


class Deadline:
    """A benchmark's whole time budget; its sections stop adding repeats when it runs out."""

    def __init__(self, seconds: float):
        self.end = time.perf_counter() + seconds

    def remaining(self) -> float:
        return self.end - time.perf_counter()


def fixed_hmc(log_prob, z0, samples: int, n_leapfrog: int, step_size: float, seed: int = 0, compile: bool = False):
    """The engine's sampler with adaptation off, as the benchmarks compare it with peers:
    identity mass, a fixed step size, no jitter, no warm-up."""
    from engine.inference.hmc import sample_hmc

    return sample_hmc(
        log_prob,
        z0,
        num_warmup=0,
        num_samples=samples,
        n_leapfrog=n_leapfrog,
        step_size=step_size,
        adapt_step_size=False,
        adapt_mass=False,
        jitter=0.0,
        keep_warmup=False,
        seed=seed,
        compile=compile,
    )


def median_time(fn, repeats: int) -> tuple[float, list[float]]:
    """The median and every time of `repeats` calls of fn, after one warm-up call."""
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), times


def training_throughput(family: str, config: dict, batch, steps: int, repeats: int) -> dict:
    """Adam steps on one fixed batch: the median over `repeats` runs of `steps` steps each."""
    import torch

    from engine.models import build_model

    torch.manual_seed(0)
    model = build_model(family, config)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-4)

    def run():
        for _ in range(steps):
            loss, _ = model.training_loss(batch)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()

    median, times = median_time(run, repeats)
    return {
        "family": family,
        "batch": len(batch),
        "steps_per_repeat": steps,
        "median_steps_per_s": steps / median,
        "median_examples_per_s": steps * len(batch) / median,
        "seconds": [round(t, 4) for t in times],
        "parameters": sum(p.numel() for p in model.parameters()),
    }


def preset_case(preset: str) -> tuple:
    """(family, model config, the first training batch) of a preset."""
    import torch

    from engine.training import RunSpec

    spec = RunSpec.from_preset(preset)
    data = spec.load_data("train")
    config = spec.model_config(data)
    batch = data.batch(torch.arange(spec.train.batch_size))
    return spec.family, config, batch
