"""Training started from the browser: a separate process (not a thread of the web server),
in its own session, so closing the page or stopping the server does not stop it; and a
live panel that follows its run through the run store.

A job is known by a token that names its run (`latent-atlas train --name TOKEN`), so the
panel finds the run the process creates without talking to the process.
"""

from __future__ import annotations

import json
import secrets
import socket
import subprocess
import time
from pathlib import Path

import pandas as pd
import plotly.express as px
import streamlit as st

from app.runs import runs_root
from engine.errors import AtlasError
from engine.processes import start_module, stop
from engine.store import Run, RunStore
from engine.training.presets import get_preset

FORCE_GRACE_S = 5.0  # a forced stop waits this long for the interrupted process before terminating it
_PROCESSES: dict[str, tuple[subprocess.Popen, float]] = {}  # token -> (process, start time), jobs started here


def _log_path(token: str) -> Path:
    return runs_root() / ".jobs" / f"{token}.log"


def start_training(
    preset: str | None = None,
    settings: dict[str, object] | None = None,
    *,
    dataset: str | None = None,
    resume: str | None = None,
) -> str:
    """Start `latent-atlas train` in the background; returns the job's token.

    preset: a named recipe; settings: {"train.steps": 1200, "model.latent_dim": 4, ...} as
    for `--set`; dataset: another dataset for the preset (its options then come from
    `data.*` settings only). resume: the id of a run in the runs root to continue instead
    (settings may then hold "train.steps", the new total)."""
    settings = dict(settings or {})
    if resume is not None:
        RunStore(runs_root()).open_run(resume, readonly=True)  # an unknown id is refused here
        token = resume  # the run exists already: the token is its id
        command = ["train", "--resume", resume]
        if "train.steps" in settings:
            command += ["--steps", str(int(settings.pop("train.steps")))]
    else:
        if preset is None:
            raise AtlasError("start_training needs a preset or a run to resume")
        get_preset(preset)  # an unknown preset is refused here, with the list of known ones
        token = f"{preset}-web{secrets.token_hex(3)}"
        command = ["train", "--preset", preset, "--name", token] + (["--dataset", dataset] if dataset else [])
    for key, value in settings.items():
        command += ["--set", f"{key}={json.dumps(value)}"]  # JSON, so "8" stays a string and 8 a number
    log = _log_path(token)
    log.parent.mkdir(parents=True, exist_ok=True)
    started = time.time()
    process = start_module(
        "engine.cli",
        ["--runs-dir", str(runs_root().resolve()), *command, "--quiet"],
        log,
        append=True,  # the run chooses its threads from the cores left free, and logs the choice
    )
    _PROCESSES[token] = (process, started)
    return token


def stop_run(run: Run) -> str:
    """Ask a running run to checkpoint and stop (see Run.request_stop); what to tell the user."""
    status = run.status.effective()
    if status.state != "running":
        raise AtlasError(f"run {run.id} is not running (it is {status.state}), so there is nothing to stop")
    run.request_stop()
    return (
        f"Asked run {run.id} to stop: it saves a checkpoint and stops at its next logging step "
        "(a few seconds). Resume continues from that checkpoint."
    )


def force_stop(run: Run) -> str:
    """Interrupt a run's process on this machine (as Ctrl-C would) when it does not honour a
    stop request, e.g. a script that logs through RunLogger but never checks; terminate it
    if it is still running FORCE_GRACE_S later."""
    status = run.status.effective()
    if status.state != "running" or not status.pid:
        raise AtlasError(f"run {run.id} is not running (it is {status.state})")
    if status.host != socket.gethostname():
        raise AtlasError(f"run {run.id} trains on {status.host}; only a stop request reaches another machine")
    outcome = stop(status.pid, grace_s=FORCE_GRACE_S)
    if outcome == "not running":
        return f"Process {status.pid} had already ended."
    return f"Process {status.pid} {outcome}."


def find_job_run(token: str) -> Run | None:
    """The run a job created, once it exists."""
    for info in RunStore(runs_root()).list_runs():
        if token in info.id:
            return Run.from_dir(info.dir, readonly=True)
    return None


def job_failure(token: str) -> str | None:
    """The end of the job's output if its process exited with an error before its run
    could say why (no run yet, or a run that still claims to be running)."""
    process, started = _PROCESSES.get(token, (None, 0.0))
    if process is None or process.poll() in (None, 0):
        return None
    run = find_job_run(token)
    if run is not None and run.status.updated >= started:
        return None  # the process got as far as its run: the run's status says what happened
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
