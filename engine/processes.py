"""Background processes: start a Python module as a child of its own, ask whether a pid is
alive, and stop one.

    child = start_module("engine.cli", ["train", "--preset", "digits-vae"], log=path)
    pid_alive(child.pid)         # True while it runs; a finished child of ours is reaped
    stop(child.pid)              # an interrupt (Ctrl-C), then a terminate after a grace period

A child runs in a session (POSIX) or process group (Windows) of its own, so that Ctrl-C in
the server's terminal, or the server stopping, does not reach it; its stdout and stderr go
to the log file. It starts in the repository root with the repository importable, so a
checkout that is not installed runs it too.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from engine.errors import AtlasError

REPO_ROOT = Path(__file__).resolve().parents[1]
POLL_S = 0.05  # how often `wait` looks again

_CHILDREN: dict[int, subprocess.Popen] = {}  # pid -> child, for the children started here

if os.name == "nt":
    # CTRL_BREAK reaches a child started in a process group of its own; SIGTERM is TerminateProcess
    _STOP_SIGNALS = (("interrupted", signal.CTRL_BREAK_EVENT), ("terminated", signal.SIGTERM))
else:
    _STOP_SIGNALS = (("interrupted", signal.SIGINT), ("terminated", signal.SIGTERM), ("killed", signal.SIGKILL))


# `python -m module` with Python's own Ctrl-C handler in place first. A child inherits a parent's
# ignored SIGINT (a server started in the background by a shell, as with `nohup ... &`), and
# Python then installs no KeyboardInterrupt handler, so `stop` could only terminate it.
_AS_MODULE = (
    "import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "sys.argv[0] = '-m'; runpy.run_module(sys.argv.pop(1), run_name='__main__', alter_sys=True)"
)


def start_module(
    module: str,
    args: list[str],
    log: str | os.PathLike | None = None,
    *,
    append: bool = False,
    env: dict[str, str] | None = None,
) -> subprocess.Popen:
    """Run `python -m module *args` in the background with this interpreter; returns the
    child (its `pid`, `poll()`, `returncode`). log: a file for its output (appended to
    with `append`), or None to discard it. env: variables set on top of this process's."""
    command = [sys.executable, "-c", _AS_MODULE, module, *args]
    if log is None:
        return _start(command, subprocess.DEVNULL, env)
    with open(log, "ab" if append else "wb") as out:  # the child holds its own copy
        return _start(command, out, env)


def _start(command: list[str], out, env: dict[str, str] | None) -> subprocess.Popen:
    child_env = {**os.environ, **(env or {})}
    child_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), child_env.get("PYTHONPATH")]))
    if os.name == "nt":
        own_group = {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP}
    else:
        own_group = {"start_new_session": True}
    child = subprocess.Popen(
        command,
        stdout=out,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        cwd=REPO_ROOT,
        env=child_env,
        **own_group,
    )
    _CHILDREN[child.pid] = child
    return child


def pid_alive(pid: int, command_contains: str | None = None) -> bool:
    """Whether process `pid` on this machine is running (not finished, not a zombie).

    A finished child started by `start_module` is reaped on the way. Any other finished process
    counts as dead and is left for its owner to collect (a `subprocess.Popen` elsewhere keeps
    its exit status), except where there is no /proc to tell a zombie by: there a finished
    child of this process is reaped to find out.
    command_contains: a string the process's command line must hold, where the system lets
    us read it (Linux's /proc), so that a pid reused by another program counts as dead."""
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return False  # 0 and negative pids would name process groups
    child = _CHILDREN.get(pid)
    if child is not None:
        if child.poll() is None:  # poll() reaps a finished child
            return True
        _CHILDREN.pop(pid, None)  # it has ended: from now on the pid may name another process
    if os.name == "nt":
        return _windows_alive(pid)
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:
        return True  # it exists and belongs to another user
    stat = _proc_text(pid, "stat")
    if stat is not None:
        if stat.rsplit(")", 1)[-1].split()[:1] == ["Z"]:
            return False  # finished, a zombie its parent has not collected yet (left for it to collect)
    else:  # no /proc: a finished child of ours started some other way shows only to waitpid
        try:
            reaped, _ = os.waitpid(pid, os.WNOHANG)
            if reaped == pid:
                return False
        except ChildProcessError:
            pass  # not our child
    if command_contains is not None:
        command = _proc_text(pid, "cmdline")  # empty while a just-started child is still in exec
        return not command or command_contains in command
    return True


def wait(pid: int, timeout_s: float) -> bool:
    """Wait up to timeout_s for process `pid` to end; whether it has."""
    deadline = time.monotonic() + timeout_s
    while pid_alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL_S)
    return True


def stop(pid: int, grace_s: float = 10.0) -> str:
    """Stop process `pid`: an interrupt (Ctrl-C; Ctrl-Break on Windows, which reaches only a
    child started by `start_module`), and while it still runs after grace_s, a terminate
    (SIGTERM, then SIGKILL on POSIX). Returns what ended it: "interrupted", "terminated",
    "killed", or "not running" when it had ended already."""
    outcome = "not running"
    for name, sig in _STOP_SIGNALS:
        if not pid_alive(pid):
            return outcome
        if _signal(pid, sig):
            outcome = name
            if wait(pid, grace_s):
                return outcome
    if pid_alive(pid):
        raise AtlasError(f"process {pid} is still running after a terminate; end it with the system's task manager")
    return outcome


def _signal(pid: int, sig: int) -> bool:
    """Send `sig` to `pid`; False if it could not be delivered (a Ctrl-Break to a process
    outside our process groups); a process that has just ended counts as delivered."""
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return True
    except PermissionError:
        raise AtlasError(f"process {pid} belongs to another user; stop it as that user") from None
    except OSError:
        return False
    return True


def _proc_text(pid: int, name: str) -> str | None:
    """/proc/<pid>/<name> as text (NULs as spaces), or None where there is no /proc."""
    try:
        return Path(f"/proc/{pid}/{name}").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return None


def _windows_alive(pid: int) -> bool:
    """OpenProcess and a zero-timeout wait on its handle: running while the wait times out."""
    synchronize, query_limited, access_denied, wait_timeout = 0x00100000, 0x1000, 5, 0x102
    kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
    handle = kernel32.OpenProcess(synchronize | query_limited, False, pid)
    if not handle:
        return ctypes.get_last_error() == access_denied  # it exists, but is not ours to open
    try:
        return kernel32.WaitForSingleObject(handle, 0) == wait_timeout
    finally:
        kernel32.CloseHandle(handle)
