"""The run store: run directories, safetensors checkpoints, SQLite metrics, a logger.

This package is the one place in the engine that writes to disk.

Layer 4 of the engine (beside training, which imports it and which it never imports):
imports the layers below; never projection, loading, importing or the CLI.
"""

from engine.store.atomic import atomic_write_bytes, atomic_write_json
from engine.store.checkpoints import CheckpointInfo, read_checkpoint, read_checkpoint_meta
from engine.store.logger import RunLogger
from engine.store.metrics import MetricsDB
from engine.store.runs import Run, RunInfo, RunStatus, RunStore

__all__ = [
    "CheckpointInfo",
    "MetricsDB",
    "Run",
    "RunInfo",
    "RunLogger",
    "RunStatus",
    "RunStore",
    "atomic_write_bytes",
    "atomic_write_json",
    "read_checkpoint",
    "read_checkpoint_meta",
]
