"""Training started from the dashboard: a process of its own that outlives the server,
stops when asked (with a checkpoint) and resumes from where it stopped."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from engine.errors import AtlasError
from engine.store import Run, RunStore

ROOT = Path(__file__).resolve().parent.parent
QUICK = {"train.eval_every": 100, "train.checkpoint_every": 100, "train.log_every": 10}


@pytest.fixture
def runs(tmp_path, monkeypatch):
    monkeypatch.setenv("LATENT_ATLAS_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    return tmp_path / "runs"


def wait_for(predicate, timeout: float = 120.0, what: str = "the condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


def only_run(runs: Path) -> Run | None:
    infos = RunStore(runs).list_runs() if runs.exists() else []
    return Run.from_dir(infos[0].dir, readonly=True) if infos else None


def test_a_run_started_by_the_server_survives_the_server_being_stopped(runs):
    """The server process starts a job, then gets Ctrl-C (SIGINT to its whole process
    group, as a terminal sends it) and is killed; the job trains on to the end."""
    server_code = textwrap.dedent(f"""
        import time
        from app.training_jobs import start_training
        print(start_training("digits-vae", {{"train.steps": 300, **{QUICK!r}}}), flush=True)
        time.sleep(600)
    """)
    server = subprocess.Popen(
        [sys.executable, "-c", server_code],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        start_new_session=True,
    )
    try:
        token = server.stdout.readline().strip()
        assert token.startswith("digits-vae-web")
        run = wait_for(lambda: only_run(runs), what="the job's run")
        wait_for(lambda: run.status.effective().state == "running", what="the run to start")
        os.killpg(server.pid, signal.SIGINT)
        time.sleep(0.5)
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(timeout=10)
    finally:
        if server.poll() is None:
            server.kill()
    wait_for(lambda: run.status.effective().state != "running", timeout=180, what="the run to end")
    assert run.status.effective().state == "finished", run.status.effective()
    assert run.metrics.max_step() == 300 and run.latest_checkpoint().step == 300


def test_stop_checkpoints_and_resume_continues_to_the_new_step_count(runs):
    from app.training_jobs import start_training, stop_run

    token = start_training("digits-vae", {"train.steps": 1_000_000, **QUICK})
    run = wait_for(lambda: only_run(runs), what="the job's run")
    assert token in run.id
    wait_for(lambda: (run.metrics.max_step() or 0) >= 30, what="some training steps")
    stop_run(run)
    wait_for(lambda: run.status.effective().state != "running", timeout=60, what="the run to stop")
    status = run.status.effective()
    assert status.state == "interrupted" and "dashboard" in status.reason, status
    stopped_at = run.latest_checkpoint().step
    assert stopped_at == run.metrics.max_step() >= 30  # checkpointed where it stopped, nothing lost
    assert run.stop_request() is None  # the request is used up: a resumed run does not stop at once
    from app.training_jobs import _log_path

    # the job chose its threads from the server's environment (here OMP_NUM_THREADS=1) and said so
    assert "threads: 1 (OMP_NUM_THREADS: set in the environment" in _log_path(token).read_text()

    start_training(resume=run.id, settings={"train.steps": stopped_at + 40})
    wait_for(lambda: run.latest_checkpoint().step == stopped_at + 40, timeout=120, what="the resumed run")
    wait_for(lambda: run.status.effective().state == "finished", timeout=30, what="the resumed run to finish")
    steps, _ = run.metrics.scalars(["train/loss"])["train/loss"]
    assert list(steps) == sorted(set(steps)) and steps[-1] == stopped_at + 40  # one curve, no repeated steps


def logging_script(runs: Path, ignore_interrupt: bool) -> subprocess.Popen:
    """A script that logs through RunLogger and never looks at stop requests."""
    code = textwrap.dedent(f"""
        import signal, time
        from engine.store import RunLogger
        if {ignore_interrupt!r}:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        else:  # Ctrl-C raises KeyboardInterrupt, as in a terminal, even if the test runner ignores SIGINT
            signal.signal(signal.SIGINT, signal.default_int_handler)
        with RunLogger.create({str(runs)!r}, config={{"model": "script"}}, name="script") as log:
            step = 0
            while True:
                step += 1
                log.scalar(step, "loss", 1.0 / step)
                time.sleep(0.02)
    """)
    return subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_force_stop_interrupts_a_script_that_ignores_stop_requests(runs):
    from app.training_jobs import force_stop, stop_run

    script = logging_script(runs, ignore_interrupt=False)
    try:
        run = wait_for(lambda: only_run(runs), what="the script's run")
        wait_for(lambda: (run.metrics.max_step() or 0) >= 5, what="some logged steps")
        stop_run(run)
        time.sleep(1.0)
        assert run.status.effective().state == "running"  # the script does not honour the request
        assert force_stop(run) == f"Process {script.pid} interrupted."
        assert script.poll() is not None  # ended, and reaped
        status = run.status.effective()
        assert status.state == "interrupted" and "KeyboardInterrupt" in status.reason, status
    finally:
        if script.poll() is None:
            script.kill()


def test_force_stop_terminates_a_process_that_ignores_the_interrupt(runs, monkeypatch):
    import app.training_jobs as jobs

    monkeypatch.setattr(jobs, "FORCE_GRACE_S", 0.5)
    script = logging_script(runs, ignore_interrupt=True)
    try:
        run = wait_for(lambda: only_run(runs), what="the script's run")
        wait_for(lambda: (run.metrics.max_step() or 0) >= 5, what="some logged steps")
        assert jobs.force_stop(run) == f"Process {script.pid} terminated."
        assert script.poll() is not None  # ended, and reaped by force_stop (so Popen cannot see its signal)
        status = run.status.effective()  # it could not say so itself: its process is found gone
        assert status.state == "interrupted" and str(script.pid) in status.reason, status
        with pytest.raises(AtlasError, match="not running"):
            jobs.force_stop(run)
    finally:
        if script.poll() is None:
            script.kill()
