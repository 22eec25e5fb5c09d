"""Latent maps and encoded latents on disk, so that a map is computed once per setting.

    cache = ProjectionCache.for_runs(runs_root)          # <runs root>/.cache/projections
    points = PointsKey(run_id, step, "shapes", {"size": 32}, "test", 70_000)
    key = MapKey.create(points, group="z", method="umap", params={}, fit_size=None, seed=0)
    projection = cache.get(key) or compute_map(...)      # then cache.put(key, projection)

Each entry is a safetensors file (arrays; never a pickle) and a JSON file beside it (the
full key and the scalar results), both written atomically; the JSON is written last, so
an entry without it is unfinished and reads as a miss. Entries are named by a digest of
their key, which holds every input of the result: run id, checkpoint step, data set name,
options, split and n, latent group, method, parameters (defaults filled in), fit size,
seed and FORMAT_VERSION; a change of any of them is a miss. An entry that cannot be read
or does not match its key is removed and reads as a miss.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np
from safetensors.numpy import load as load_arrays
from safetensors.numpy import save as save_arrays

from engine.projection.encoding import EncodedPoints
from engine.projection.maps import Progress, Projection, compute_map, resolve_settings
from engine.store.atomic import atomic_write_bytes, atomic_write_json

# 2: UMAP fits on more than 10,000 points take 100 epochs and placed points start from the
# weighted mean of their fitted neighbours, so maps cached by version 1 are recomputed
FORMAT_VERSION = 2
CACHE_DIR = Path(".cache") / "projections"
T = TypeVar("T")


@dataclass(frozen=True)
class PointsKey:
    """Which latents: a run's checkpoint applied to the first n examples of a data set split."""

    run_id: str
    step: int
    dataset: str
    options: dict = field(default_factory=dict)
    split: str = "test"
    n: int | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    def digest(self) -> str:
        return _digest({"kind": "latents", "points": self.to_dict()})


@dataclass(frozen=True)
class MapKey:
    """Which map: points, latent group (None: all groups), method and its settings."""

    points: PointsKey
    group: str | None
    method: str
    params: dict
    fit_size: int | None
    seed: int = 0

    @classmethod
    def create(
        cls,
        points: PointsKey,
        group: str | None,
        method: str,
        params: dict | None = None,
        fit_size: int | None = None,
        seed: int = 0,
    ) -> MapKey:
        """A key with the method's defaults filled in, so that {} and the defaults spelled out
        name the same map (and bad settings are refused before anything runs)."""
        params, fit_size = resolve_settings(method, params, fit_size)
        return cls(points, group, method, params, fit_size, int(seed))

    def to_dict(self) -> dict:
        return {
            "points": self.points.to_dict(),
            "group": self.group,
            "method": self.method,
            "params": self.params,
            "fit_size": self.fit_size,
            "seed": self.seed,
        }

    @classmethod
    def from_dict(cls, d: dict) -> MapKey:
        return cls(PointsKey(**d["points"]), d["group"], d["method"], d["params"], d["fit_size"], d["seed"])

    def digest(self) -> str:
        return _digest({"kind": "map", "map": self.to_dict()})


class ProjectionCache:
    """Maps and encoded latents under `root` (created on first write)."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    @classmethod
    def for_runs(cls, runs_root: str | os.PathLike) -> ProjectionCache:
        return cls(Path(runs_root) / CACHE_DIR)

    # -- maps --------------------------------------------------------------------------------
    def get(self, key: MapKey) -> Projection | None:
        """The cached map for `key`, or None (a miss, or an unreadable entry, which is removed)."""

        def build(info: dict, arrays: dict[str, np.ndarray]) -> Projection:
            coords = arrays["coords"]
            if coords.shape != (info["n"], 2) or coords.dtype != np.float32:
                raise ValueError("the coordinates do not match the entry's description")
            return Projection(
                coords=coords,
                method=key.method,
                params=dict(key.params),
                n_fit=int(info["n_fit"]),
                seed=key.seed,
                seconds=float(info["seconds"]),
                explained_variance_ratio=arrays.get("explained_variance_ratio"),
            )

        return self._read("maps", key.digest(), key.to_dict(), build)

    def get_or_compute(self, key: MapKey, points, progress: Progress | None = None) -> Projection:
        """The cached map for `key`, else compute_map(points, ...) stored under `key`."""
        projection = self.get(key)
        if projection is None:
            projection = compute_map(points, key.method, key.params, key.fit_size, key.seed, progress)
            self.put(key, projection)
        return projection

    def put(self, key: MapKey, projection: Projection) -> None:
        arrays = {"coords": np.ascontiguousarray(projection.coords, dtype=np.float32)}
        if projection.explained_variance_ratio is not None:
            arrays["explained_variance_ratio"] = np.asarray(projection.explained_variance_ratio, dtype=np.float64)
        info = {"n": projection.n, "n_fit": projection.n_fit, "seconds": projection.seconds}
        self._write("maps", key.digest(), key.to_dict(), arrays, info)

    # -- latents -----------------------------------------------------------------------------
    def get_latents(self, key: PointsKey) -> EncodedPoints | None:
        """The cached encoding for `key`, or None (a miss, or an unreadable entry, which is removed)."""

        def build(info: dict, arrays: dict[str, np.ndarray]) -> EncodedPoints:
            means = {name: arrays[f"means.{name}"] for name in info["groups"]}
            errors = arrays.get("recon_error")
            if any(m.ndim != 2 or len(m) != info["n"] for m in means.values()) or (
                errors is not None and errors.shape != (info["n"],)
            ):
                raise ValueError("the arrays do not match the entry's description")
            return EncodedPoints(means=means, recon_error=errors)

        return self._read("latents", key.digest(), key.to_dict(), build)

    def put_latents(self, key: PointsKey, encoded: EncodedPoints) -> None:
        arrays = {f"means.{name}": np.ascontiguousarray(m, dtype=np.float32) for name, m in encoded.means.items()}
        if encoded.recon_error is not None:
            arrays["recon_error"] = np.ascontiguousarray(encoded.recon_error, dtype=np.float32)
        self._write("latents", key.digest(), key.to_dict(), arrays, {"n": encoded.n, "groups": list(encoded.means)})

    # -- files -------------------------------------------------------------------------------
    def paths(self, kind: str, digest: str) -> tuple[Path, Path]:
        """(arrays file, description file) of an entry."""
        folder = self.root / kind
        return folder / f"{digest}.safetensors", folder / f"{digest}.json"

    def _write(self, kind: str, digest: str, key: dict, arrays: dict[str, np.ndarray], info: dict) -> None:
        tensors_path, json_path = self.paths(kind, digest)
        tensors_path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(tensors_path, save_arrays(arrays))
        atomic_write_json(json_path, {"format": FORMAT_VERSION, "key": key, **info})

    def _read(self, kind: str, digest: str, key: dict, build: Callable[[dict, dict[str, np.ndarray]], T]) -> T | None:
        """build(description, arrays) of the entry, or None when it is missing; an entry that
        cannot be read, was written for another key or format, or that `build` refuses
        (KeyError, ValueError, ...) is removed and reads as missing."""
        tensors_path, json_path = self.paths(kind, digest)
        if not json_path.exists():
            return None
        try:
            info = json.loads(json_path.read_text())
            if info.get("format") != FORMAT_VERSION or info.get("key") != json.loads(json.dumps(key)):
                raise ValueError("the entry was written for another key or format")
            return build(info, load_arrays(tensors_path.read_bytes()))
        except Exception:  # any unreadable entry (truncated, garbled, missing half) is a miss
            self._remove(kind, digest)
            return None

    def _remove(self, kind: str, digest: str) -> None:
        for path in self.paths(kind, digest):
            try:
                path.unlink(missing_ok=True)
            except OSError:
                pass  # a read-only cache: the entry stays unreadable and keeps reading as a miss


def _digest(obj: dict) -> str:
    text = json.dumps({"format": FORMAT_VERSION, **obj}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:32]
