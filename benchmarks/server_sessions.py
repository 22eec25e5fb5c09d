"""The server alone under one and eight sessions: the same plan of pages and demo models as
concurrent_sessions.py, driven by lightweight clients that speak Streamlit's own websocket
protocol instead of by Chromium, so that the load on the server is what the sessions ask of
it and not what browsers drawing eight pages on the same two cores leave of the machine.

Each session opens `/_stcore/stream` and does what the dashboard's page in a browser does:
it asks for a rerun of the script (BackMsg.rerun_script) with the page picked in the
navigation (its page_script_hash, from the Navigation message) and the current widget
values (the sidebar's "Model" box: the formatted label of the model picked), reads the
ForwardMsgs until script_finished, then fetches every image the run put into the page
(`/media/...`, as the browser does). An interaction runs from the request to the last image
received; then the session pauses, as a person reads the page (a time drawn uniformly from
0.5 to 1.5 times --think, seeded per session, so that sessions started together do not
click in step), and takes the next step. Session i starts at step i of the plan. What the clients leave out: drawing,
Plotly and the components' own requests (the browser's work, measured by
concurrent_sessions.py), and the widget values other than the model (each page's controls
stay at their defaults).

The server's own share comes from the same timing hook (app/timings.py) as in
concurrent_sessions.py and is summarised the same way; the server's process may use every
core. Goal (issue 18): server-side p95 with eight sessions <= 2x one session.

    .venv/bin/python benchmarks/server_sessions.py [--alone 180] [--together 120] [--sessions 8] [--think 1.0]

Writes benchmarks/results/server_sessions.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "benchmarks")]

import websockets  # noqa: E402
from browser import dashboard  # noqa: E402
from common import cpu_name, display_path, loadavg  # noqa: E402
from concurrent_sessions import PLAN, cpu_seconds, memory_mb, percentile, ratios, server_pid, server_reruns  # noqa: E402
from streamlit.proto.BackMsg_pb2 import BackMsg  # noqa: E402
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg  # noqa: E402

from app.navigation import PAGES  # noqa: E402
from app.timings import ENV_TIMINGS  # noqa: E402
from engine.store.atomic import atomic_write_json  # noqa: E402

STEP_TIMEOUT_S = 300.0


class Session:
    """One client: a websocket to the server, the pages it knows and the model it has picked."""

    def __init__(self, url: str):
        self.url = url
        self.pages: dict[str, str] = {}  # url path -> page_script_hash
        self.page_hash = ""  # "" = the default page
        self.model_box: tuple[str, list[str]] | None = None  # (widget id, option labels)
        self.model_label: str | None = None
        self.exceptions = 0

    async def connect(self) -> None:
        ws_url = self.url.replace("http://", "ws://") + "/_stcore/stream"
        self.ws = await websockets.connect(ws_url, subprotocols=["streamlit"], max_size=2**28)

    async def rerun(self) -> tuple[float, int]:
        """Ask for a rerun, read until it finishes, fetch its images: (seconds, images)."""
        msg = BackMsg()
        state = msg.rerun_script
        state.page_script_hash = self.page_hash
        if self.model_box is not None and self.model_label is not None:
            widget = state.widget_states.widgets.add()
            widget.id, widget.string_value = self.model_box[0], self.model_label
        start = time.perf_counter()
        await self.ws.send(msg.SerializeToString())
        images: list[str] = []
        while True:
            fwd = ForwardMsg()
            fwd.ParseFromString(await asyncio.wait_for(self.ws.recv(), STEP_TIMEOUT_S))
            kind = fwd.WhichOneof("type")
            if kind == "navigation":
                self.pages = {p.url_pathname: p.page_script_hash for p in fwd.navigation.app_pages}
                self.page_hash = fwd.navigation.page_script_hash
            elif kind == "delta" and fwd.delta.WhichOneof("type") == "new_element":
                element = fwd.delta.new_element
                which = element.WhichOneof("type")
                if which == "selectbox" and element.selectbox.label == "Model":
                    self.model_box = (element.selectbox.id, list(element.selectbox.options))
                elif which == "imgs":
                    images += [img.url for img in element.imgs.imgs if img.url.startswith("/media/")]
                elif which == "exception":
                    self.exceptions += 1
            elif kind == "script_finished":
                if fwd.script_finished != ForwardMsg.ScriptFinishedStatus.FINISHED_EARLY_FOR_RERUN:
                    break
        await asyncio.gather(*(asyncio.to_thread(fetch, self.url + path) for path in images))
        return time.perf_counter() - start, len(images)

    async def open_page(self, title: str) -> tuple[float, int]:
        stem = next(Path(p.file).stem for p in PAGES if p.title == title)
        self.page_hash = self.pages[stem]
        return await self.rerun()

    async def pick_model(self, slug: str) -> tuple[float, int] | None:
        label = next(o for o in self.model_box[1] if f"· {slug} ·" in o)
        if label == self.model_label:
            return None
        self.model_label = label
        return await self.rerun()


def fetch(url: str) -> int:
    with urllib.request.urlopen(url, timeout=STEP_TIMEOUT_S) as response:
        return len(response.read())


async def session(url: str, index: int, deadline: float, think: float) -> dict:
    # people do not click in step: each pause is drawn from [0.5, 1.5] x think (seeded per session),
    # or the sessions, started together, would send their reruns at the same instants every cycle
    pauses = random.Random(index)
    client = Session(url)
    await client.connect()
    latencies, images = [], 0
    took, n = await client.rerun()  # the first page load, as a browser opening the address
    latencies.append(took)
    images += n
    if client.model_box is not None:
        client.model_label = client.model_box[1][0]
    step = index
    while time.monotonic() < deadline:
        title, model = PLAN[step % len(PLAN)]
        step += 1
        await asyncio.sleep(think * pauses.uniform(0.5, 1.5))
        took, n = await client.open_page(title)
        latencies.append(took)
        images += n
        if model is not None:
            await asyncio.sleep(think * pauses.uniform(0.5, 1.5))
            picked = await client.pick_model(model)
            if picked is not None:
                latencies.append(picked[0])
                images += picked[1]
    await client.ws.close()
    return {
        "session": index,
        "latencies_s": [round(v, 4) for v in latencies],
        "images": images,
        "exceptions": client.exceptions,
    }


async def phase(n_sessions: int, seconds: float, think: float) -> dict:
    tmp = Path(tempfile.mkdtemp())
    timings = tmp / "timings.jsonl"
    os.environ[ENV_TIMINGS] = str(timings)
    with dashboard(tmp / "runs", tmp / "app.log") as url:
        pid = server_pid(int(url.rsplit(":", 1)[1]))
        cpu_start, wall_start = cpu_seconds(pid), time.monotonic()
        deadline = time.monotonic() + seconds
        sessions = await asyncio.gather(*(session(url, i, deadline, think) for i in range(n_sessions)))
        server_cpu = cpu_seconds(pid) - cpu_start
        elapsed = time.monotonic() - wall_start
        vmhwm = memory_mb(pid, "VmHWM")
    del os.environ[ENV_TIMINGS]
    lines = [json.loads(line) for line in timings.read_text().splitlines()]
    latencies = [v for s in sessions for v in s["latencies_s"]]
    result = {
        "sessions": n_sessions,
        "seconds": seconds,
        "think_s": think,
        "interactions": len(latencies),
        "client_median_s": round(statistics.median(latencies), 3),
        "client_p95_s": round(percentile(latencies, 0.95), 3),
        "images_fetched": sum(s["images"] for s in sessions),
        "exceptions": sum(s["exceptions"] for s in sessions),
        "server_cores_used": round(server_cpu / elapsed, 2),
        "server_vmhwm_mb": round(vmhwm, 1),
        "per_session": sessions,
        "server": server_reruns(lines, seconds),
    }
    result["server"]["script_share_of_server_cpu"] = round(sum(r["cpu_s"] for r in lines) / max(server_cpu, 1e-9), 3)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    # long enough that the one-time computations (three reruns per server) lie below the p95 of one session too
    parser.add_argument("--alone", type=float, default=180, help="seconds of the one-session phase")
    parser.add_argument("--together", type=float, default=120, help="seconds of the many-session phase")
    parser.add_argument("--sessions", type=int, default=8)
    parser.add_argument("--think", type=float, default=1.0, help="mean seconds between a session's interactions")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "server_sessions.json")
    args = parser.parse_args()
    load_before = loadavg()
    one = asyncio.run(phase(1, args.alone, args.think))
    many = asyncio.run(phase(args.sessions, args.together, args.think))

    out = {
        "benchmark": "server_sessions",
        "plan": [f"{title} / {model or '-'}" for title, model in PLAN],
        "one_session": one,
        "many_sessions": many,
        "server_ratio_many_to_one": ratios(one["server"], many["server"]),
        "server_ratio_many_to_one_after_first_load": ratios(
            one["server"]["after_first_load"], many["server"]["after_first_load"]
        ),
        "server_goal": "server-side p95 wall with many sessions <= 2x one session",
        "machine": {
            "platform": platform.platform(),
            "cpu": cpu_name(),
            "cores": os.cpu_count(),
            "load_before": load_before,
            "load_after": loadavg(),
            "server_torch_threads": sorted(set(one["server"]["torch_threads"]) | set(many["server"]["torch_threads"])),
            "thread_env": {k: os.environ.get(k) for k in ("LATENT_ATLAS_THREADS", "OMP_NUM_THREADS")},
        },
    }
    atomic_write_json(args.out, out)
    for name in ("one_session", "many_sessions"):
        r, s = out[name], out[name]["server"]
        print(
            f"{r['sessions']} session(s): {r['interactions']} interactions ({s['reruns_per_s']} reruns/s), client "
            f"median {r['client_median_s']} s p95 {r['client_p95_s']} s, {r['images_fetched']} images, "
            f"{r['exceptions']} exceptions; server {r['server_cores_used']} cores"
        )
        print(
            f"  server: wall median {s['wall']['median_s']} s p95 {s['wall']['p95_s']} s, CPU median "
            f"{s['cpu']['median_s']} s p95 {s['cpu']['p95_s']} s, wait median {s['wait']['median_s']} s "
            f"p95 {s['wait']['p95_s']} s"
        )
    print(f"server-side many/one: {out['server_ratio_many_to_one']}")
    print(f"  after each session's first load: {out['server_ratio_many_to_one_after_first_load']}")
    print(f"wrote {display_path(args.out)}")


if __name__ == "__main__":
    main()
