"""Small helpers the benchmark scripts share (run them from the repository root)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def loadavg() -> list[float] | None:
    """The 1, 5 and 15 minute load averages, recorded beside timings from a shared machine."""
    with contextlib.suppress(OSError):
        return [round(v, 2) for v in os.getloadavg()]
    return None


def cpu_name() -> str:
    """The processor's model name from /proc/cpuinfo ("unknown" elsewhere)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "unknown"


def display_path(path: Path) -> str:
    """A path relative to the repository when it lies inside it (no machine paths in results)."""
    try:
        return str(path.resolve().relative_to(REPO))
    except ValueError:
        return path.name
