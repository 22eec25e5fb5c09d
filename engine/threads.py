"""How many CPU threads a computation should use, chosen so that it does not oversubscribe the cores.

PyTorch (and numba) default to one thread per core. On a machine where another process is busy
that oversubscribes the cores: the threads of one parallel region wait for each other, and with
OpenMP's default spinning wait a descheduled thread costs the others whole time slices. On a
2-core machine with one busy process, two torch threads train a small VAE about 3x slower than one.

The choice, in order:

1. an explicit request (a `--threads` flag);
2. the environment variable LATENT_ATLAS_THREADS, else OMP_NUM_THREADS (except under torchrun,
   which sets OMP_NUM_THREADS=1 itself);
3. automatic: the cores this process may use (affinity and cgroup quota), less the cores other
   processes keep busy (measured from /proc/stat over a short window, else the load average),
   shared between the processes of one job (torchrun's LOCAL_WORLD_SIZE); at least 1.

A training run keeps an automatic choice right as other processes start and end
(`ThreadGovernor`, every 2 s), so its threads wait only on cores no other process wants: that is
the wait policy. OpenMP's own settings are left as they are (the user may set OMP_WAIT_POLICY
or GOMP_SPINCOUNT); measured on 2 cores (benchmarks/threads.py, step_anatomy.py), its default
short spin is the fastest on an idle machine (two threads 1.4-1.7x faster than under PASSIVE,
which gains nothing over one thread), while two threads beside a busy process lose under every
policy against one thread, which the governor then picks.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from engine.errors import AtlasError

ENV_THREADS = "LATENT_ATLAS_THREADS"
PROBE_S = 0.2  # how long the automatic choice watches the machine's CPU use
BUSY_FRACTION = 0.5  # another process's use of a core that counts as keeping it busy


@dataclass(frozen=True)
class ThreadChoice:
    threads: int
    source: str  # "--threads", ENV_THREADS or "automatic"
    reason: str  # what the choice was made from, for the log
    wait: tuple[tuple[str, str], ...]  # OpenMP's wait settings, (variable, value)
    processes: int = 1  # processes of one job sharing this machine's cores (torchrun)

    def describe(self) -> str:
        waiting = ", ".join(f"{name}={value}" for name, value in self.wait) or "OpenMP's default wait"
        return f"threads: {self.threads} ({self.source}: {self.reason}; {waiting})"


def usable_cores() -> int:
    """The cores this process may run on: its CPU affinity, capped by a cgroup v2 CPU quota."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    with contextlib.suppress(OSError, ValueError):
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, math.floor(int(quota) / int(period))))
    return max(1, cores)


def _cpu_times() -> tuple[float, float] | None:
    """(busy, total) jiffies of all CPUs from /proc/stat; None where there is none."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    values = [float(v) for v in fields[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0.0)  # idle + iowait
    total = sum(values[:8])  # guest time is already counted in user time
    return total - idle, total


class CpuWatch:
    """How many cores other processes kept busy between two looks: the machine's CPU use
    (/proc/stat) less this process's own (all its threads), in cores. None where the machine
    has no /proc/stat."""

    def __init__(self):
        self.machine, self.own, self.clock = _cpu_times(), time.process_time(), time.monotonic()

    def others_busy(self) -> float | None:
        machine, own, clock = _cpu_times(), time.process_time(), time.monotonic()
        if machine is None or self.machine is None:
            return None
        busy, total = machine[0] - self.machine[0], machine[1] - self.machine[1]
        elapsed, own_used = clock - self.clock, own - self.own
        self.machine, self.own, self.clock = machine, own, clock
        if total <= 0 or elapsed <= 0:
            return 0.0
        cpus = os.cpu_count() or 1  # /proc/stat counts every CPU of the machine, not only ours
        return max(0.0, busy / total * cpus - own_used / elapsed)


def busy_cores(probe_s: float = PROBE_S) -> float:
    """How many cores other processes keep busy now, watched over `probe_s` seconds (the
    1-minute load average where /proc/stat is missing)."""
    watch = CpuWatch()
    if watch.machine is None:
        with contextlib.suppress(OSError, AttributeError):
            return max(0.0, os.getloadavg()[0])
        return 0.0
    time.sleep(probe_s)
    return watch.others_busy() or 0.0


def free_threads(cores: int, busy: float, processes: int = 1) -> int:
    """Threads per process that leave the cores other processes keep busy: a core counts as
    taken once another process uses half of it or more; at least 1."""
    taken = math.floor(busy + (1 - BUSY_FRACTION))
    return max(1, max(1, cores - taken) // processes)


def choose_threads(
    requested: int | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    cores: int | None = None,
    busy: float | None = None,
) -> ThreadChoice:
    """The thread count for this process (see the module docstring). cores and busy stand in
    for the measured values (tests, callers that measured already)."""
    environ = os.environ if environ is None else environ
    policy = wait_settings(environ)
    if requested is not None:
        if int(requested) < 1:
            raise AtlasError(f"--threads must be at least 1, got {requested}")
        return ThreadChoice(int(requested), "--threads", "requested", policy)
    under_torchrun = "LOCAL_WORLD_SIZE" in environ
    for name in (ENV_THREADS,) if under_torchrun else (ENV_THREADS, "OMP_NUM_THREADS"):
        text = environ.get(name, "").strip()
        if not text:
            continue
        if not text.isdigit() or int(text) < 1:
            raise AtlasError(f"{name} must be a whole number of at least 1, got {text!r}; unset it for automatic")
        return ThreadChoice(int(text), name, "set in the environment", policy)
    cores = usable_cores() if cores is None else cores
    busy = busy_cores() if busy is None else busy
    processes = 1
    local = environ.get("LOCAL_WORLD_SIZE", "")
    if local.isdigit() and int(local) > 1:
        processes = int(local)
    threads = free_threads(cores, busy, processes)
    reason = f"{cores} core{'s' * (cores != 1)}, {busy:.1f} busy with other processes"
    if processes > 1:
        reason += f", shared by {processes} processes of this job"
    return ThreadChoice(threads, "automatic", reason, policy, processes)


def server_threads(environ: Mapping[str, str] | None = None) -> int:
    """Threads for the dashboard's own computations (decoding a grid, a few chains): small work,
    so by default half the cores, leaving the rest to a training run beside it; LATENT_ATLAS_THREADS
    (`latent-atlas app --threads N`) overrides it. Not measured at start-up: the server lives long."""
    environ = os.environ if environ is None else environ
    text = environ.get(ENV_THREADS, "").strip()
    if text.isdigit() and int(text) >= 1:
        return int(text)
    return max(1, usable_cores() // 2)


WAIT_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")


def wait_settings(environ: Mapping[str, str] | None = None) -> tuple[tuple[str, str], ...]:
    """OpenMP's wait settings the user set, if any (OpenMP's defaults otherwise), for the log."""
    environ = os.environ if environ is None else environ
    return tuple((name, environ[name]) for name in WAIT_VARIABLES if environ.get(name))


def thread_env(choice: ThreadChoice) -> dict[str, str]:
    """Environment variables that give a child process this choice (read when its libraries start)."""
    n = str(choice.threads)
    return {
        "OMP_NUM_THREADS": n,
        "MKL_NUM_THREADS": n,
        "NUMBA_NUM_THREADS": n,
        **dict(choice.wait),
    }


_CONFIGURED: ThreadChoice | None = None  # what configure_process chose for this process


def configure_process(requested: int | None = None) -> ThreadChoice:
    """Choose this process's threads and apply them: the environment for libraries not loaded
    yet (call it before importing torch for the wait policy to hold), and the thread counts of
    torch and numba where they are loaded already."""
    choice = choose_threads(requested)
    env = thread_env(choice)
    if "numba" in sys.modules:  # numba refuses a new pool size once its threads have started
        del env["NUMBA_NUM_THREADS"]
    os.environ.update(env)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(choice.threads)
    numba = sys.modules.get("numba")
    if numba is not None:
        with contextlib.suppress(ValueError, AttributeError):  # above the pool it started with
            numba.set_num_threads(min(choice.threads, numba.config.NUMBA_NUM_THREADS))
    global _CONFIGURED
    _CONFIGURED = choice
    return choice


class ThreadGovernor:
    """Keeps an automatic choice right while a long computation (a training run) goes on: at
    most every `interval_s` seconds, `update()` looks at what other processes used since the
    last look and sets torch's thread count to the cores they leave free, fewer when another
    process starts, more again when it ends. It never acts on a count the user set, nor in a
    job of several processes (torchrun's siblings would count as other processes)."""

    def __init__(self, cores: int, interval_s: float = 2.0):
        self.cores, self.interval_s = cores, interval_s
        self.watch = CpuWatch()
        self.changes: list[tuple[int, int]] = []  # (from, to) thread counts, in order

    @classmethod
    def for_process(cls, interval_s: float = 2.0) -> ThreadGovernor | None:
        """A governor when this process's threads were chosen automatically, else None."""
        choice = _CONFIGURED
        if choice is None or choice.source != "automatic" or choice.processes != 1:
            return None
        return cls(usable_cores(), interval_s)

    def update(self) -> int | None:
        """The new thread count when it changed, else None."""
        if time.monotonic() - self.watch.clock < self.interval_s:
            return None
        busy = self.watch.others_busy()
        if busy is None:
            return None
        import torch

        now, wanted = torch.get_num_threads(), free_threads(self.cores, busy)
        if wanted == now:
            return None
        torch.set_num_threads(wanted)
        self.changes.append((now, wanted))
        return wanted
