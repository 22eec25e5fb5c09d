"""Log a training run from any script, so the dashboard follows it live.

The logger writes into the run store (config.json, status.json, metrics.sqlite,
checkpoints/) and needs nothing else from Latent Atlas::

    from engine.store import RunLogger

    config = {"model": "vae", "dataset": "digits", "lr": 1e-3}
    with RunLogger.create("runs", config=config, name="myrun") as log:
        for step in range(1, 1001):
            loss = train_step()                       # float or 1-element tensor
            log.scalar(step, "loss", loss)
            if step % 500 == 0:
                log.checkpoint(step, model.state_dict(), {"epoch": epoch}, keep_last=3)

The with-block marks the run "running", then "finished", or "failed" with the error
text (or "interrupted" on Ctrl-C). Scalars are buffered and written in one transaction
by the first log call a second after the last write (or at `flush_rows` values), and
on close() or leaving the block. To resume from a checkpoint at step s,
`RunLogger.attach(run_dir, resume_from_step=s)` drops the metrics logged after s.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from types import TracebackType

import numpy as np
import torch

from engine.errors import AtlasError
from engine.store.checkpoints import CheckpointInfo
from engine.store.runs import Run, RunStore

HEARTBEAT_S = 30.0


class RunLogger:
    """Buffered writer of one run's metrics, checkpoints and status."""

    def __init__(self, run: Run, writer: str = "", flush_every_s: float = 1.0, flush_rows: int = 500):
        self.run = run
        self.metrics = run.metrics
        self.metrics.writer = writer or f"{socket.gethostname()}:{os.getpid()}"
        self.flush_every_s = flush_every_s
        self.flush_rows = flush_rows
        self._rows: list[tuple[int, str, float | torch.Tensor]] = []
        self._last_flush = time.monotonic()
        self._last_heartbeat = 0.0
        self._running = False

    @classmethod
    def create(cls, runs_root: str | os.PathLike, config: dict, name: str = "", **options) -> RunLogger:
        """A logger on a new run under `runs_root`."""
        return cls(RunStore(runs_root).create_run(config, name_hint=name), **options)

    @classmethod
    def attach(cls, run_dir: str | os.PathLike, resume_from_step: int | None = None, **options) -> RunLogger:
        """A logger on an existing run directory; optionally drop metrics after a step."""
        logger = cls(Run.from_dir(Path(run_dir)), **options)
        if resume_from_step is not None:
            logger.metrics.truncate_after(resume_from_step)
        return logger

    @property
    def dir(self) -> Path:
        return self.run.dir

    @property
    def id(self) -> str:
        return self.run.id

    def scalar(self, step: int, name: str, value: float | torch.Tensor) -> None:
        self.scalars(step, {name: value})

    def scalars(self, step: int, values: dict[str, float | torch.Tensor]) -> None:
        """Buffer values; tensors are read (one GPU sync) only when the buffer is written."""
        for name, value in values.items():
            self._rows.append((step, name, _scalar(name, value)))
        if len(self._rows) >= self.flush_rows or time.monotonic() - self._last_flush >= self.flush_every_s:
            self.flush()

    def image(self, step: int, name: str, image: bytes | np.ndarray) -> None:
        """Store a PNG (bytes or uint8 HxW[xC] array) now."""
        self.metrics.log_image(step, name, image)

    def checkpoint(
        self,
        step: int,
        tensors: dict[str, torch.Tensor],
        meta: dict | None = None,
        keep_last: int | None = None,
    ) -> CheckpointInfo:
        """Flush metrics, then save a checkpoint (see Run.save_checkpoint)."""
        self.flush()
        return self.run.save_checkpoint(step, tensors, meta, keep_last=keep_last)

    def set_status(self, state: str, reason: str = "") -> None:
        self.run.set_status(state, reason)
        self._running = state == "running"
        self._last_heartbeat = time.monotonic()

    def flush(self) -> None:
        """Write buffered scalars in one transaction; refresh the status heartbeat."""
        if self._rows:
            self.metrics.log_rows((s, n, float(v)) for s, n, v in self._rows)
            self._rows = []  # kept if the write failed, to be tried again
        self._last_flush = time.monotonic()
        if self._running and self._last_flush - self._last_heartbeat >= HEARTBEAT_S:
            self.set_status("running")

    def close(self) -> None:
        """Write what is buffered and close the database connection."""
        self.flush()
        self.metrics.close()

    def __enter__(self) -> RunLogger:
        self.set_status("running")
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            self.close()
        finally:
            if error is None:
                self.set_status("finished")
            elif isinstance(error, KeyboardInterrupt):
                self.set_status("interrupted", "stopped by the user (KeyboardInterrupt)")
            else:
                self.set_status("failed", f"{type(error).__name__}: {error}")


def _scalar(name: str, value: object) -> float | torch.Tensor:
    """A float now, or a detached 1-element tensor to read at flush time."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise AtlasError(f"Metric {name!r} must be a single number, got a tensor of shape {tuple(value.shape)}.")
        return value.detach()
    try:
        return float(value)
    except (TypeError, ValueError) as e:
        raise AtlasError(f"Metric {name!r} must be a number, got {type(value).__name__}.") from e
