"""Scalar and image metrics of a run in SQLite, written by training, read live by the app.

The database is in WAL mode, so one or more writers (a training process, several
ranks) and any number of readers work at the same time. Each read opens its own
short-lived read-only connection, which never creates or changes the file. Writes go
through one connection per thread (and process), kept open until close().

A value is keyed by (name, step): logging the same name and step again replaces the
old value, so a run resumed from a checkpoint has no duplicate points. Call
`truncate_after(step)` on resume to drop what was logged after that checkpoint.
NaN values are kept (SQLite stores them as NULL; they read back as NaN).

Example::

    db = MetricsDB("runs/my-run/metrics.sqlite")
    db.log_scalars(100, {"loss": 0.5, "kl": 2.1})
    steps, values = db.scalars(["loss"])["loss"]
"""

from __future__ import annotations

import io
import math
import operator
import os
import random
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from engine.errors import AtlasError

BUSY_TIMEOUT_S = 10.0
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

SCHEMA = """
CREATE TABLE IF NOT EXISTS scalars (
    name TEXT NOT NULL, step INTEGER NOT NULL, value REAL, wall REAL, writer TEXT,
    PRIMARY KEY (name, step)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS scalars_step ON scalars (step);
CREATE TABLE IF NOT EXISTS images (
    name TEXT NOT NULL, step INTEGER NOT NULL, png BLOB NOT NULL, wall REAL,
    PRIMARY KEY (name, step)
);
"""

Series = tuple[np.ndarray, np.ndarray]  # (steps int64, values float64), sorted by step


class MetricsDB:
    """Metrics of one run. `readonly=True` refuses writes (for the dashboard)."""

    def __init__(self, path: str | Path, readonly: bool = False, writer: str = ""):
        self.path = Path(path)
        self.readonly = readonly
        self.writer = writer
        self._local = threading.local()  # the write connection of each thread

    # -- writing ---------------------------------------------------------------

    def log_scalars(self, step: int, values: Mapping[str, float], wall: float | None = None) -> None:
        """Log several scalars at one step in one transaction."""
        self.log_rows(((step, name, value) for name, value in values.items()), wall)

    def log_rows(self, rows: Iterable[tuple[int, str, float]], wall: float | None = None) -> None:
        """Log (step, name, value) rows, possibly of many steps, in one transaction."""
        wall = time.time() if wall is None else float(wall)
        params = [(_name(n), _step(s), _value(n, v), wall, self.writer) for s, n, v in rows]
        if not params:
            return
        with self._write() as con:
            con.executemany(
                "INSERT OR REPLACE INTO scalars (name, step, value, wall, writer) VALUES (?, ?, ?, ?, ?)",
                params,
            )

    def log_image(self, step: int, name: str, image: bytes | np.ndarray, wall: float | None = None) -> None:
        """Store a PNG (bytes, or a uint8 array HxW, HxWx1, HxWx3 or HxWx4 to encode)."""
        png = to_png(image)
        wall = time.time() if wall is None else float(wall)
        with self._write() as con:
            con.execute(
                "INSERT OR REPLACE INTO images (name, step, png, wall) VALUES (?, ?, ?, ?)",
                (_name(name), _step(step), png, wall),
            )

    def truncate_after(self, step: int) -> None:
        """Delete scalars and images with step > `step` (on resume from that checkpoint)."""
        if not self.path.exists():
            return
        with self._write() as con:
            con.execute("DELETE FROM scalars WHERE step > ?", (_step(step),))
            con.execute("DELETE FROM images WHERE step > ?", (_step(step),))

    def seal(self) -> None:
        """Fold the WAL into the main file and switch to a rollback journal.

        For runs shipped read-only (demo assets): such a file opens read-only without
        creating -wal/-shm side files. The next write switches back to WAL.
        """
        if self.path.exists():
            con = self._writer()
            con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            con.execute("PRAGMA journal_mode=DELETE")
            self.close()

    # -- reading -----------------------------------------------------------------

    def scalar_names(self) -> list[str]:
        rows = self._read("SELECT DISTINCT name FROM scalars ORDER BY name")
        return [name for (name,) in rows]

    def scalars(self, names: Iterable[str] | None = None, since_step: int | None = None) -> dict[str, Series]:
        """{name: (steps, values)} sorted by step; `since_step` keeps steps > since_step."""
        query, params = "SELECT name, step, value FROM scalars", []
        clauses = []
        if names is not None:
            names = list(names)
            if not names:
                return {}
            clauses.append(f"name IN ({','.join('?' * len(names))})")
            params += names
        if since_step is not None:
            clauses.append("step > ?")
            params.append(int(since_step))
        if clauses:
            query += " WHERE " + " AND ".join(clauses)
        rows = self._read(query + " ORDER BY name, step", params)
        return _series_by_name(rows)

    def latest(self, name: str) -> tuple[int, float] | None:
        """(step, value) of the highest step logged for `name`, or None."""
        rows = self._read("SELECT step, value FROM scalars WHERE name = ? ORDER BY step DESC LIMIT 1", [name])
        return (rows[0][0], _float(rows[0][1])) if rows else None

    def logged_between(self, name: str, start: float, end: float) -> list[tuple[int, float]]:
        """(step, value) of `name` logged between wall-clock times start and end (seconds
        since the epoch), e.g. a run's throughput while something else was going on."""
        rows = self._read(
            "SELECT step, value FROM scalars WHERE name = ? AND wall >= ? AND wall < ? ORDER BY step",
            [name, float(start), float(end)],
        )
        return [(step, _float(value)) for step, value in rows]

    def latest_all(self) -> dict[str, tuple[int, float]]:
        """{name: (step, value)} of the highest step of every scalar."""
        rows = self._read("SELECT name, MAX(step), value FROM scalars GROUP BY name ORDER BY name")
        return {name: (step, _float(value)) for name, step, value in rows}

    def max_step(self) -> int | None:
        """Highest step of any scalar or image, or None if nothing was logged."""
        rows = self._read(
            "SELECT MAX(s) FROM (SELECT MAX(step) AS s FROM scalars UNION ALL SELECT MAX(step) FROM images)"
        )
        return rows[0][0] if rows else None

    def image_names(self) -> list[str]:
        return [name for (name,) in self._read("SELECT DISTINCT name FROM images ORDER BY name")]

    def images(self, name: str, since_step: int | None = None) -> list[tuple[int, bytes]]:
        """[(step, png bytes)] of image `name`, sorted by step; optionally steps > since_step."""
        query, params = "SELECT step, png FROM images WHERE name = ?", [name]
        if since_step is not None:
            query, params = query + " AND step > ?", params + [int(since_step)]
        return [(step, bytes(png)) for step, png in self._read(query + " ORDER BY step", params)]

    def close(self) -> None:
        """Close this thread's write connection (reads need no closing)."""
        con = getattr(self._local, "con", None)
        if con is not None and self._local.pid == os.getpid():
            con.close()
        self._local.con = None

    def __enter__(self) -> MetricsDB:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- connections -------------------------------------------------------------

    def _open(self, readonly: bool, immutable: bool = False) -> sqlite3.Connection:
        if readonly:
            uri = f"{self.path.resolve().as_uri()}?mode=ro" + ("&immutable=1" if immutable else "")
            con = sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        else:
            con = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        con.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
        return con

    def _writer(self) -> sqlite3.Connection:
        """This thread's write connection, opened (and the schema made) on first use."""
        if self.readonly:
            raise AtlasError(f"{self.path} is opened read-only; metrics cannot be written.")
        con = getattr(self._local, "con", None)
        if con is not None and self._local.pid == os.getpid():
            return con
        self.path.parent.mkdir(parents=True, exist_ok=True)
        con = self._open(readonly=False)
        try:
            _enable_wal(con)
            con.execute("PRAGMA synchronous=NORMAL")
            con.execute("BEGIN IMMEDIATE")
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    con.execute(statement)
            con.execute("COMMIT")
        except BaseException as e:
            con.close()
            if isinstance(e, sqlite3.DatabaseError) and not isinstance(e, sqlite3.OperationalError):
                raise AtlasError(
                    f"Metrics database {self.path} is unusable ({e}); delete it to start the metrics afresh."
                ) from e
            raise
        self._local.con, self._local.pid = con, os.getpid()
        return con

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """The write connection inside BEGIN IMMEDIATE ... COMMIT (rolled back on error)."""
        con = self._writer()
        con.execute("BEGIN IMMEDIATE")
        try:
            yield con
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise

    def _read(self, query: str, params: Iterable = ()) -> list[tuple]:
        """Rows of a read-only query; [] while the file or its tables do not exist yet."""
        if not self.path.exists():
            return []
        try:
            return self._query(query, list(params))
        except sqlite3.OperationalError as e:
            if "no such table" in str(e):
                return []
            if not self._in_readonly_directory(e):
                raise
            return self._query(query, list(params), immutable=True)
        except sqlite3.DatabaseError as e:
            raise AtlasError(
                f"Metrics database {self.path} is unreadable ({e}); delete it to start the metrics afresh."
            ) from e

    def _query(self, query: str, params: list, immutable: bool = False) -> list[tuple]:
        con = self._open(readonly=True, immutable=immutable)
        try:
            return con.execute(query, params).fetchall()
        finally:
            con.close()

    def _in_readonly_directory(self, error: sqlite3.OperationalError) -> bool:
        """A WAL file in a directory we cannot write to (and no writer: no -wal file)."""
        name = getattr(error, "sqlite_errorname", "")
        wal = self.path.with_name(self.path.name + "-wal")
        return name in ("SQLITE_READONLY_DIRECTORY", "SQLITE_CANTOPEN") and not wal.exists()


def to_png(image: bytes | np.ndarray) -> bytes:
    """PNG bytes from PNG bytes (checked) or a uint8 image array."""
    if isinstance(image, (bytes, bytearray, memoryview)):
        image = bytes(image)
        if not image.startswith(PNG_SIGNATURE):
            raise AtlasError("Image bytes are not a PNG file; pass PNG bytes or a uint8 array.")
        return image
    from PIL import Image

    array = np.asarray(image)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.dtype != np.uint8 or array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
        raise AtlasError(
            "An image must be PNG bytes or a uint8 array of shape (H, W), (H, W, 1), "
            f"(H, W, 3) or (H, W, 4); got dtype {array.dtype} and shape {array.shape}."
        )
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array)).save(buffer, format="PNG")
    return buffer.getvalue()


def _series_by_name(rows: list[tuple]) -> dict[str, Series]:
    out: dict[str, Series] = {}
    if not rows:
        return out
    names = [r[0] for r in rows]
    steps = np.fromiter((r[1] for r in rows), dtype=np.int64, count=len(rows))
    values = np.fromiter((_float(r[2]) for r in rows), dtype=np.float64, count=len(rows))
    start = 0
    for i in range(1, len(rows) + 1):
        if i == len(rows) or names[i] != names[start]:
            out[names[start]] = (steps[start:i], values[start:i])
            start = i
    return out


def _float(value: float | None) -> float:
    return math.nan if value is None else float(value)


def _name(name: object) -> str:
    if not isinstance(name, str) or not name:
        raise AtlasError(f"A metric name must be a non-empty string, got {name!r}.")
    return name


def _step(step: object) -> int:
    try:
        return operator.index(step)  # ints, numpy integers, 0-d integer tensors
    except TypeError as e:
        raise AtlasError(f"A metric step must be an integer, got {step!r}.") from e


def _value(name: str, value: object) -> float:
    try:
        return float(value)  # accepts numpy scalars and 1-element tensors
    except (TypeError, ValueError, RuntimeError) as e:
        raise AtlasError(f"Metric {name!r} must be a number, got {type(value).__name__}.") from e


def _enable_wal(con: sqlite3.Connection) -> None:
    """Switch to WAL mode. The switch needs the database to itself and SQLite answers
    "database is locked" at once, without waiting out the busy timeout, when another
    process is opening it at the same moment (two writers starting together), so retry."""
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    while True:
        try:
            con.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or time.monotonic() > deadline:
                raise
            time.sleep(0.005 + 0.02 * random.random())
