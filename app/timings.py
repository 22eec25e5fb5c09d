"""The server's own time per script rerun, for measuring the dashboard under load.

Opt-in: with LATENT_ATLAS_TIMINGS=<file> in the server's environment, every rerun of the
dashboard's script (app/main.py; Streamlit reruns it per interaction per session, each
session on its own thread) appends one JSON line to <file>:

    {"session": "3f9a…", "page": "Sample grids", "start": 1765000000.12, "wall_s": 0.41,
     "cpu_s": 0.38, "runqueue_s": 0.02, "outcome": "ok", "torch_threads": 1}

session: a hash of Streamlit's session id; start: Unix time; wall_s: wall seconds of the
rerun; cpu_s: the CPU seconds of the script's thread (time.thread_time), so wall − CPU is
the time the rerun waited; runqueue_s: the part of that wait the thread was ready to run
but every core was busy (Linux's /proc/thread-self/schedstat; null where there is none), so
wall − CPU − runqueue is the time it was blocked: on Python's GIL, a lock, another
session's computation of a cached value, or the disk;
outcome: "ok", "stop" (the page called st.stop), "interrupted" (a newer rerun of the same
session replaced it, or the session closed: its wall time is cut short), "rerun" (st.rerun)
or "error". CPU that torch spends in its own worker threads (torch_threads > 1) is not in
cpu_s. Without the variable the hook reads one environment variable per rerun and does
nothing else.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

ENV_TIMINGS = "LATENT_ATLAS_TIMINGS"

_write_lock = threading.Lock()  # one line at a time from the sessions' script threads


@dataclass
class Rerun:
    page: str = "?"  # set once the navigation has picked the page


def session_hash() -> str:
    """A short hash of the current Streamlit session's id ("none" outside a session)."""
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    ctx = get_script_run_ctx(suppress_warning=True)
    if ctx is None:
        return "none"
    return hashlib.sha256(ctx.session_id.encode()).hexdigest()[:12]


def _runqueue_seconds() -> float | None:
    """Seconds this thread has spent ready to run while waiting for a core (Linux)."""
    try:
        with open("/proc/thread-self/schedstat", encoding="ascii") as f:
            return int(f.read().split()[1]) / 1e9
    except (OSError, ValueError, IndexError):
        return None


def _outcome(error: BaseException | None) -> str:
    if error is None:
        return "ok"
    from streamlit.runtime.scriptrunner_utils.exceptions import RerunException, StopException

    if isinstance(error, StopException):
        return "stop" if _raised_by_st_stop(error) else "interrupted"
    if isinstance(error, RerunException):
        return "rerun"
    return "error"


def _raised_by_st_stop(error: BaseException) -> bool:
    """Whether a StopException came from the script's own st.stop(). Streamlit raises the same
    exception, at the script's next st.* call, in a run that a newer rerun of its session
    replaced (runner.fastReruns) or whose session closed."""
    tb = error.__traceback__
    while tb is not None:
        code = tb.tb_frame.f_code
        if code.co_name == "stop" and code.co_filename.endswith("execution_control.py"):
            return True
        tb = tb.tb_next
    return False


@contextlib.contextmanager
def timed_rerun() -> Iterator[Rerun]:
    """Time the body as one rerun of the dashboard's script; the body names the page on the
    object it gets. Appends nothing unless LATENT_ATLAS_TIMINGS names a file."""
    path = os.environ.get(ENV_TIMINGS)
    rerun = Rerun()
    if not path:
        yield rerun
        return
    start, wall0, cpu0, queue0 = time.time(), time.perf_counter(), time.thread_time(), _runqueue_seconds()
    error: BaseException | None = None
    try:
        yield rerun
    except BaseException as err:  # Streamlit stops and interrupts scripts with exceptions
        error = err
        raise
    finally:
        wall, cpu, queue1 = time.perf_counter() - wall0, time.thread_time() - cpu0, _runqueue_seconds()
        torch = sys.modules.get("torch")  # loaded by app.state; not imported here for the hook
        line = {
            "session": session_hash(),
            "page": rerun.page,
            "start": round(start, 3),
            "wall_s": round(wall, 6),
            "cpu_s": round(cpu, 6),
            "runqueue_s": None if queue0 is None or queue1 is None else round(queue1 - queue0, 6),
            "outcome": _outcome(error),
            "torch_threads": torch.get_num_threads() if torch is not None else None,
        }
        with _write_lock, open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(line) + "\n")
