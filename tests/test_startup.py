"""What the dashboard's first page costs to load: the state module every page imports must not
pull in the heavy libraries only some pages need (each takes a second or more to import on a
small machine, and the first page of a new server waits for them)."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("sklearn", "umap", "pynndescent", "numba", "openTSNE", "playwright")


def test_the_pages_shared_state_loads_without_the_heavy_libraries():
    probe = f"import sys\nimport app.state\nprint(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"
