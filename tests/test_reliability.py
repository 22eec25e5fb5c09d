"""Faults and concurrent use: a training process killed with SIGKILL while a second one
trains and the dashboard reads the same runs root; a disk that fills up during training,
an import or an upload; one cached model used by many sessions at once.

Counted elsewhere (README, Reliability): a NaN loss is skipped, counted and stops the run
after train.max_nonfinite_in_row (tests/test_training.py), a failed checkpoint write keeps
the previous one (tests/test_store.py), two metric writers and a reader lose and repeat
nothing (tests/test_store_concurrency.py), a job outlives its server (tests/test_training_jobs.py).
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from conftest import TINY_TRAIN
from test_store import failing_write

from engine.errors import AtlasError
from engine.loading import load_run_model
from engine.store import Run, RunStore, atomic, checkpoints
from engine.store.checkpoints import read_checkpoint
from engine.training import RunSpec, resume, train

ROOT = Path(__file__).resolve().parent.parent
STEPS, CHECKPOINT_EVERY, LOG_EVERY = 200, 50, 10
TRAIN_ARGS = [
    "--preset",
    "digits-vae",
    "--quiet",
    "--set",
    f"train.steps={STEPS}",
    "--set",
    f"train.checkpoint_every={CHECKPOINT_EVERY}",
    "--set",
    f"train.log_every={LOG_EVERY}",
    "--set",
    "train.eval_every=100",
    "--set",
    "train.eval_examples=100",
]


def trainer(root: Path, *args: str) -> subprocess.Popen:
    """`latent-atlas train` as a process of its own, on one thread."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "engine.cli", "--runs-dir", str(root), "train", *args]
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def wait_for(predicate, timeout: float = 120.0, what: str = "the condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if value := predicate():
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def run_named(root: Path, name: str) -> Run | None:
    found = [i for i in RunStore(root).list_runs() if f"-{name}-" in i.id] if root.exists() else []
    return Run.from_dir(found[0].dir, readonly=True) if found else None


class DashboardReader(threading.Thread):
    """What the dashboard's pages do while runs train: list the runs, read their status,
    curves and checkpoints, over and over. Any exception is kept."""

    def __init__(self, root: Path):
        super().__init__(daemon=True)
        self.root, self.stop, self.errors, self.polls = root, threading.Event(), [], 0

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                for info in RunStore(self.root).list_runs():
                    assert info.status != "broken", info.reason
                    run = Run.from_dir(info.dir, readonly=True)
                    run.status.effective()
                    run.metrics.scalars(["train/loss", "test/elbo"])
                    run.checkpoints()
                self.polls += 1
            except Exception as err:  # noqa: BLE001 -- every failure is the finding
                self.errors.append(repr(err))
            time.sleep(0.05)


def test_a_killed_run_resumes_to_the_uninterrupted_result_beside_another_run_and_a_reader(tmp_path):
    root = tmp_path / "runs"
    reader = DashboardReader(root)
    reader.start()
    killed, straight = trainer(root, *TRAIN_ARGS, "--name", "killed"), trainer(root, *TRAIN_ARGS, "--name", "straight")
    try:
        victim = wait_for(lambda: run_named(root, "killed"), what="the run to exist")
        wait_for(
            lambda: (c := victim.latest_checkpoint()) and (victim.metrics.max_step() or 0) > c.step,
            what="a checkpoint and some steps after it",
        )
        killed.send_signal(signal.SIGKILL)
        killed.wait(timeout=30)
        assert straight.wait(timeout=180) == 0, straight.stderr.read().decode()
    finally:
        for proc in (killed, straight):
            if proc.poll() is None:
                proc.kill()
    assert killed.returncode == -signal.SIGKILL

    # the store is consistent: the run reads as interrupted, its checkpoints load, its metrics open
    assert victim.status.state == "running" and victim.status.effective().state == "interrupted"
    [info] = [i for i in RunStore(root).list_runs() if i.id == victim.id]
    assert info.status == "interrupted" and str(killed.pid) in info.reason
    last = victim.latest_checkpoint().step
    assert last < STEPS and victim.metrics.max_step() > last  # killed between two checkpoints
    for ckpt in victim.checkpoints():
        read_checkpoint(ckpt.path)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the processes had: the same arithmetic, bit for bit
    try:
        resume(Run.from_dir(victim.dir))
    finally:
        torch.set_num_threads(threads)
    reader.stop.set()
    reader.join(timeout=30)
    assert reader.errors == [] and reader.polls > 10, reader.errors[:3]

    reference = run_named(root, "straight")
    assert victim.status.state == reference.status.state == "finished"
    a, _ = read_checkpoint(victim.latest_checkpoint().path)
    b, _ = read_checkpoint(reference.latest_checkpoint().path)
    assert a.keys() == b.keys()
    for name in a:  # weights, optimiser state and RNG state: bit for bit
        assert torch.equal(a[name], b[name]), name
    for run in (victim, reference):  # every logged step exactly once, the same values on both
        steps, values = run.metrics.scalars(["train/loss"])["train/loss"]
        assert steps.tolist() == list(range(LOG_EVERY, STEPS + 1, LOG_EVERY)), run.id
    assert victim.metrics.scalars()["train/loss"][1].tolist() == reference.metrics.scalars()["train/loss"][1].tolist()
    assert victim.metrics.scalars()["test/elbo"][0].tolist() == [100, 200]


def test_a_full_disk_during_training_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    """The checkpoint at step 40 hits a full disk halfway through its write: the run fails
    with the reason, the step-20 checkpoint still loads, and once there is room again the
    run resumes from it to the end."""
    short = {**TINY_TRAIN, "steps": 60, "log_every": 10, "eval_every": 60, "checkpoint_every": 20}
    spec = RunSpec.from_preset("digits-vae", {"train": short})
    real_write = checkpoints.atomic_write_bytes

    def disk_full_at_step_40(path, data, **options):
        with monkeypatch.context() as m:
            if Path(path).name == "ckpt-00000040.safetensors":
                m.setattr(atomic, "_write_all", failing_write)
            real_write(path, data, **options)

    monkeypatch.setattr(checkpoints, "atomic_write_bytes", disk_full_at_step_40)
    with pytest.raises(OSError, match="No space left"):
        train(spec, tmp_path, name="full")
    [info] = RunStore(tmp_path).list_runs()
    run = Run.from_dir(info.dir)
    assert run.status.state == "failed" and "No space left" in run.status.reason
    assert [c.step for c in run.checkpoints()] == [20]
    assert [p.name for p in run.checkpoints_dir.iterdir()] == ["ckpt-00000020.safetensors"]  # no half file
    assert load_run_model(run).step == 20

    monkeypatch.setattr(checkpoints, "atomic_write_bytes", real_write)
    resume(run)
    assert run.status.state == "finished" and [c.step for c in run.checkpoints()] == [40, 60]
    steps, _ = run.metrics.scalars(["train/loss"])["train/loss"]
    assert steps.tolist() == [10, 20, 30, 40, 50, 60]


def test_a_full_disk_during_an_import_or_an_upload_leaves_nothing_behind(tmp_path, monkeypatch):
    import numpy as np

    from engine.importing import import_run
    from engine.store.uploads import save_dataset

    demo = next((ROOT / "assets" / "runs").glob("*-digits-vae-????"), None)
    assert demo is not None, "no digits-vae demo under assets/runs"
    config, ckpt = (demo / "config.json").read_bytes(), max((demo / "checkpoints").iterdir()).read_bytes()
    npz = io.BytesIO()
    np.savez(npz, x=np.zeros((10, 8, 8)))
    root = tmp_path / "runs"
    (root / ".data").mkdir(parents=True)
    monkeypatch.setattr(atomic, "_write_all", failing_write)
    with pytest.raises(AtlasError, match="No space left.*nothing was kept"):
        import_run(root, config, ckpt)
    with pytest.raises(AtlasError, match="No space left.*nothing was kept"):
        save_dataset(root, "scans", npz.getvalue(), "scans.npz")
    assert [p.name for p in root.rglob("*")] == [".data"]


def test_one_cached_model_serves_many_sessions_at_once(monkeypatch):
    """Eight sessions asking for one model at once get the same object (loaded once, not
    copied), and using it from eight threads at once gives what using it alone gives."""
    import app.state as state
    from app.runs import available_runs, run_slug

    demo = next(c for c in available_runs() if c.key.startswith("demo/") and run_slug(c.info.id) == "digits-vae")
    loads = []
    real_load = state.load_run_model
    monkeypatch.setattr(state, "load_run_model", lambda *a, **k: loads.append(a) or real_load(*a, **k))
    state.load_model.clear()
    with ThreadPoolExecutor(8) as pool:
        models = list(pool.map(lambda _: state.load_model(str(demo.dir), None), range(8)))
    assert len(loads) == 1 and all(m is models[0] for m in models)

    model = models[0].model
    before = {k: v.clone() for k, v in model.state_dict().items()}
    z = torch.randn(8, 64, model.config.latent_dim, generator=torch.Generator().manual_seed(0))  # one batch a session
    x = torch.rand(8, 64, *model.config.input_shape, generator=torch.Generator().manual_seed(1))

    def session(i: int) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            return model.decode(z[i]), model.encode(x[i])["z"].mean

    alone = [session(i) for i in range(8)]
    for _ in range(3):
        with ThreadPoolExecutor(8) as pool:
            together = list(pool.map(session, range(8)))
        for (d1, m1), (d2, m2) in zip(alone, together):
            assert torch.equal(d1, d2) and torch.equal(m1, m2)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    state.load_model.clear()
