"""Maps computed in a separate process, for a page to start and poll.

    job = start_map_job(cache, key, points)   # returns at once; the map lands in the cache
    map_job_status(cache, key)                # {"state": "running", "stage": "fitting", "fraction": 0.3, ...}

A process, not a thread: numba's compiled loops hold the GIL, so a thread would stall the
web server. The child (`python -m engine.projection job ...`) reads the points from
<cache>/jobs/<digest>.input.safetensors, writes its progress to <digest>.status.json and
the map into the cache. One job per key: <digest>.lock is created exclusively and holds
the child's pid, so a second start while it runs returns the same job. A Python error in
the child is written to the status; a child that dies without a word (killed, out of
memory) is found dead by its pid and reported as an error with the end of its log.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from safetensors.numpy import load as load_arrays
from safetensors.numpy import save as save_arrays

from engine.errors import AtlasError
from engine.processes import pid_alive, start_module
from engine.projection.cache import MapKey, ProjectionCache
from engine.projection.maps import check_points, compute_map
from engine.store.atomic import atomic_write_bytes, atomic_write_json
from engine.threads import ENV_THREADS

STARTING_GRACE_S = 60.0  # a lock that has no pid yet is a job still being started, for this long
STATUS_EVERY_S = 0.5  # the child rewrites its status at most this often (and on every new stage)


def job_paths(cache: ProjectionCache, digest: str) -> dict[str, Path]:
    folder = cache.root / "jobs"
    parts = ("lock", "status.json", "input.safetensors", "input.json", "log")
    return {part: folder / f"{digest}.{part}" for part in parts}


def start_map_job(cache: ProjectionCache, key: MapKey, points, threads: int | None = None) -> str:
    """Compute the map for `key` from `points` (N, d) in a background process; returns the job
    id (the key's digest) at once. Nothing is started when the map is already cached or a
    job for the same key is running. threads: OMP/NUMBA thread count for the child."""
    points = check_points(points, key.method)
    digest = key.digest()
    if cache.get(key) is not None:
        return digest
    paths = job_paths(cache, digest)
    paths["lock"].parent.mkdir(parents=True, exist_ok=True)
    if not _take_lock(paths["lock"], digest):
        return digest  # a live job for this key holds the lock
    try:
        atomic_write_bytes(paths["input.safetensors"], save_arrays({"points": points}))
        atomic_write_json(paths["input.json"], {"key": key.to_dict()})
        now = time.time()
        atomic_write_json(
            paths["status.json"],
            {"state": "running", "stage": "starting", "fraction": 0.0, "started": now, "updated": now, "error": None},
        )
        env = {}
        if threads:
            env[ENV_THREADS] = str(threads)  # else the job chooses its own (engine.threads)
        args = ["job", "--cache", str(cache.root.resolve()), "--job", digest]
        process = start_module("engine.projection", args, paths["log"], env=env)
        paths["lock"].write_text(str(process.pid))
    except BaseException:
        paths["lock"].unlink(missing_ok=True)
        raise
    return digest


def map_job_status(cache: ProjectionCache, key: MapKey | str) -> dict | None:
    """The job's status: {"state": "running" | "done" | "error", "stage", "fraction" in [0, 1],
    "started", "updated" (Unix times), "error": message or None}; None if no job was started."""
    digest = key.digest() if isinstance(key, MapKey) else key
    paths = job_paths(cache, digest)
    status = _read_json(paths["status.json"])
    if status is None or status.get("state") != "running":
        return status
    if paths["lock"].exists() and _lock_alive(paths["lock"], digest):
        return status
    status = _read_json(paths["status.json"]) or status  # it may have finished just now
    if status.get("state") == "running":
        tail = paths["log"].read_text(errors="replace")[-1500:].strip() if paths["log"].exists() else ""
        status.update(
            state="error",
            updated=time.time(),
            error="the map process stopped without finishing (killed, or out of memory?); "
            "start it again" + (f". Its last output:\n{tail}" if tail else ""),
        )
        atomic_write_json(paths["status.json"], status)
        paths["lock"].unlink(missing_ok=True)
    return status


def run_job(cache_root: str | os.PathLike, digest: str) -> int:
    """The child's side: compute the map, store it, report; exit status 0 or 1."""
    cache = ProjectionCache(cache_root)
    paths = job_paths(cache, digest)
    status = _read_json(paths["status.json"]) or {"started": time.time()}
    last = {"stage": None, "time": 0.0}

    def write(**fields) -> None:
        status.update(fields, updated=time.time())
        atomic_write_json(paths["status.json"], status)

    def progress(stage: str, fraction: float) -> None:
        now = time.time()
        if stage != last["stage"] or now - last["time"] >= STATUS_EVERY_S:
            last.update(stage=stage, time=now)
            write(stage=stage, fraction=round(float(fraction), 4))

    try:
        job = _read_json(paths["input.json"])
        if job is None:
            raise AtlasError(f"the job's input is missing from {paths['input.json'].parent}; start the job again")
        key = MapKey.from_dict(job["key"])
        points = load_arrays(paths["input.safetensors"].read_bytes())["points"]
        write(state="running", stage="loading", fraction=0.0, pid=os.getpid())
        projection = compute_map(points, key.method, key.params, key.fit_size, key.seed, progress)
        cache.put(key, projection)
        write(state="done", stage="done", fraction=1.0, seconds=projection.seconds, error=None)
        return 0
    except Exception as err:
        message = str(err) if isinstance(err, AtlasError) else f"{type(err).__name__}: {err}"
        write(state="error", error=message)
        return 1
    finally:
        for part in ("input.safetensors", "input.json", "lock"):
            paths[part].unlink(missing_ok=True)


def _take_lock(lock: Path, digest: str) -> bool:
    """Create the lock exclusively; a stale one (its process gone) is replaced once."""
    for _ in range(2):
        try:
            os.close(os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
            return True
        except FileExistsError:
            if _lock_alive(lock, digest):
                return False
            lock.unlink(missing_ok=True)
    return False


def _lock_alive(lock: Path, digest: str) -> bool:
    try:
        text = lock.read_text().strip()
        age = time.time() - lock.stat().st_mtime
    except OSError:
        return False
    if not text.isdigit():
        return age < STARTING_GRACE_S  # the starter has not written the child's pid yet
    return pid_alive(int(text), command_contains=digest)  # a reused pid runs something else


def _read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
