"""How soon the Latent map page has a map of 70,000 points: PCA at once, and UMAP through
engine.projection from a cold process (first time on a machine and again) against a
plain `umap.UMAP().fit_transform` in a cold process. Writes benchmarks/results/latent_map.json.

    .venv/bin/python benchmarks/latent_map.py            # about 6-8 minutes on 2 cores
    .venv/bin/python benchmarks/latent_map.py --quick    # 5,000 points, a smoke test

Latents: the shapes-vae demo's posterior means (10 dimensions) of `shapes` images.
Each UMAP side runs in a fresh subprocess with the same OMP_NUM_THREADS/NUMBA_NUM_THREADS:
- ours, first time: empty numba cache, empty projection cache (`ProjectionCache.get_or_compute`);
- ours, second time: the numba cache from the first run, another seed (a projection-cache miss);
- plain, first time: `umap.UMAP().fit_transform(latents)` with an empty NUMBA_CACHE_DIR;
- plain, second time: the same again with that cache dir (pynndescent's own cache=True functions warm).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.common import cpu_name, display_path, loadavg  # noqa: E402

DEMO = ROOT / "assets" / "runs" / "20261121-112815-shapes-vae-051a"
THREADS = "2"


def encode(n: int) -> tuple[np.ndarray, np.ndarray, dict]:
    import torch

    from engine.data import load_dataset
    from engine.loading import load_run_model
    from engine.projection import encode_dataset
    from engine.store import Run

    torch.set_num_threads(int(THREADS))
    loaded = load_run_model(Run.from_dir(DEMO, readonly=True))
    data = load_dataset("shapes", split="all", seed=loaded.spec.train.seed, n=n, size=32)
    start = time.perf_counter()
    encoded = encode_dataset(loaded.model, data, batch_size=500)
    info = {
        "run": DEMO.name,
        "dataset": "shapes",
        "options": {"n": n, "size": 32},
        "split": "all",
        "group": "z",
        "dims": int(encoded.means["z"].shape[1]),
        "encode_seconds": round(time.perf_counter() - start, 2),
    }
    return encoded.means["z"], encoded.recon_error, info


def pca_first_map(latents: np.ndarray, errors: np.ndarray, repeats: int = 5) -> dict:
    """compute_map(PCA) + the Plotly WebGL figure a page builds + its JSON, timed end to end."""
    from engine.projection import compute_map

    def once() -> tuple[float, float, int]:
        start = time.perf_counter()
        projection = compute_map(latents, "pca")
        import plotly.graph_objects as go

        mid = time.perf_counter()
        fig = go.Figure(
            go.Scattergl(
                x=projection.coords[:, 0],
                y=projection.coords[:, 1],
                mode="markers",
                customdata=np.arange(len(latents)),
                marker=dict(size=3, color=errors, colorscale="Viridis", showscale=True),
            )
        )
        fig.update_layout(height=600, margin=dict(l=10, r=10, t=10, b=10))
        size = len(fig.to_json())
        return time.perf_counter() - start, mid - start, size

    first = once()  # includes importing plotly
    runs = [once() for _ in range(repeats)]
    return {
        "first_call_seconds": round(first[0], 3),
        "median_seconds": round(statistics.median(r[0] for r in runs), 3),
        "median_pca_seconds": round(statistics.median(r[1] for r in runs), 4),
        "figure_json_bytes": first[2],
        "repeats": repeats,
        "goal": "under 1 s",
    }


def child(args) -> None:
    """One cold UMAP run; prints its timings as JSON and saves the coordinates."""
    start = time.perf_counter()
    points = np.load(args.latents)
    if args.child == "plain":
        import umap

        imported = time.perf_counter()
        coords = umap.UMAP().fit_transform(points)
        out = {"import_seconds": imported - start, "map_seconds": time.perf_counter() - imported, "n_fit": len(points)}
    else:
        from engine.projection import MapKey, PointsKey, ProjectionCache
        from engine.projection.numba_cache import cached_functions

        imported = time.perf_counter()
        stages: dict[str, float] = {}
        cache = ProjectionCache(args.cache)
        key = MapKey.create(PointsKey("bench", 0, "shapes", {}, "all", len(points)), "z", "umap", seed=args.seed)
        projection = cache.get_or_compute(key, points, lambda s, f: stages.setdefault(s, time.perf_counter() - start))
        coords = projection.coords
        functions = cached_functions()
        out = {
            "import_seconds": imported - start,
            "map_seconds": time.perf_counter() - imported,
            "n_fit": projection.n_fit,
            "stages_seconds_from_start": {k: round(v, 2) for k, v in stages.items()},
            "cached_in_cache_hit": cache.get(key) is not None,
            "numba_functions": {k: len(v) for k, v in functions.items()},
        }
    np.save(args.coords, np.asarray(coords, dtype=np.float32))
    print(json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in out.items()}))


def run_child(side: str, latents: Path, work: Path, numba_dir: Path, seed: int, name: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_CACHE_DIR", "LATENT_ATLAS_NUMBA_CACHE")}
    env.update(
        OMP_NUM_THREADS=THREADS,
        NUMBA_NUM_THREADS=THREADS,
        MKL_NUM_THREADS=THREADS,
        OMP_WAIT_POLICY="PASSIVE",
        PYTHONPATH=str(ROOT),
        PYTHONWARNINGS="ignore",
    )
    env["NUMBA_CACHE_DIR" if side == "plain" else "LATENT_ATLAS_NUMBA_CACHE"] = str(numba_dir)
    coords = work / f"{name}.npy"
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        side,
        "--latents",
        str(latents),
        "--cache",
        str(work / "projections"),
        "--seed",
        str(seed),
        "--coords",
        str(coords),
    ]
    load_before = loadavg()
    start = time.perf_counter()
    done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{name} failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result.update(wall_seconds=round(wall, 2), loadavg_before=load_before)
    print(f"{name}: {wall:.1f} s wall ({result})", flush=True)
    return result, np.load(coords)


def wait_for_quiet(max_load: float, minutes: float) -> list[float] | None:
    deadline = time.time() + 60 * minutes
    while True:
        load = loadavg()
        if load is None or load[0] < max_load or time.time() > deadline:
            return load
        print(f"load {load[0]:.2f} >= {max_load}; waiting", flush=True)
        time.sleep(30)


def quality(latents: np.ndarray, coords: np.ndarray, n: int = 5000) -> float:
    """Trustworthiness (k = 10) of the map on a fixed random subset of the points."""
    from sklearn.manifold import trustworthiness

    index = np.random.default_rng(0).choice(len(latents), min(n, len(latents)), replace=False)
    return round(float(trustworthiness(latents[index], coords[index], n_neighbors=10)), 4)


def versions() -> dict:
    out = {"python": platform.python_version()}
    for package in (
        "torch",
        "numpy",
        "scikit-learn",
        "umap-learn",
        "pynndescent",
        "numba",
        "llvmlite",
        "openTSNE",
        "plotly",
    ):
        try:
            out[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            out[package] = None
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=70_000)
    parser.add_argument("--quick", action="store_true", help="5,000 points, one plain run")
    parser.add_argument("--max-load", type=float, default=1.0, help="wait for a 1-minute load average below this")
    parser.add_argument("--wait-minutes", type=float, default=10.0, help="then time anyway, recording the load")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "latent_map.json")
    parser.add_argument("--child", choices=("ours", "plain"), help=argparse.SUPPRESS)
    parser.add_argument("--latents", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--cache", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--coords", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)
    n = 5000 if args.quick else args.n

    from engine.store.atomic import atomic_write_json

    latents, errors, data_info = encode(n)
    print(f"encoded {n:,} points in {data_info['encode_seconds']} s", flush=True)
    load_at_start = wait_for_quiet(args.max_load, args.wait_minutes)
    pca = pca_first_map(latents, errors)
    print(f"PCA first map: {pca}", flush=True)
    umap_runs, coords = {}, {}
    with tempfile.TemporaryDirectory(prefix="latent-map-bench-") as tmp:
        work = Path(tmp)
        np.save(work / "latents.npy", latents)
        plan = [
            ("ours", "ours", 0, "ours_first"),
            ("plain", "plain", 0, "plain_first"),
            ("ours", "ours", 1, "ours_second"),
        ]
        if not args.quick:
            plan.append(("plain", "plain", 0, "plain_second"))
        for side, numba_name, seed, name in plan:
            umap_runs[name], coords[name] = run_child(
                side, work / "latents.npy", work, work / f"numba-{numba_name}", seed, name
            )
    for name in umap_runs:
        umap_runs[name]["trustworthiness_k10_5000"] = quality(latents, coords[name])
    plain = umap_runs["plain_first"]["wall_seconds"]
    summary = {
        "pca_first_map_seconds": pca["median_seconds"],
        "umap_ours_first_seconds": umap_runs["ours_first"]["wall_seconds"],
        "umap_ours_second_seconds": umap_runs["ours_second"]["wall_seconds"],
        "umap_plain_first_seconds": plain,
        "umap_plain_second_seconds": umap_runs.get("plain_second", {}).get("wall_seconds"),
        "speedup_second_vs_plain_first": round(plain / umap_runs["ours_second"]["wall_seconds"], 2),
        "speedup_first_vs_plain_first": round(plain / umap_runs["ours_first"]["wall_seconds"], 2),
    }
    if "plain_second" in umap_runs:
        summary["speedup_second_vs_plain_second"] = round(
            umap_runs["plain_second"]["wall_seconds"] / umap_runs["ours_second"]["wall_seconds"], 2
        )
    out = {
        "benchmark": "latent_map",
        "goal": "PCA first map under 1 s; UMAP second time >= 3x faster than plain umap-learn, first time never slower",
        "n_points": n,
        "data": data_info,
        "threads": {"OMP_NUM_THREADS": THREADS, "NUMBA_NUM_THREADS": THREADS, "OMP_WAIT_POLICY": "PASSIVE"},
        "summary": summary,
        "pca": pca,
        "umap": umap_runs,
        "machine": {
            "cpu": cpu_name(),
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "loadavg_at_start": load_at_start,
            "loadavg_at_end": loadavg(),
        },
        "versions": versions(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out, out)
    print(json.dumps(summary, indent=2))
    print(f"wrote {display_path(args.out)}")


if __name__ == "__main__":
    main()
