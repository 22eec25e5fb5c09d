"""Runs: one directory per training run under a runs root.

    <root>/<run id>/
        config.json                          the run's configuration (any JSON dict)
        status.json                          state, pid, host, timestamps, reason
        metrics.sqlite (+ -wal, -shm)        scalars and images, see metrics.py
        checkpoints/ckpt-00001000.safetensors

Run ids look like `20261121-101500-vae-digits-3fa2` (local time, a slug, random hex).
Every id or file name that comes from outside is checked, so it cannot leave the root.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
import socket
import time
import uuid
from dataclasses import asdict, dataclass, field, replace
from functools import cached_property
from pathlib import Path

import torch

from engine.errors import AtlasError
from engine.processes import pid_alive
from engine.store.atomic import atomic_write_json
from engine.store.checkpoints import (
    CKPT_RE,
    CheckpointInfo,
    checkpoint_name,
    list_checkpoints,
    prune_checkpoints,
    read_checkpoint,
    write_checkpoint,
)
from engine.store.metrics import MetricsDB
from engine.store.paths import check_name, child_path

STATES = ("created", "running", "finished", "interrupted", "failed")
CONFIG_FILE, STATUS_FILE, METRICS_FILE, CHECKPOINT_DIR, STOP_FILE = (
    "config.json",
    "status.json",
    "metrics.sqlite",
    "checkpoints",
    "stop-request.json",
)
LISTED_METRICS = 8
ID_ATTEMPTS = 100


@dataclass(frozen=True)
class RunStatus:
    """Contents of status.json. Times are seconds since the epoch."""

    state: str = "created"
    pid: int | None = None
    host: str = ""
    created: float = 0.0
    started: float | None = None
    updated: float = 0.0
    reason: str = ""

    def effective(self) -> RunStatus:
        """This status, but "interrupted" if it says running and its process is gone."""
        here = self.host == socket.gethostname()
        if self.state == "running" and self.pid and here and not pid_alive(self.pid):
            return replace(
                self,
                state="interrupted",
                reason=f"process {self.pid} on {self.host} is no longer running",
            )
        return self


@dataclass(frozen=True)
class RunInfo:
    """One line of the run list; `status` is "broken" (with `reason`) if unreadable.
    family: the model family that builds the run's model ("" if the config names none);
    input_shape: one example's shape, when the model config gives it."""

    id: str
    dir: Path
    created: float
    status: str
    reason: str = ""
    model: str = ""
    dataset: str = ""
    family: str = ""
    input_shape: tuple[int, ...] | None = None
    latest_step: int | None = None
    n_checkpoints: int = 0
    metrics: dict[str, float] = field(default_factory=dict)


class Run:
    """A run directory. Get one from RunStore.create_run / open_run or Run.from_dir."""

    def __init__(self, directory: Path, readonly: bool = False):
        self.dir = Path(directory)
        self.id = self.dir.name
        self.readonly = readonly

    @classmethod
    def from_dir(cls, path: str | os.PathLike, readonly: bool = False) -> Run:
        """Open a run directory anywhere (e.g. a demo run in assets/runs/)."""
        run = cls(Path(path).resolve(), readonly=readonly)
        if not run.dir.is_dir():
            raise AtlasError(f"No run directory at {run.dir}.")
        _ = run.config  # fail now, with a clear message, if config.json is unreadable
        return run

    def __repr__(self) -> str:
        return f"Run({str(self.dir)!r})"

    # -- config and status -------------------------------------------------------

    @cached_property
    def config(self) -> dict:
        path = self.dir / CONFIG_FILE
        try:
            config = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise AtlasError(
                f"Run {self.id} has no {CONFIG_FILE}; it is not a run directory or its creation was interrupted."
            ) from None
        except (OSError, ValueError) as e:
            raise AtlasError(f"Run {self.id}: {CONFIG_FILE} is unreadable ({e}); fix or delete the run.") from e
        if not isinstance(config, dict):
            raise AtlasError(f"Run {self.id}: {CONFIG_FILE} must hold a JSON object.")
        return config

    @property
    def status(self) -> RunStatus:
        """status.json as written (see RunStatus.effective for liveness)."""
        path = self.dir / STATUS_FILE
        if not path.exists():
            return RunStatus(created=self.dir.stat().st_mtime)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return RunStatus(**{k: data[k] for k in RunStatus.__dataclass_fields__ if k in data})
        except (OSError, ValueError, TypeError) as e:
            raise AtlasError(f"Run {self.id}: {STATUS_FILE} is unreadable ({e}).") from e

    def set_status(self, state: str, reason: str = "") -> RunStatus:
        """Record `state` with this process's pid and host; returns the new status."""
        if state not in STATES:
            raise AtlasError(f"Unknown run state {state!r}; use one of {', '.join(STATES)}.")
        self._check_writable()
        old, now = self.status, time.time()
        started = now if state == "running" and old.state != "running" else old.started
        new = RunStatus(state, os.getpid(), socket.gethostname(), old.created or now, started, now, reason)
        atomic_write_json(self.dir / STATUS_FILE, asdict(new))
        return new

    # -- stopping from outside ----------------------------------------------------

    def request_stop(self, reason: str = "stopped from the dashboard") -> None:
        """Ask the process training this run to checkpoint and stop at its next logging
        step. A file in the run directory, so it works for a process on another machine
        that shares the runs root, and for every rank of a torchrun job. Allowed on a
        read-only Run: it is the one thing a reader may write."""
        atomic_write_json(self.dir / STOP_FILE, {"reason": reason, "requested": time.time()})

    def stop_request(self) -> str | None:
        """The reason of a pending stop request, or None."""
        path = self.dir / STOP_FILE
        if not path.exists():
            return None
        try:
            return str(json.loads(path.read_text(encoding="utf-8")).get("reason", "stop requested"))
        except (OSError, ValueError, AttributeError):
            return "stop requested"

    def clear_stop_request(self) -> None:
        (self.dir / STOP_FILE).unlink(missing_ok=True)

    # -- checkpoints -------------------------------------------------------------

    @property
    def checkpoints_dir(self) -> Path:
        return self.dir / CHECKPOINT_DIR

    def checkpoints(self) -> list[CheckpointInfo]:
        return list_checkpoints(self.checkpoints_dir)

    def latest_checkpoint(self) -> CheckpointInfo | None:
        found = self.checkpoints()
        return found[-1] if found else None

    def save_checkpoint(
        self,
        step: int,
        tensors: dict[str, torch.Tensor],
        meta: dict | None = None,
        keep_last: int | None = None,
    ) -> CheckpointInfo:
        """Write ckpt-{step}.safetensors atomically; then keep only the last `keep_last`.

        `meta` gets "step" and "config_hash" (of this run's config) added.
        """
        self._check_writable()
        meta = {"config_hash": config_hash(self.config), **(meta or {})}
        info = write_checkpoint(self.checkpoints_dir, step, tensors, meta)
        if keep_last is not None:
            prune_checkpoints(self.checkpoints_dir, keep_last)
        return info

    def load_checkpoint(
        self, which: int | str | os.PathLike = "latest", device: str | torch.device = "cpu"
    ) -> tuple[dict[str, torch.Tensor], dict]:
        """(tensors, meta) of a checkpoint: "latest", a step, a file name in
        checkpoints/, or a Path anywhere."""
        path = self._checkpoint_path(which)
        try:
            return read_checkpoint(path, device=device)
        except AtlasError as e:
            raise AtlasError(f"{e}{self._earlier_checkpoint_hint(path)}") from e

    def _earlier_checkpoint_hint(self, path: Path) -> str:
        """Advice to load the checkpoint before `path`, if `path` is one of this run's."""
        match = CKPT_RE.fullmatch(path.name)
        if not (path.exists() and match):
            return ""
        earlier = [c for c in self.checkpoints() if c.step < int(match.group(1))]
        if not earlier:
            return ""
        previous = earlier[-1]
        return f" Load the previous checkpoint instead: {previous.path.name} (step {previous.step})."

    def _checkpoint_path(self, which: int | str | os.PathLike) -> Path:
        if isinstance(which, os.PathLike):
            return Path(which)
        if which == "latest":
            latest = self.latest_checkpoint()
            if latest is None:
                raise AtlasError(f"Run {self.id} has no checkpoints yet.")
            return latest.path
        if isinstance(which, int) and not isinstance(which, bool):
            path = self.checkpoints_dir / checkpoint_name(which)
            if not path.exists():
                steps = [c.step for c in self.checkpoints()]
                raise AtlasError(
                    f"Run {self.id} has no checkpoint at step {which}; available steps: {steps or 'none'}."
                )
            return path
        if isinstance(which, str):
            return child_path(self.checkpoints_dir, which, "checkpoint file name")
        raise AtlasError(f"Pick a checkpoint by step, file name or 'latest', not {which!r}.")

    # -- metrics and logging ---------------------------------------------------------

    @cached_property
    def metrics(self) -> MetricsDB:
        return MetricsDB(self.dir / METRICS_FILE, readonly=self.readonly)

    def info(self, metric_names: list[str] | None = None) -> RunInfo:
        """Summary for the run list (raises AtlasError if the run is broken)."""
        status = self.status.effective()
        checkpoints = self.checkpoints()
        latest = self.metrics.latest_all()
        if metric_names is None:
            metric_names = list(latest)[:LISTED_METRICS]
        steps = [c.step for c in checkpoints[-1:]]
        if (metrics_step := self.metrics.max_step()) is not None:
            steps.append(metrics_step)
        return RunInfo(
            id=self.id,
            dir=self.dir,
            created=status.created,
            status=status.state,
            reason=status.reason,
            model=_model_name(self.config),
            dataset=_dataset_name(self.config),
            family=_describe(self.config.get("family")),
            input_shape=_input_shape(self.config),
            latest_step=max(steps, default=None),
            n_checkpoints=len(checkpoints),
            metrics={n: latest[n][1] for n in metric_names if n in latest},
        )

    def _check_writable(self) -> None:
        if self.readonly:
            raise AtlasError(f"Run {self.id} is opened read-only.")


class RunStore:
    """The runs root: creates, opens and lists runs."""

    def __init__(self, root: str | os.PathLike = "runs"):
        self.root = Path(root)

    def create_run(self, config: dict, name_hint: str = "") -> Run:
        """A new run directory with config.json and status "created"."""
        if not isinstance(config, dict):
            raise AtlasError(f"A run config must be a dict, got {type(config).__name__}.")
        try:
            json.dumps(config)
        except (TypeError, ValueError) as e:
            raise AtlasError(
                f"A run config must be JSON-serialisable ({e}); convert it to numbers, strings, lists and dicts."
            ) from e
        self.root.mkdir(parents=True, exist_ok=True)
        slug = _slug(name_hint) or _slug(f"{_model_name(config)}-{_dataset_name(config)}") or "run"
        # The run is written in a hidden folder and renamed into place, so that a reader
        # (the dashboard's run list) never sees a run directory without its config.
        staging = self.root / f".creating-{uuid.uuid4().hex}"
        staging.mkdir()  # as a run directory is made (mkdtemp would make it private to this user)
        try:
            atomic_write_json(staging / CONFIG_FILE, config)
            Run(staging).set_status("created")
            for attempt in range(ID_ATTEMPTS):
                run_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{slug}-{secrets.token_hex(2 + attempt // 10)}"
                path = child_path(self.root, run_id, "run id")
                if path.exists():
                    continue
                try:
                    os.rename(staging, path)  # fails if another run took the id meanwhile
                except OSError:
                    continue
                return Run(path)
        finally:
            shutil.rmtree(staging, ignore_errors=True)  # gone already unless no id was free
        raise AtlasError(f"Could not find a free run id in {self.root}; try again.")

    def run_dir(self, run_id: str) -> Path:
        return child_path(self.root, run_id, "run id")

    def open_run(self, run_id: str, readonly: bool = False) -> Run:
        path = self.run_dir(run_id)
        if not path.is_dir():
            raise AtlasError(f"No run {run_id!r} in {self.root}; pick one from the run list.")
        return Run.from_dir(path, readonly=readonly)

    def list_runs(self, metric_names: list[str] | None = None) -> list[RunInfo]:
        """Every run, newest first; unreadable runs are listed as "broken" with a reason."""
        if not self.root.is_dir():
            return []
        infos = []
        for path in self.root.iterdir():
            if not path.is_dir() or path.name.startswith(".") or not _valid_name(path.name):
                continue
            try:
                infos.append(Run(path, readonly=True).info(metric_names))
            except Exception as e:  # one bad run must not hide the others
                infos.append(
                    RunInfo(
                        id=path.name,
                        dir=path,
                        created=path.stat().st_mtime,
                        status="broken",
                        reason=str(e),
                    )
                )
        return sorted(infos, key=lambda i: (i.created, i.id), reverse=True)


def config_hash(config: dict) -> str:
    """Short stable hash of a config (key order does not matter)."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _model_name(config: dict) -> str:
    return _describe(config.get("model")) or _describe(config.get("family"))


def _dataset_name(config: dict) -> str:
    return _describe(config.get("dataset")) or _describe(config.get("data"))


def _input_shape(config: dict) -> tuple[int, ...] | None:
    model = config.get("model")
    shape = model.get("input_shape") if isinstance(model, dict) else None
    if isinstance(shape, list) and all(isinstance(n, int) and not isinstance(n, bool) for n in shape):
        return tuple(shape)
    return None


def _describe(value: object) -> str:
    """A config entry as a short name: a string, or a dict's name/family/kind/type."""
    if isinstance(value, dict):
        value = next((value[k] for k in ("name", "family", "kind", "type") if k in value), "")
    return value if isinstance(value, str) else ""


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40].strip("-")


def _valid_name(name: str) -> bool:
    try:
        check_name(name)
        return True
    except AtlasError:
        return False
