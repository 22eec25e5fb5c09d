"""Background processes: real children started, watched and stopped."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from engine.processes import pid_alive, start_module, stop, wait

SLEEPER = textwrap.dedent("""
    import signal, sys, time
    if "--ignore-interrupt" in sys.argv:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    print("ready", flush=True)
    time.sleep(60)
""")


@pytest.fixture
def sleeper(tmp_path, monkeypatch):
    """A module `sleeper` importable from tmp_path, which start_module must keep on the path."""
    (tmp_path / "sleeper.py").write_text(SLEEPER)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    return tmp_path


def started(log: Path, child: subprocess.Popen) -> None:
    """Wait until the child has printed "ready" (its signal handlers are in place)."""
    deadline = time.monotonic() + 30
    while "ready" not in (log.read_text() if log.exists() else ""):
        assert child.poll() is None, log.read_text()
        assert time.monotonic() < deadline, "the child did not start"
        time.sleep(0.05)


def reaped(pid: int) -> bool:
    """Whether no zombie of `pid` is left for this process to collect."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return True
    return False


def test_a_child_runs_in_its_own_session_and_an_interrupt_stops_it(sleeper):
    log = sleeper / "out.log"
    child = start_module("sleeper", [], log)
    started(log, child)
    assert pid_alive(child.pid)
    assert os.getsid(child.pid) == child.pid != os.getsid(0)  # Ctrl-C in our terminal does not reach it
    assert stop(child.pid, grace_s=20) == "interrupted"
    assert not pid_alive(child.pid)
    assert child.returncode not in (None, 0) and reaped(child.pid)
    assert "KeyboardInterrupt" in log.read_text()  # it got the interrupt, as from Ctrl-C
    assert stop(child.pid) == "not running"


def test_a_child_that_ignores_the_interrupt_is_terminated_after_the_grace_period(sleeper):
    log = sleeper / "out.log"
    child = start_module("sleeper", ["--ignore-interrupt"], log)
    started(log, child)
    begin = time.monotonic()
    assert stop(child.pid, grace_s=0.5) == "terminated"
    assert time.monotonic() - begin >= 0.5  # it was given its grace period first
    assert child.returncode == -signal.SIGTERM and reaped(child.pid)
    assert not pid_alive(child.pid)


def test_the_log_is_appended_to_when_asked(sleeper):
    log = sleeper / "out.log"
    log.write_text("before\n")
    child = start_module("sleeper", [], log, append=True)
    started(log, child)
    stop(child.pid, grace_s=20)
    assert log.read_text().startswith("before\nready")
    child = start_module("sleeper", [], log)
    started(log, child)
    stop(child.pid, grace_s=20)
    assert log.read_text().startswith("ready")


def test_pids_that_name_no_process():
    pid_max = int(Path("/proc/sys/kernel/pid_max").read_text()) if Path("/proc/sys/kernel/pid_max").exists() else 99999
    for pid in (0, -1, True, pid_max + 1, 2**40):
        assert not pid_alive(pid), pid  # 0 and -1 would be process groups to os.kill
    assert stop(pid_max + 1) == "not running"
    assert wait(pid_max + 1, timeout_s=0)
    assert pid_alive(os.getpid()) and pid_alive(1)  # ourselves, and a process that may not be ours


def test_a_finished_child_started_another_way_is_dead_and_keeps_its_exit_status_for_its_owner():
    child = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    stat = Path(f"/proc/{child.pid}/stat")
    deadline = time.monotonic() + 30
    while stat.read_text().rsplit(")", 1)[1].split()[0] != "Z":  # until it is a zombie
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert not pid_alive(child.pid)
    assert child.wait(timeout=5) == 3  # not stolen by pid_alive (a Popen that lost it reports 0)
    assert reaped(child.pid)


def test_a_reused_pid_running_another_program_counts_as_dead_where_the_command_line_is_readable():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "job-3fa2"])
    try:
        assert pid_alive(child.pid, command_contains="job-3fa2")  # also while its command line is still empty
        cmdline = Path(f"/proc/{child.pid}/cmdline")
        deadline = time.monotonic() + 30
        while cmdline.exists() and not cmdline.read_bytes():  # the exec has not finished yet
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert pid_alive(child.pid, command_contains="job-3fa2")
        assert pid_alive(child.pid, command_contains="job-0000") is not cmdline.exists()
    finally:
        child.kill()
        child.wait()


def test_a_pid_of_a_finished_child_of_ours_taken_by_another_process_is_alive(sleeper, monkeypatch):
    import engine.processes as processes

    log = sleeper / "out.log"
    child = start_module("sleeper", [], log)
    started(log, child)
    child.kill()
    child.wait()  # reaped without pid_alive knowing: its entry is stale
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        monkeypatch.setitem(processes._CHILDREN, other.pid, child)  # as if the pid had been reused
        assert pid_alive(other.pid)
    finally:
        other.kill()
        other.wait()


def test_an_interrupt_stops_a_child_whose_parent_ignores_interrupts(sleeper):
    """A server started in the background by a shell ignores SIGINT, and its children inherit
    that; the child still gets Python's Ctrl-C handler, so a stop interrupts it."""
    log = sleeper / "out.log"
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        child = start_module("sleeper", ["--extra", "arg"], log)
    finally:
        signal.signal(signal.SIGINT, previous)
    started(log, child)
    assert stop(child.pid, grace_s=20) == "interrupted"
    assert "KeyboardInterrupt" in log.read_text()
