"""`python -m engine.projection job --cache DIR --job DIGEST`: a background map job (see jobs.py).
`python -m engine.projection warm-up`: compile UMAP's numba code into this machine's cache."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine.projection")
    commands = parser.add_subparsers(dest="command", required=True)
    job = commands.add_parser("job", help="compute one map job's map into the cache")
    job.add_argument("--cache", required=True, help="the ProjectionCache root")
    job.add_argument("--job", required=True, help="the job id (its key's digest)")
    commands.add_parser("warm-up", help="compile UMAP's numba code once for this machine")
    args = parser.parse_args(argv)
    # before numba starts its thread pool (torch is loaded already: it takes the count at once)
    from engine.threads import configure_process

    print(configure_process().describe(), flush=True)
    if args.command == "job":
        from engine.projection.jobs import run_job

        return run_job(args.cache, args.job)
    from engine.projection.maps import warm_up
    from engine.projection.numba_cache import numba_cache_dir

    print(f"UMAP warm-up took {warm_up():.1f} s; numba cache: {numba_cache_dir()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
