"""Several people on one dashboard: browser sessions (Playwright contexts in one Debian
Chromium) that each cycle through their own pages and demo models, first one session
alone, then eight at once, each against a fresh `latent-atlas app`.

An interaction is a click on a page in the sidebar's navigation or a pick of a model in
its "Model" box; its latency runs from the click to the moment the page is quiet (the new
title or model is showing, no spinner, skeleton or running indicator is, and the app root
says the server's run of the script has ended; without that last test a session clicked
on while the script still ran, which cut the run short). Per session:
interactions, exceptions shown on the page, errors in the browser; for the server (the
`streamlit` process) its peak resident memory (VmHWM) and the resident memory sampled
every quarter second, and the CPU it used (in cores, over the phase). Also checked: the
server answers a file upload without the page's XSRF token with 403.

The server's own share: the script's timing hook (app/timings.py, switched on here with
LATENT_ATLAS_TIMINGS) records every rerun's wall seconds, its thread's CPU seconds and its
run-queue seconds; per phase the script reports their median and p95, and the wait (wall −
CPU), split into waiting for a core (runqueue) and blocked (the GIL, a lock, another
session's computation of a cached value), overall and per page, and the ratio of eight
sessions to one. These figures leave out the reruns that a newer rerun of the
same session cut short (counted under outcomes; "all_reruns" has them too).
"after_first_load" leaves out each session's first rerun as well: its page load, which
waits for the process's one-time imports (torch, the engine). All eight sessions load at
once, so eight of the phase's reruns carry that wait against one of the single session's:
about 5% of the reruns, which is where the p95 is read. "reruns_per_s" is the load the
sessions put on the server.

By default the server runs on the first core and Chromium with this driver on the others,
as when the people using the dashboard sit at their own machines; --shared-cores lets them
share every core (on a 2-core machine the eight browsers then take most of the server's
CPU). --watch starts the app with Streamlit's file watcher, which it has off by default.

    .venv/bin/python benchmarks/concurrent_sessions.py [--alone 90] [--together 180] [--sessions 8]
        [--shared-cores] [--watch]

Writes benchmarks/results/concurrent_sessions.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "benchmarks")]

from browser import CHROMIUM, CHROMIUM_ARGS, dashboard  # noqa: E402
from common import cpu_name, display_path, loadavg  # noqa: E402
from playwright.async_api import TimeoutError as PlaywrightTimeout  # noqa: E402

from app.navigation import PAGES  # noqa: E402
from app.timings import ENV_TIMINGS  # noqa: E402
from engine.store.atomic import atomic_write_json  # noqa: E402

# (page title in the navigation, demo model to pick there or None); session i starts at step i
PLAN = [
    ("Sample grids", "digits-vae"),
    ("Latent traversals", "facet-digits-vae"),
    ("Latent activity", "digits-tcvae"),
    ("Facet clusters", "facet-digits-mfcvae"),
    ("HVAE residual norms", "digits-hvae"),
    ("Sample grids", "shapes-vae"),
    ("Runs", None),
    ("Import", None),
]
# busy: no title yet, a spinner, skeleton or running indicator shows, or the server's run of the
# script has not ended (the app root's script state, which the indicator shows only after a delay)
BUSY_JS = """() => !document.querySelector('[data-testid="stMain"] h1') || !!document.querySelector(
  '[data-testid="stStatusWidget"], [data-testid="stSpinner"], [data-testid="stSkeleton"]') || ['running',
  'rerunRequested'].includes(document.querySelector('[data-testid="stApp"]')?.dataset.testScriptState)"""
INTERACTION_TIMEOUT_S = 300.0


async def until_quiet(page, done, start: float) -> float:
    """Seconds from `start` until `done()` holds and the page is not busy."""
    while time.perf_counter() - start < INTERACTION_TIMEOUT_S:
        if await done() and not await page.evaluate(BUSY_JS):
            return time.perf_counter() - start
        await asyncio.sleep(0.05)
    raise TimeoutError("the page kept running")


async def open_page(page, title: str) -> float:
    # by the page's path, not its text: "Import" is also the start of "Importance weights"
    stem = next(Path(p.file).stem for p in PAGES if p.title == title)
    link = page.locator(f'[data-testid="stSidebarNav"] a[href$="/{stem}"]').first
    start = time.perf_counter()
    await link.click()
    heading = page.locator('[data-testid="stMain"] h1').first

    async def shown() -> bool:
        return await heading.count() > 0 and (await heading.inner_text()).strip() == title

    return await until_quiet(page, shown, start)


async def pick_model(page, slug: str) -> float:
    box = page.locator('[data-testid="stSidebar"] [data-testid="stSelectbox"]').first  # "Model"
    picker = box.locator("input")  # holds the choice
    label = f"· {slug} ·"  # labels read "demo · digits-vae · 3dcc"
    if label in await picker.input_value():
        return 0.0  # already picked: no interaction
    await box.click()
    option = page.locator('[role="option"]', has_text=label).first
    start = time.perf_counter()
    await option.click()
    await asyncio.sleep(0.1)  # let the rerun start before looking for quiet

    async def shown() -> bool:
        return label in await picker.input_value()

    return await until_quiet(page, shown, start)


async def session(browser, url: str, index: int, deadline: float) -> dict:
    context = await browser.new_context(viewport={"width": 1400, "height": 1600})
    context.set_default_timeout(INTERACTION_TIMEOUT_S * 1000)  # eight pages on one core click slowly
    page = await context.new_page()
    browser_errors: list[str] = []
    page.on("pageerror", lambda err: browser_errors.append(str(err)))
    latencies, exceptions, errors, timeouts, visits = [], 0, 0, 0, []
    await page.goto(url)
    await until_quiet(page, lambda: page.locator('[data-testid="stSidebarNav"] a').count(), time.perf_counter())
    step = index
    while time.monotonic() < deadline:
        title, model = PLAN[step % len(PLAN)]
        step += 1
        try:
            latencies.append(await open_page(page, title))
            if model is not None and (took := await pick_model(page, model)) > 0:
                latencies.append(took)
        except (TimeoutError, PlaywrightTimeout):  # ours (the page kept running) or a click's
            timeouts += 1
        exceptions += await page.locator('[data-testid="stException"]').count()
        errors += await page.locator('[data-testid="stAlert"]', has_text="cannot be").count()
        visits.append(f"{title} / {model or '-'}")
    await context.close()
    return {
        "session": index,
        "interactions": len(latencies),
        "latencies_s": [round(v, 3) for v in latencies],
        "exceptions": exceptions,
        "errors": errors,
        "timeouts": timeouts,
        "browser_errors": browser_errors,
        "visits": len(visits),
    }


def server_pid(port: int) -> int:
    """The pid of the streamlit process serving `port` (cmd_app execs the server in place)."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            args = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"streamlit" in b" ".join(args) and str(port).encode() in args:
            return int(proc.name)
    raise RuntimeError(f"no streamlit process serves port {port}")


def memory_mb(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/{pid}/status has no {field}")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time the process has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


class MemorySampler(threading.Thread):
    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid, self.samples, self.stop = pid, [], threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.25):
            self.samples.append(memory_mb(self.pid, "VmRSS"))


def refuses_foreign_upload(url: str) -> bool:
    """A PUT to the upload endpoint without the page's XSRF token, as another site would send."""
    request = urllib.request.Request(f"{url}/_stcore/upload_file/some-session/some-file", data=b"x", method="PUT")
    try:
        urllib.request.urlopen(request, timeout=10)
    except urllib.error.HTTPError as err:
        return err.code == 403
    return False


def summary(sessions: list[dict]) -> dict:
    latencies = sorted(v for s in sessions for v in s["latencies_s"])
    p95 = latencies[min(len(latencies) - 1, int(round(0.95 * (len(latencies) - 1))))]
    return {
        "interactions": len(latencies),
        "median_s": round(statistics.median(latencies), 2),
        "p95_s": round(p95, 2),
        "max_s": round(latencies[-1], 2),
        "exceptions": sum(s["exceptions"] for s in sessions),
        "errors": sum(s["errors"] for s in sessions),
        "timeouts": sum(s["timeouts"] for s in sessions),
        "browser_errors": sum(len(s["browser_errors"]) for s in sessions),
    }


def percentile(values: list[float], q: float) -> float:
    """The q-quantile by the nearest rank, as summary() takes the p95 of latencies."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def spread(values: list[float]) -> dict:
    return {"median_s": round(statistics.median(values), 4), "p95_s": round(percentile(values, 0.95), 4)}


def rerun_stats(lines: list[dict]) -> dict:
    """wait = wall − CPU, split (where Linux reports it) into runqueue, ready to run but no core
    free, and blocked, the rest: Python's GIL, a lock, another session's cached computation."""
    wall = [r["wall_s"] for r in lines]
    cpu = [r["cpu_s"] for r in lines]
    wait = [max(0.0, w - c) for w, c in zip(wall, cpu)]
    out = {
        "reruns": len(lines),
        "wall": spread(wall),
        "cpu": spread(cpu),
        "wait": spread(wait),
        "cpu_share_of_wall": round(sum(cpu) / max(sum(wall), 1e-9), 3),
    }
    if lines and all(r.get("runqueue_s") is not None for r in lines):
        queue = [r["runqueue_s"] for r in lines]
        out["runqueue"] = spread(queue)
        out["blocked"] = spread([max(0.0, w - q) for w, q in zip(wait, queue)])
        out["runqueue_share_of_wall"] = round(sum(queue) / max(sum(wall), 1e-9), 3)
    return out


def server_reruns(lines: list[dict], seconds: float) -> dict:
    """The server's own time per rerun of the script, from the timing hook's lines: wall,
    the script thread's CPU and the wait between them (wall − CPU), for the reruns that ran
    to their end (all but those a newer rerun of their session cut short), per page, and
    for all reruns."""
    finished = [r for r in lines if r["outcome"] != "interrupted"]
    outcomes: dict[str, int] = {}
    for r in lines:
        outcomes[r["outcome"]] = outcomes.get(r["outcome"], 0) + 1
    pages: dict[str, list[dict]] = {}
    for r in finished:
        pages.setdefault(r["page"], []).append(r)
    firsts = {}  # each session's first rerun: its page load, which waits for the server's one-time imports
    for r in sorted(lines, key=lambda r: r["start"]):
        firsts.setdefault(r["session"], r)
    later = [r for r in finished if firsts[r["session"]] is not r]
    return {
        "outcomes": outcomes,
        **rerun_stats(finished),
        "after_first_load": rerun_stats(later),
        "all_reruns": rerun_stats(lines),
        "reruns_per_s": round(len(lines) / seconds, 2),
        "mean_reruns_in_flight": round(sum(r["wall_s"] for r in lines) / seconds, 2),
        "torch_threads": sorted({r["torch_threads"] for r in lines if r["torch_threads"] is not None}),
        "per_page": {
            page: {
                "reruns": len(rs),
                "wall_median_s": round(statistics.median(r["wall_s"] for r in rs), 4),
                "wall_max_s": round(max(r["wall_s"] for r in rs), 4),
                "cpu_median_s": round(statistics.median(r["cpu_s"] for r in rs), 4),
                "cpu_max_s": round(max(r["cpu_s"] for r in rs), 4),
            }
            for page, rs in sorted(pages.items())
        },
    }


def core_split() -> tuple[set[int], set[int]] | None:
    """(the server's cores, the browsers' cores): the first usable core for the server, the rest
    for Chromium and this driver; None on a machine with one core."""
    cores = sorted(os.sched_getaffinity(0))
    return ({cores[0]}, set(cores[1:])) if len(cores) > 1 else None


def ratios(one: dict, many: dict) -> dict:
    """Many sessions' rerun figures (rerun_stats) over one session's, for each kind of time
    both phases report, median and p95."""
    return {
        f"{what}_{stat}": round(many[what][f"{stat}_s"] / max(one[what][f"{stat}_s"], 1e-9), 2)
        for what in ("wall", "cpu", "wait", "runqueue", "blocked")
        if what in one and what in many
        for stat in ("median", "p95")
    }


async def phase(
    n_sessions: int, seconds: float, split: tuple[set[int], set[int]] | None, app_args: tuple[str, ...]
) -> dict:
    from playwright.async_api import async_playwright

    tmp = Path(tempfile.mkdtemp())
    timings = tmp / "timings.jsonl"
    os.environ[ENV_TIMINGS] = str(timings)  # the server started below inherits it
    everywhere = os.sched_getaffinity(0)
    with dashboard(tmp / "runs", tmp / "app.log", cpus=split[0] if split else None, app_args=app_args) as url:
        if split:  # Chromium, started below, inherits the driver's cores
            os.sched_setaffinity(0, split[1])
        pid = server_pid(int(url.rsplit(":", 1)[1]))
        idle_mb = memory_mb(pid, "VmRSS")
        sampler = MemorySampler(pid)
        sampler.start()
        cpu_start, wall_start = cpu_seconds(pid), time.monotonic()
        async with async_playwright() as p:
            browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            deadline = time.monotonic() + seconds
            sessions = await asyncio.gather(*(session(browser, url, i, deadline) for i in range(n_sessions)))
            await browser.close()
        os.sched_setaffinity(0, everywhere)
        server_cpu = cpu_seconds(pid) - cpu_start
        server_cores = server_cpu / (time.monotonic() - wall_start)
        sampler.stop.set()
        sampler.join()
        result = {
            "sessions": n_sessions,
            "seconds": seconds,
            **summary(sessions),
            "server_rss_idle_mb": round(idle_mb, 1),
            "server_rss_peak_mb": round(max(sampler.samples), 1),
            "server_vmhwm_mb": round(memory_mb(pid, "VmHWM"), 1),
            "server_cores_used": round(server_cores, 2),
            "server_cpu_s": round(server_cpu, 1),
            "xsrf_refuses_foreign_upload": refuses_foreign_upload(url),
            "per_session": sessions,
        }
    del os.environ[ENV_TIMINGS]
    lines = [json.loads(line) for line in timings.read_text().splitlines()] if timings.exists() else []
    if not lines:
        raise RuntimeError(f"the server wrote no rerun timings (is app/main.py's hook there?); see {tmp / 'app.log'}")
    result["server"] = server_reruns(lines, seconds)
    # the rest of the server's CPU: Tornado's event loop (messages, media), garbage collection, start-up
    result["server"]["script_share_of_server_cpu"] = round(sum(r["cpu_s"] for r in lines) / max(server_cpu, 1e-9), 3)
    return result


def model_footprint_mb() -> float:
    """What one copy of the demo models the plan uses weighs, weights plus their test data:
    what each extra session would add if sessions held copies instead of sharing them."""
    from app.runs import available_runs, run_slug
    from engine.loading import load_run_model
    from engine.store import Run

    total = 0
    slugs = {model for _, model in PLAN if model}
    for choice in available_runs():
        if choice.key.startswith("demo/") and run_slug(choice.info.id) in slugs:
            loaded = load_run_model(Run.from_dir(choice.dir, readonly=True))
            total += sum(t.numel() * t.element_size() for t in loaded.model.state_dict().values())
            data = loaded.spec.load_data("test")
            total += 0 if data.is_lazy else data.x.numel() * data.x.element_size()
    return total / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--alone", type=float, default=90, help="seconds of the one-session phase")
    parser.add_argument("--together", type=float, default=180, help="seconds of the many-session phase")
    parser.add_argument("--sessions", type=int, default=8)
    parser.add_argument(
        "--shared-cores",
        action="store_true",
        help="let the server and Chromium share every core (by default the server gets the first core, "
        "the browsers the others, as when the people using it sit at their own machines)",
    )
    parser.add_argument("--watch", action="store_true", help="start the app with its file watcher (--watch)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "concurrent_sessions.json")
    args = parser.parse_args()
    if CHROMIUM is None:
        sys.exit("Debian's chromium is not installed (apt-get install chromium)")
    load_before = loadavg()
    split = None if args.shared_cores else core_split()
    app_args = ("--watch",) if args.watch else ()
    alone = asyncio.run(phase(1, args.alone, split, app_args))
    together = asyncio.run(phase(args.sessions, args.together, split, app_args))
    footprint = model_footprint_mb()
    one, many = alone["server"], together["server"]
    out = {
        "benchmark": "concurrent_sessions",
        "plan": [f"{title} / {model or '-'}" for title, model in PLAN],
        "one_session": alone,
        "many_sessions": together,
        "server_ratio_many_to_one": ratios(one, many),
        "server_ratio_many_to_one_after_first_load": ratios(one["after_first_load"], many["after_first_load"]),
        "server_goal": "server-side p95 wall with many sessions <= 2x one session",
        "model_copy_mb": round(footprint, 1),
        "rss_growth_mb": round(together["server_rss_peak_mb"] - alone["server_rss_peak_mb"], 1),
        "rss_growth_if_copied_per_session_mb": round((args.sessions - 1) * footprint, 1),
        "machine": {
            "platform": platform.platform(),
            "cpu": cpu_name(),
            "load_before": load_before,
            "load_after": loadavg(),
            "cores": os.cpu_count(),
            "server_cores": sorted(split[0]) if split else "all",
            "browser_cores": sorted(split[1]) if split else "all",
            "file_watcher": args.watch,
            "server_torch_threads": sorted(set(one["torch_threads"]) | set(many["torch_threads"])),
            "thread_env": {
                k: os.environ.get(k) for k in ("LATENT_ATLAS_THREADS", "OMP_NUM_THREADS", "OMP_WAIT_POLICY")
            },
        },
    }
    atomic_write_json(args.out, out)
    for name in ("one_session", "many_sessions"):
        r = out[name]
        print(
            f"{r['sessions']} session(s): {r['interactions']} interactions, median {r['median_s']} s, "
            f"p95 {r['p95_s']} s, {r['exceptions']} exceptions, {r['timeouts']} timeouts; server peak RSS "
            f"{r['server_rss_peak_mb']} MB"
        )
        s = r["server"]
        print(
            f"  server: {s['reruns']} reruns, wall median {s['wall']['median_s']} s p95 {s['wall']['p95_s']} s, "
            f"CPU median {s['cpu']['median_s']} s p95 {s['cpu']['p95_s']} s, "
            f"wait median {s['wait']['median_s']} s p95 {s['wait']['p95_s']} s"
            + (
                f" (for a core: median {s['runqueue']['median_s']} s, blocked: median {s['blocked']['median_s']} s)"
                if "runqueue" in s
                else ""
            )
        )
    print(f"server-side many/one: {out['server_ratio_many_to_one']}")
    print(f"  after each session's first load: {out['server_ratio_many_to_one_after_first_load']}")
    print(f"wrote {display_path(args.out)}")


if __name__ == "__main__":
    main()
