"""The opt-in timing hook around each rerun of the dashboard's script (app/timings.py)."""

import json
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from app.timings import ENV_TIMINGS, timed_rerun

ROOT = Path(__file__).resolve().parent.parent
FIELDS = {"session", "page", "start", "wall_s", "cpu_s", "runqueue_s", "outcome", "torch_threads"}
LINUX = Path("/proc/thread-self/schedstat").exists()


@pytest.fixture(autouse=True)
def empty_runs_root(tmp_path, monkeypatch):
    monkeypatch.setenv("LATENT_ATLAS_RUNS_DIR", str(tmp_path / "runs"))


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_each_rerun_of_the_app_appends_one_line(tmp_path, monkeypatch):
    log = tmp_path / "timings.jsonl"
    monkeypatch.setenv(ENV_TIMINGS, str(log))
    before = time.time()
    at = AppTest.from_file(str(ROOT / "app" / "main.py"), default_timeout=180)
    at.switch_page("../pages/runs.py").run()
    assert not at.exception, [e.value for e in at.exception]
    at.switch_page("../pages/import_data.py").run()
    assert not at.exception, [e.value for e in at.exception]
    after = time.time()

    first, second = lines(log)
    assert set(first) == FIELDS and set(second) == FIELDS
    assert (first["page"], second["page"]) == ("Runs", "Import")
    assert first["session"] == second["session"] != "none"  # one session, hashed
    assert len(first["session"]) == 12 and at.session_state  # not the raw id
    for line in (first, second):
        assert line["outcome"] == "ok"
        assert before <= line["start"] <= line["start"] + line["wall_s"] <= after + 0.01
        assert 0 < line["wall_s"] < after - before
        assert 0 <= line["cpu_s"] <= line["wall_s"] + 0.01  # one thread's CPU cannot exceed its wall time
        if LINUX:
            assert 0 <= line["runqueue_s"] <= line["wall_s"] - line["cpu_s"] + 0.01
        else:
            assert line["runqueue_s"] is None
        assert line["torch_threads"] >= 1
    assert first["start"] + first["wall_s"] <= second["start"] + 0.01


def test_nothing_is_written_when_disabled(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV_TIMINGS, raising=False)
    monkeypatch.chdir(tmp_path)
    at = AppTest.from_file(str(ROOT / "app" / "main.py"), default_timeout=180)
    at.switch_page("../pages/runs.py").run()
    assert not at.exception, [e.value for e in at.exception]
    assert list(tmp_path.iterdir()) == []  # no file in the working directory or anywhere it was given


def test_cpu_seconds_tell_work_from_waiting(tmp_path, monkeypatch):
    log = tmp_path / "timings.jsonl"
    monkeypatch.setenv(ENV_TIMINGS, str(log))
    with timed_rerun() as rerun:
        rerun.page = "waiting"
        time.sleep(0.3)
    with timed_rerun() as rerun:
        rerun.page = "working"
        end = time.thread_time() + 0.3
        while time.thread_time() < end:
            pass
    waiting, working = lines(log)
    assert waiting["session"] == "none"  # outside a Streamlit session
    assert waiting["wall_s"] >= 0.3 and waiting["cpu_s"] < 0.05
    if LINUX:  # asleep, not waiting for a core: blocked time, not run-queue time
        assert waiting["runqueue_s"] < 0.25
    assert working["cpu_s"] >= 0.3 and working["cpu_s"] <= working["wall_s"] + 0.01


def test_a_stopped_interrupted_or_failed_rerun_is_still_recorded(tmp_path, monkeypatch):
    from streamlit.runtime.scriptrunner_utils.exceptions import StopException

    log = tmp_path / "timings.jsonl"
    monkeypatch.setenv(ENV_TIMINGS, str(log))
    with pytest.raises(StopException), timed_rerun():
        raise StopException()  # what Streamlit raises in a run that a newer rerun replaced
    with pytest.raises(ValueError), timed_rerun():
        raise ValueError("a page failed")
    assert [line["outcome"] for line in lines(log)] == ["interrupted", "error"]


def test_a_page_that_calls_st_stop_is_told_from_an_interrupted_one(tmp_path, monkeypatch):
    log = tmp_path / "timings.jsonl"
    monkeypatch.setenv(ENV_TIMINGS, str(log))
    script = tmp_path / "stops.py"
    script.write_text(
        "import streamlit as st\n"
        "from app.timings import timed_rerun\n"
        "with timed_rerun() as rerun:\n"
        "    rerun.page = 'stops'\n"
        "    st.title('stops')\n"
        "    st.stop()\n"
        "    st.title('never')\n"
    )
    at = AppTest.from_file(str(script), default_timeout=60).run()
    assert [t.value for t in at.title] == ["stops"]
    (line,) = lines(log)
    assert (line["page"], line["outcome"]) == ("stops", "stop")
