"""Finding runs for the dashboard: the demo runs shipped in assets/ and the runs root."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from engine.store import RunInfo, RunStore

REPO_ROOT = Path(__file__).resolve().parent.parent
DEMO_ROOT = REPO_ROOT / "assets" / "runs"


@dataclass(frozen=True)
class RunChoice:
    """A run as the sidebar offers it: where it lives and how to label it."""

    key: str  # "demo/<id>" or "runs/<id>": unique across both roots
    label: str
    info: RunInfo

    @property
    def dir(self) -> Path:
        return self.info.dir


def runs_root() -> Path:
    return Path(os.environ.get("LATENT_ATLAS_RUNS_DIR", "runs"))


def available_runs() -> list[RunChoice]:
    """Demo runs first, then the runs root, newest first within each."""
    choices = []
    for prefix, root in (("demo", DEMO_ROOT), ("runs", runs_root())):
        for info in RunStore(root).list_runs():
            label = f"{prefix} · {run_slug(info.id)} · {info.id[-4:]}"
            if info.status == "broken":
                label += " (broken)"
            choices.append(RunChoice(key=f"{prefix}/{info.id}", label=label, info=info))
    return choices


def run_slug(run_id: str) -> str:
    """The readable middle of an id like 20261121-101500-digits-vae-3fa2."""
    parts = run_id.split("-")
    return "-".join(parts[2:-1]) if len(parts) > 3 else run_id
