"""engine.threads: the thread count a computation chooses, and the CPU use it is chosen from."""

import subprocess
import sys
import time

import pytest

from engine import threads
from engine.errors import AtlasError
from engine.threads import choose_threads, server_threads, thread_env


def test_an_explicit_request_wins_over_the_environment_and_the_machine():
    choice = choose_threads(3, environ={"LATENT_ATLAS_THREADS": "2", "OMP_NUM_THREADS": "5"}, cores=8, busy=0)
    assert (choice.threads, choice.source) == (3, "--threads")


def test_the_environment_variable_comes_next_then_omp_num_threads():
    both = choose_threads(environ={"LATENT_ATLAS_THREADS": "2", "OMP_NUM_THREADS": "5"}, cores=8, busy=0)
    assert (both.threads, both.source) == (2, "LATENT_ATLAS_THREADS")
    omp = choose_threads(environ={"OMP_NUM_THREADS": "5"}, cores=8, busy=0)
    assert (omp.threads, omp.source) == (5, "OMP_NUM_THREADS")


def test_under_torchrun_omp_num_threads_is_torchruns_own_and_the_cores_are_shared():
    """torchrun sets OMP_NUM_THREADS=1 for its workers; the choice splits the free cores instead."""
    choice = choose_threads(environ={"OMP_NUM_THREADS": "1", "LOCAL_WORLD_SIZE": "2"}, cores=8, busy=0)
    assert (choice.threads, choice.source) == (4, "automatic")
    assert "shared by 2 processes" in choice.reason
    crowded = choose_threads(environ={"LOCAL_WORLD_SIZE": "4"}, cores=2, busy=0)
    assert crowded.threads == 1  # never less than one


@pytest.mark.parametrize(
    ("cores", "busy", "expected"),
    [(2, 0.0, 2), (2, 0.4, 2), (2, 0.6, 1), (2, 1.0, 1), (2, 3.0, 1), (16, 2.2, 14), (16, 2.6, 13), (1, 0.0, 1)],
)
def test_automatic_leaves_the_cores_other_processes_keep_busy(cores, busy, expected):
    """A core counts as taken once another process uses half of it or more."""
    assert choose_threads(environ={}, cores=cores, busy=busy).threads == expected


@pytest.mark.parametrize("value", ["0", "two", "-1", "1.5"])
def test_a_bad_setting_is_refused_with_its_name(value):
    with pytest.raises(AtlasError, match="LATENT_ATLAS_THREADS"):
        choose_threads(environ={"LATENT_ATLAS_THREADS": value}, cores=2, busy=0)
    with pytest.raises(AtlasError, match="--threads"):
        choose_threads(0, environ={}, cores=2, busy=0)


def test_openmp_waits_as_the_user_set_it_and_the_log_says_how():
    assert choose_threads(environ={}, cores=2, busy=0).wait == ()
    assert "OpenMP's default wait" in choose_threads(environ={}, cores=2, busy=0).describe()
    policy = choose_threads(environ={"OMP_WAIT_POLICY": "PASSIVE"}, cores=2, busy=0)
    assert policy.wait == (("OMP_WAIT_POLICY", "PASSIVE"),) and "OMP_WAIT_POLICY=PASSIVE" in policy.describe()
    env = thread_env(choose_threads(1, environ={"GOMP_SPINCOUNT": "0"}))
    assert env == {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1", "GOMP_SPINCOUNT": "0"}


def test_the_server_takes_half_the_cores_unless_told(monkeypatch):
    monkeypatch.setattr(threads, "usable_cores", lambda: 8)
    assert server_threads({}) == 4
    assert server_threads({"LATENT_ATLAS_THREADS": "3"}) == 3
    assert server_threads({"LATENT_ATLAS_THREADS": "zero"}) == 4  # the dashboard keeps running


def test_busy_cores_is_the_machines_cpu_use_less_this_processs_own(monkeypatch):
    """A hand-computed case: over one second on 4 CPUs, 240 of 400 jiffies busy (2.4 cores), of
    which this process used 0.5 s of CPU: other processes keep 1.9 cores busy."""
    samples = iter([(1000.0, 4000.0), (1240.0, 4400.0)])
    clocks = iter([10.0, 11.0])
    own = iter([5.0, 5.5])
    monkeypatch.setattr(threads, "_cpu_times", lambda: next(samples))
    monkeypatch.setattr(threads.time, "monotonic", lambda: next(clocks))
    monkeypatch.setattr(threads.time, "process_time", lambda: next(own))
    monkeypatch.setattr(threads.time, "sleep", lambda s: None)
    monkeypatch.setattr(threads.os, "cpu_count", lambda: 4)
    assert threads.busy_cores(1.0) == pytest.approx(1.9)


def test_busy_cores_sees_another_process_spinning():
    spinner = subprocess.Popen(
        [sys.executable, "-c", "import time\nend = time.time() + 30\nwhile time.time() < end: pass"]
    )
    try:
        time.sleep(0.5)
        assert threads.busy_cores(0.5) >= 0.7
    finally:
        spinner.kill()
        spinner.wait()


def test_the_governor_follows_other_processes_starting_and_ending(monkeypatch):
    import torch

    from engine.threads import ThreadChoice, ThreadGovernor

    seen = iter([1.0, 1.2, 0.2])  # another process takes a core, stays, leaves
    monkeypatch.setattr(threads.CpuWatch, "others_busy", lambda self: next(seen))
    monkeypatch.setattr(threads, "_CONFIGURED", ThreadChoice(2, "automatic", "idle", ()))
    monkeypatch.setattr(threads, "usable_cores", lambda: 2)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        governor = ThreadGovernor.for_process(interval_s=0.0)
        assert governor.update() == 1 and torch.get_num_threads() == 1
        assert governor.update() is None and torch.get_num_threads() == 1  # still busy: no change
        assert governor.update() == 2 and torch.get_num_threads() == 2
        assert governor.changes == [(2, 1), (1, 2)]
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize(
    "choice",
    [("2", "--threads", 1), ("2", "LATENT_ATLAS_THREADS", 1), ("2", "automatic", 2), None],
    ids=["flag", "environment", "torchrun", "not configured"],
)
def test_the_governor_leaves_a_count_it_did_not_choose_alone(monkeypatch, choice):
    from engine.threads import ThreadChoice, ThreadGovernor

    configured = None if choice is None else ThreadChoice(int(choice[0]), choice[1], "", (), choice[2])
    monkeypatch.setattr(threads, "_CONFIGURED", configured)
    assert ThreadGovernor.for_process() is None
