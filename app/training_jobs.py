"""Training started from the browser: a separate process (not a thread of the web server),
in its own session, so closing the page or stopping the server does not stop it; and a
live panel that follows its run through the run store.

A job is known by a token that names its run (`latent-atlas train --name TOKEN`), so the
panel finds the run the process creates without talking to the process.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pandas as pd
import plotly.express as px
import streamlit as st

from app.runs import REPO_ROOT, runs_root
from engine.errors import AtlasError
from engine.store import Run, RunStore
from engine.training.presets import get_preset

_PROCESSES: dict[str, subprocess.Popen] = {}  # token -> process, for jobs this server started


def _log_path(token: str) -> Path:
    return runs_root() / ".jobs" / f"{token}.log"


def start_training(preset: str, settings: dict[str, object] | None = None) -> str:
    """Start `latent-atlas train --preset PRESET` in the background; returns the job's token.
    settings: {"train.steps": 1200, ...} as for `--set`."""
    get_preset(preset)  # an unknown preset is refused here, with the list of known ones
    token = f"{preset}-web{secrets.token_hex(3)}"
    log = _log_path(token)
    log.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "engine.cli", "--runs-dir", str(runs_root().resolve()), "train",
               "--preset", preset, "--name", token]  # fmt: skip
    for key, value in (settings or {}).items():
        command += ["--set", f"{key}={value}"]
    threads = str(max(1, (os.cpu_count() or 2) // 2))  # leave the server its half of the cores
    env = {**os.environ, "OMP_NUM_THREADS": threads, "PYTHONPATH": str(REPO_ROOT)}
    with open(log, "wb") as out:
        _PROCESSES[token] = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                             cwd=REPO_ROOT, env=env, start_new_session=True)  # fmt: skip
    return token


def find_job_run(token: str) -> Run | None:
    """The run a job created, once it exists."""
    for info in RunStore(runs_root()).list_runs():
        if token in info.id:
            return Run.from_dir(info.dir, readonly=True)
    return None


def job_failure(token: str) -> str | None:
    """The end of the job's output if its process has exited without creating a run."""
    process = _PROCESSES.get(token)
    if process is None or process.poll() is None or find_job_run(token) is not None:
        return None
    text = _log_path(token).read_text(errors="replace") if _log_path(token).exists() else ""
    return text[-2000:] or f"the training process exited with code {process.returncode}"


def training_panel(token: str | None, curves: list[str]) -> None:
    """Live state, progress and curves of a job's run, refreshed every 2 s while it trains."""
    if not token:
        return

    @st.fragment(run_every=2)
    def panel() -> None:
        failure = job_failure(token)
        if failure:
            st.error(f"The training process stopped before it started its run:\n\n```\n{failure}\n```")
            return
        run = find_job_run(token)
        if run is None:
            st.info("Starting the training process…")
            return
        try:
            status = run.status.effective()
        except AtlasError as err:
            st.error(str(err))
            return
        total = run.config.get("train", {}).get("steps")
        step = run.metrics.max_step() or 0
        c1, c2, c3 = st.columns(3)
        c1.metric("State", status.state)
        c2.metric("Step", f"{step:,}" + (f" / {total:,}" if total else ""))
        c3.metric("Run", run.dir.name[-4:], help=run.dir.name)
        if total:
            st.progress(min(1.0, step / total))
        series = run.metrics.scalars(curves)
        if series:
            frames = [pd.DataFrame({"step": s, "value": v, "metric": name}) for name, (s, v) in series.items()]
            fig = px.line(pd.concat(frames), x="step", y="value", color="metric", height=320)
            fig.update_layout(margin=dict(l=10, r=10, t=20, b=10), legend_title_text="")
            st.plotly_chart(fig, width="stretch", key=f"job-{token}")
        if status.reason:
            st.caption(status.reason)

    panel()
