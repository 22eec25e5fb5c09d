"""Driving the real dashboard in Debian's Chromium, for the browser tests and the
latency benchmark: start `latent-atlas app` on a free port, open pages, wait for them."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_MISSING = (
    "Debian's chromium is not installed: install it with `apt-get install chromium` "
    "(./dev test does so when it runs as root)"
)
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def dashboard(
    runs_dir: Path, log_path: Path, cpus: set[int] | None = None, app_args: tuple[str, ...] = ()
) -> Iterator[str]:
    """A running dashboard on 127.0.0.1; yields its base URL. `cpus`: the cores the server may
    run on (all by default), for a benchmark that keeps its browsers off the server's cores;
    `app_args`: more options for `latent-atlas app`."""
    port = free_port()
    env = {**os.environ, "LATENT_ATLAS_RUNS_DIR": str(runs_dir)}
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "engine.cli",
                "--runs-dir",
                str(runs_dir),
                "app",
                "--headless",
                "--port",
                str(port),
                *app_args,
            ],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=None if cpus is None else lambda: os.sched_setaffinity(0, cpus),
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.time() + 90
            while True:
                try:
                    with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                        if r.status == 200:
                            break
                except OSError:
                    if proc.poll() is not None or time.time() > deadline:
                        raise RuntimeError(f"the dashboard did not start; see {log_path}") from None
                    time.sleep(0.5)
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()


def wait_until_rendered(page, timeout_s: float = 120.0) -> None:
    """Wait until the page has drawn its title, and no spinner, skeleton or running
    indicator has shown for a second."""
    page.wait_for_selector('[data-testid="stAppViewContainer"]', timeout=timeout_s * 1000)
    deadline = time.time() + timeout_s
    quiet_since = None
    while time.time() < deadline:
        busy = (
            (page.locator('[data-testid="stMain"] h1').count() == 0)  # the script has not drawn yet
            + page.locator('[data-testid="stStatusWidget"]').count()
            + page.locator('[data-testid="stSpinner"]').count()
            + page.locator('[data-testid="stSkeleton"]').count()
        )
        if busy:
            quiet_since = None
        elif quiet_since is None:
            quiet_since = time.time()
        elif time.time() - quiet_since > 1.0:
            return
        time.sleep(0.2)
    raise TimeoutError("the page kept running")


def image_src(page, caption: str) -> str:
    """The src of the st.image whose caption is `caption`."""
    return page.locator(f'[data-testid="stImage"]:has-text("{caption}") img').first.get_attribute("src")


def slider_input(page, label_prefix: str):
    """The keyboard-operable range input of the first slider whose label starts so."""
    return page.locator(f'[data-testid="stSlider"] input[type="range"][aria-label^="{label_prefix}"]').first


SCATTER = 'iframe[title*="latent_scatter"]'  # the latent map's component frame


def scatter_frame(page, timeout_s: float = 120.0):
    """The latent map's scatter frame, once it has drawn its figure and loaded its hover
    thumbnails' manifest."""
    frame = page.wait_for_selector(SCATTER, timeout=timeout_s * 1000).content_frame()
    frame.wait_for_function(
        "() => document.getElementById('plot')._fullData && atlas !== null", timeout=timeout_s * 1000
    )
    return frame


def map_points(frame, isolated: bool = False) -> list[dict] | dict:
    """The drawn points' global ids and pixel positions in the frame ({id, x, y}), or with
    `isolated` the one farthest from its nearest neighbour, away from the plot's edges
    (so that hovering or clicking there can only mean that point), with that distance."""
    return frame.evaluate(
        """isolated => {
        const gd = document.getElementById('plot'), fl = gd._fullLayout, s = fl._size, pts = [];
        for (const t of gd._fullData)
            for (let i = 0; i < t.x.length; i++) {
                const c = t.customdata[i];
                pts.push({id: Math.round(typeof c === 'number' ? c : c[0]),
                          x: s.l + fl.xaxis.l2p(t.x[i]), y: s.t + fl.yaxis.l2p(t.y[i])});
            }
        if (!isolated) return pts;
        let best = null;
        for (const p of pts) {
            if (p.x < s.l + 30 || p.x > s.l + s.w - 30 || p.y < s.t + 30 || p.y > s.t + s.h - 30) continue;
            let d = Infinity;
            for (const q of pts) if (q !== p) d = Math.min(d, Math.hypot(p.x - q.x, p.y - q.y));
            if (!best || d > best.gap) best = {...p, gap: d};
        }
        return best;
    }""",
        isolated,
    )
