"""UMAP's numba compilation, paid once per machine instead of once per process.

umap-learn and pynndescent compile their numba functions the first time they run
(18-48 s on a 2-core VM, spec anchors D2). numba can keep compiled code on disk, but
only for functions declared with `cache=True`: pynndescent declares most of its own,
umap-learn one (`umap.layouts.rdist`), so the layout optimisation, the fuzzy
simplicial set and the transform helpers were compiled again in every process. After
importing both packages, `import_umap` turns caching on for every numba function they
define at module level (`Dispatcher.enable_caching`, what `cache=True` does), with the
cache in one directory per machine and package versions.

Two functions stay uncacheable: pynndescent's `nn_descent` and `nn_descent_internal`
("uses dynamic globals"), about 20 s of compilation in every process that runs
NN-descent. `engine.projection.maps` therefore finds neighbours itself (exact, with
torch) and never calls NN-descent.

NUMBA_CACHE_DIR is read when numba is imported, so `import_umap` sets it (unless the
user has) before the first import, and sets numba's config directly when numba is
already loaded.
"""

from __future__ import annotations

import os
import sys
from importlib import metadata
from pathlib import Path

NUMBA_CACHE_ENV = "LATENT_ATLAS_NUMBA_CACHE"
_PACKAGES = ("umap", "pynndescent")
_cached: set[int] = set()  # ids of the dispatchers whose caching this process turned on


def numba_cache_dir() -> Path:
    """$LATENT_ATLAS_NUMBA_CACHE, else ~/.cache/latent-atlas/numba (XDG_CACHE_HOME honoured),
    one subfolder per numba/umap-learn/pynndescent versions (a stale cache is never read)."""
    root = os.environ.get(NUMBA_CACHE_ENV)
    if root:
        base = Path(root)
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "latent-atlas" / "numba"
    versions = "-".join(f"{name}{_version(name)}" for name in ("numba", "umap-learn", "pynndescent"))
    return base / versions


def import_umap():
    """Import umap-learn with its numba functions cached on disk; returns the `umap` module."""
    if "numba" not in sys.modules and "NUMBA_CACHE_DIR" not in os.environ:
        os.environ["NUMBA_CACHE_DIR"] = str(numba_cache_dir())
    import numba.core.config

    if not numba.core.config.CACHE_DIR:
        numba.core.config.CACHE_DIR = str(numba_cache_dir())
    Path(numba.core.config.CACHE_DIR).mkdir(parents=True, exist_ok=True)
    import umap

    enable_caching()
    return umap


def enable_caching() -> int:
    """Turn on disk caching for every module-level numba function of umap and pynndescent
    that does not have it; returns how many were turned on by this call."""
    from numba.core.caching import NullCache
    from numba.core.dispatcher import Dispatcher

    turned_on = 0
    for name, module in list(sys.modules.items()):
        if module is None or name.split(".")[0] not in _PACKAGES:
            continue
        for obj in list(vars(module).values()):
            if isinstance(obj, Dispatcher) and id(obj) not in _cached and isinstance(obj._cache, NullCache):
                obj.enable_caching()
                _cached.add(id(obj))
                turned_on += 1
    return turned_on


def cached_functions() -> dict[str, list[str]]:
    """The module-level numba functions of umap and pynndescent by whether they declare
    `cache=True` themselves ("declared") or had it turned on here ("turned_on")."""
    from numba.core.dispatcher import Dispatcher

    out: dict[str, list[str]] = {"declared": [], "turned_on": []}
    for name, module in sorted(sys.modules.items()):
        if module is None or name.split(".")[0] not in _PACKAGES:
            continue
        for attr, obj in sorted(vars(module).items()):
            if isinstance(obj, Dispatcher) and obj.py_func.__module__ == name:
                out["turned_on" if id(obj) in _cached else "declared"].append(f"{name}.{attr}")
    return out


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "none"
