"""benchmarks/gpu_check.sh --dry-run: the GPU check runs start to finish without a GPU (the CPU
standing in for CUDA, tiny sizes) and writes every section of its JSON. About 20-40 s."""

from __future__ import annotations

import json
import math
import os
import statistics
import subprocess
from pathlib import Path

import pytest

from engine.training.presets import get_preset

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu_check.sh"
MODES = ("cuda_fp32", "cuda_bf16", "cpu_fp32")


def positive(value) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value > 0


def demo_presets() -> list[str]:
    return sorted({json.loads(p.read_text())["preset"] for p in (REPO / "assets" / "runs").glob("*/config.json")})


def check_measurement(entry: dict, batch_size: int) -> None:
    assert "error" not in entry and "skipped" not in entry, entry
    assert entry["batch_size"] == batch_size
    assert entry["blocks"] >= 3 and len(entry["block_seconds"]) == len(entry["samples_per_s"]) == entry["blocks"]
    assert all(positive(s) for s in entry["block_seconds"])
    for seconds, rate in zip(entry["block_seconds"], entry["samples_per_s"]):
        assert rate == pytest.approx(entry["block_steps"] * batch_size / seconds)
    assert positive(entry["median_samples_per_s"])
    assert entry["median_samples_per_s"] == pytest.approx(statistics.median(entry["samples_per_s"]))
    assert entry["skipped_updates"] == 0  # every timed step ran its optimiser update


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory) -> dict:
    # called from another directory, with a relative --out: the script runs from the repository
    # root and writes where it was asked, relative to the caller
    cwd = tmp_path_factory.mktemp("caller")
    proc = subprocess.run(
        ["bash", str(SCRIPT), "--dry-run", "--out", "x.json"],
        cwd=cwd,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return json.loads((cwd / "x.json").read_text())


def test_dry_run_records_the_machine_and_the_gpu_tests(dry_run):
    assert dry_run["benchmark"] == "gpu_check" and dry_run["dry_run"] is True and dry_run["complete"] is True
    machine = dry_run["machine"]
    assert machine["torch_version"] and machine["device_name"] and "cuda_version" in machine
    assert positive(machine["torch_threads"]) and len(dry_run["loadavg_at_start"]) == 3
    tests = dry_run["gpu_tests"]
    assert tests["command"].startswith("python -m pytest -m gpu")
    assert tests["returncode"] == 0 and tests["failed"] == tests["errors"] == 0
    assert tests["collected"] >= 1 and tests["passed"] + tests["skipped"] == tests["collected"]
    assert set(dry_run["seconds_per_part"]) == {"gpu_tests", "training", "hmc", "thesis_hvae", "diffusion"}
    assert all(positive(s) for s in dry_run["seconds_per_part"].values())


def test_dry_run_times_every_demo_preset_in_every_mode(dry_run):
    training = dry_run["training"]
    assert training["presets"] == demo_presets()
    assert set(training["results"]) == set(demo_presets())
    for name, entry in training["results"].items():
        assert entry["family"] == get_preset(name)["family"]
        assert positive(entry["parameters"])
        for mode in MODES:
            check_measurement(entry[mode], entry["batch_size"])
        assert "bfloat16" in entry["cuda_bf16"]["autocast"] and entry["cuda_fp32"]["autocast"] == "none"
        assert positive(entry["speedup_cuda_fp32_over_cpu"]) and positive(entry["speedup_bf16_over_fp32"])
        assert dry_run["summary"]["training_median_samples_per_s"][name]["cuda_bf16"] == pytest.approx(
            entry["cuda_bf16"]["median_samples_per_s"], abs=0.051
        )


def test_dry_run_hmc_throughput_over_powers_of_four(dry_run):
    hmc = dry_run["hmc"]
    chains = sorted(int(c) for c in hmc["chains"])
    assert len(chains) >= 3 and chains == [chains[0] * 4**i for i in range(len(chains))]
    for c, entry in hmc["chains"].items():
        assert len(entry["seconds"]) == hmc["repeats"] >= 3
        assert entry["median_seconds"] == pytest.approx(statistics.median(entry["seconds"]))
        steps = entry["transitions_per_measurement"] * hmc["n_leapfrog"]
        assert positive(entry["chain_leapfrog_steps_per_s"])
        assert entry["chain_leapfrog_steps_per_s"] == pytest.approx(int(c) * steps / entry["median_seconds"])


def test_dry_run_hvae_at_the_thesis_mnist_size(dry_run):
    thesis = dry_run["thesis_hvae"]
    paper = get_preset("mnist-hvae-thesis")  # seed000 Table B.3 and §2.3's block strings
    for key in ("encoder", "decoder", "width", "zdim"):
        assert thesis["widths"][key] == paper["model"][key]
    assert thesis["widths"]["width"] == 32 and thesis["widths"]["zdim"] == 8
    assert thesis["widths"]["thesis_batch_size"] == paper["train"]["batch_size"] == 200
    assert "Table B.3" in thesis["widths"]["source"]
    assert thesis["input_shape"] == [1, 32, 32]
    assert thesis["overrides"]["model"]["encoder"] == paper["model"]["encoder"]
    for mode in MODES:
        check_measurement(thesis[mode], thesis["batch_size"])
    assert positive(dry_run["summary"]["thesis_hvae_median_samples_per_s"]["cuda_fp32"])


def test_dry_run_diffusion_sampling_on_both_devices(dry_run):
    diffusion = dry_run["diffusion"]
    assert "digits-ddpm-staged" in diffusion["model"] and "T = 250" in diffusion["model"]
    assert list(diffusion["devices"]) == ["cpu"]  # the dry run's accelerator is the CPU: measured once
    rows = diffusion["devices"]["cpu"]
    assert list(rows) == ["2"]
    for n, entry in rows.items():
        assert len(entry["seconds"]) == diffusion["repeats"]
        assert entry["images_per_s"] == pytest.approx(int(n) / statistics.median(entry["seconds"]))
    assert dry_run["summary"]["diffusion_sampling_images_per_s"]["cpu"]["2"] > 0


def test_a_dry_run_will_not_overwrite_the_real_results():
    real = REPO / "benchmarks" / "results" / "gpu_check.json"
    before = real.read_bytes() if real.exists() else None
    proc = subprocess.run(["bash", str(SCRIPT), "--dry-run"], capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "--out" in proc.stderr
    assert (real.read_bytes() if real.exists() else None) == before
