"""The run list the sidebar and pages read on every rerun (app/runs.py's listed_runs): read
again exactly when a run changes, never for a running run."""

import os

import pytest

from app.runs import available_runs, listed_runs
from engine.store import Run, RunStore


@pytest.fixture
def counted_reads(monkeypatch):
    """How many times a run's line was read from disk."""
    reads = []
    info = Run.info

    def counting(self, *args, **kwargs):
        reads.append(self.dir.name)
        return info(self, *args, **kwargs)

    monkeypatch.setattr(Run, "info", counting)
    return reads


def make_run(root, name: str, state: str = "finished") -> Run:
    run = RunStore(root).create_run({"family": "vae", "model": {"family": "vae"}}, name_hint=name)
    run.set_status(state)
    return run


def test_an_unchanged_root_is_not_read_again(tmp_path, counted_reads):
    make_run(tmp_path, "one")
    make_run(tmp_path, "two")
    first = listed_runs(tmp_path)
    assert len(counted_reads) == 2
    assert listed_runs(tmp_path) == first
    assert len(counted_reads) == 2


def test_a_change_to_a_run_or_the_root_is_seen_at_once(tmp_path, counted_reads):
    run = make_run(tmp_path, "one")
    assert [i.status for i in listed_runs(tmp_path)] == ["finished"]
    run.set_status("failed", reason="out of memory")
    assert [i.status for i in listed_runs(tmp_path)] == ["failed"]
    run.metrics.log_scalars(10, {"train/elbo": -80.0})
    assert listed_runs(tmp_path)[0].latest_step == 10
    make_run(tmp_path, "two")
    assert len(listed_runs(tmp_path)) == 2
    config = run.dir / "config.json"
    config.write_text("not json")  # in place, as a hand edit would
    os.utime(config, ns=(1, 1))  # even with an old time stamp: the size changed
    assert sorted(i.status for i in listed_runs(tmp_path)) == ["broken", "finished"]


def test_a_running_run_is_read_every_time(tmp_path, counted_reads):
    make_run(tmp_path, "live", state="running")
    listed_runs(tmp_path)
    listed_runs(tmp_path)
    assert len(counted_reads) == 2  # its process may have died in between


def test_the_sidebar_list_is_a_copy_that_callers_may_change(tmp_path, monkeypatch):
    monkeypatch.setenv("LATENT_ATLAS_RUNS_DIR", str(tmp_path))
    make_run(tmp_path, "one")
    first = available_runs(kind=None)
    first.clear()
    assert available_runs(kind=None)  # the demos and the run are still listed
