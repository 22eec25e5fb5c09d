"""Finding runs for the dashboard: the demo runs shipped in assets/ and the runs root."""

from __future__ import annotations

import os
from pathlib import Path

from engine.store import RunInfo, RunStore

REPO_ROOT = Path(__file__).resolve().parent.parent
DEMO_ROOT = REPO_ROOT / "assets" / "runs"


def runs_root() -> Path:
    return Path(os.environ.get("LATENT_ATLAS_RUNS_DIR", "runs"))


def all_runs() -> list[RunInfo]:
    """Demo runs first, then the runs root, newest first."""
    return RunStore(DEMO_ROOT).list_runs() + RunStore(runs_root()).list_runs()
