"""Metrics under concurrency: writer and reader processes share one SQLite file.

Each process is a fresh `python -c` (nothing inherited). They wait at a start line
(a "go" file) after their imports, so that the writes really overlap.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from engine.store import MetricsDB

REPO = Path(__file__).resolve().parents[1]

START_LINE = """
import json, os, sys, time
from engine.store import MetricsDB
def wait_for_go(work, me):
    open(os.path.join(work, "ready-" + me), "w").close()
    while not os.path.exists(os.path.join(work, "go")):
        time.sleep(0.001)
"""

WRITER = (
    START_LINE
    + """
work, prefix, n_steps, per_step = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
db = MetricsDB(os.path.join(work, "metrics.sqlite"), writer=prefix)
wait_for_go(work, prefix)
start = time.time()
for step in range(n_steps):  # one small transaction per step
    db.log_scalars(step, {f"{prefix}{k}": step * 10.0 + k for k in range(per_step)})
json.dump([start, time.time()], open(os.path.join(work, "times-" + prefix), "w"))
"""
)

READER = (
    START_LINE
    + """
work = sys.argv[1]
db = MetricsDB(os.path.join(work, "metrics.sqlite"), readonly=True)
wait_for_go(work, "reader")
polls = partial = torn = shrunk = 0
errors, last_rows, final = [], 0, False
while not final:
    final = os.path.exists(os.path.join(work, "stop"))  # one more poll after the writers
    try:
        series = db.scalars()
    except Exception as e:
        errors.append(repr(e))
        continue
    polls += 1
    rows = sum(len(steps) for steps, _ in series.values())
    shrunk += rows < last_rows
    last_rows = rows
    counts = {}  # writer prefix -> set of row counts of its names: one if no torn step
    for name, (steps, _) in series.items():
        counts.setdefault(name[0], set()).add(len(steps))
    torn += any(len(c) > 1 for c in counts.values())
    partial += 0 < rows
    time.sleep(0.002)
json.dump({"polls": polls, "partial": partial, "torn": torn, "shrunk": shrunk,
           "errors": errors, "rows": last_rows}, open(os.path.join(work, "reader.json"), "w"))
"""
)


def spawn(code: str, *args: object) -> subprocess.Popen:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    return subprocess.Popen([sys.executable, "-c", code, *map(str, args)], env=env, cwd=REPO)


def run_writers_with_reader(work: Path, writers: list[tuple[str, int, int]]) -> dict:
    """Run writer processes (prefix, steps, names per step) while a reader polls."""
    procs = [spawn(READER, work)] + [spawn(WRITER, work, *w) for w in writers]
    expected = {"ready-reader"} | {f"ready-{prefix}" for prefix, _, _ in writers}
    deadline = time.monotonic() + 60
    while not expected <= {p.name for p in work.iterdir()}:
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs)
        time.sleep(0.01)
    (work / "go").touch()
    for proc in procs[1:]:
        assert proc.wait(timeout=60) == 0
    (work / "stop").touch()
    assert procs[0].wait(timeout=60) == 0
    return json.loads((work / "reader.json").read_text())


def assert_complete(db: MetricsDB, prefix: str, n_steps: int, per_step: int) -> None:
    series = db.scalars([f"{prefix}{k}" for k in range(per_step)])
    assert len(series) == per_step
    for k, (steps, values) in enumerate(series.values()):
        assert steps.tolist() == list(range(n_steps))  # every step exactly once
        np.testing.assert_array_equal(values, np.arange(n_steps) * 10.0 + k)


def test_writer_and_reader_processes(tmp_path):
    report = run_writers_with_reader(tmp_path, [("a", 1000, 5)])
    assert report["errors"] == [] and report["torn"] == 0 and report["shrunk"] == 0
    assert report["partial"] >= 1 and report["rows"] == 5000
    assert_complete(MetricsDB(tmp_path / "metrics.sqlite", readonly=True), "a", 1000, 5)


def test_two_writers_lose_nothing(tmp_path):
    report = run_writers_with_reader(tmp_path, [("a", 1000, 4), ("b", 1000, 4)])
    assert report["errors"] == [] and report["torn"] == 0 and report["shrunk"] == 0
    db = MetricsDB(tmp_path / "metrics.sqlite", readonly=True)
    assert_complete(db, "a", 1000, 4)
    assert_complete(db, "b", 1000, 4)
    assert db._read("SELECT DISTINCT writer FROM scalars ORDER BY writer") == [("a",), ("b",)]
    (a_start, a_end), (b_start, b_end) = (json.loads((tmp_path / f"times-{p}").read_text()) for p in "ab")
    assert a_start < b_end and b_start < a_end, "the two writers did not overlap"


def test_a_writer_waits_for_the_wal_switch_while_another_holds_a_write_lock(tmp_path):
    """SQLite answers "database is locked" at once, without waiting out the busy timeout,
    to a connection that switches a file to WAL while another holds a write transaction
    (two writers starting together hit this). The writer retries until the lock goes."""
    path = tmp_path / "metrics.sqlite"
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("CREATE TABLE t (x)")
    other.execute("BEGIN IMMEDIATE")
    other.execute("INSERT INTO t VALUES (1)")
    release = threading.Timer(0.3, lambda: other.execute("COMMIT"))
    release.start()
    started = time.monotonic()
    MetricsDB(path, writer="late").log_scalars(0, {"x": 1.0})
    release.join()
    assert time.monotonic() - started >= 0.25  # it waited for the other transaction
    assert MetricsDB(path, readonly=True).latest("x") == (0, 1.0)
