"""The "Martingale checks" page under Streamlit's AppTest, and training the neural
in-context learner from it as a separate process."""

import os
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from app.training_jobs import find_job_run, job_failure, start_training

PAGE = str(Path(__file__).resolve().parent.parent / "pages" / "martingale_checks.py")


@pytest.fixture(autouse=True)
def empty_runs_root(tmp_path, monkeypatch):
    monkeypatch.setenv("LATENT_ATLAS_RUNS_DIR", str(tmp_path / "runs"))


def small(at: AppTest) -> AppTest:
    next(w for w in at.number_input if w.label == "K replicates").set_value(100)
    next(t for t in at.toggle if t.label.startswith("Compute T3")).set_value(False)
    return at.run()


def verdicts(at: AppTest) -> dict[str, str]:
    table = at.dataframe[0].value
    return {s.split(":")[0].split(",")[0].split(" as")[0]: v for s, v in zip(table["statistic"], table["verdict"])}


def test_exact_bayes_passes_and_a_bias_is_caught_by_t1():
    at = small(AppTest.from_file(PAGE, default_timeout=300).run())
    assert not at.exception, [e.value for e in at.exception]
    assert set(verdicts(at).values()) == {"consistent with Bayes"}
    assert at.success and len(at.get("plotly_chart")) == 3  # fan, martingale posterior, T1/T2 grid
    next(s for s in at.selectbox if s.label == "Predictor").set_value("biased").run()
    next(s for s in at.selectbox if s.label == "m (imagined)").set_value("2n").run()
    assert not at.exception, [e.value for e in at.exception]
    assert verdicts(at)["T1"] == "violation"
    assert at.error  # the page says the predictions are not Bayesian


def test_neural_learner_demo_is_offered_and_checked():
    at = small(AppTest.from_file(PAGE, default_timeout=300).run())
    next(s for s in at.selectbox if s.label == "Predictor").set_value("neural").run()
    assert not at.exception, [e.value for e in at.exception]
    run = next(s for s in at.selectbox if s.label == "Run")
    assert "bernoulli-icl" in str(run.value.label)
    assert len(at.dataframe[0].value) == 4  # T1, both forms of T2, T3


def test_training_started_from_the_page_runs_in_its_own_process(tmp_path):
    token = start_training("bernoulli-icl", {"train.steps": 30, "train.eval_every": 30, "train.checkpoint_every": 30})
    deadline = time.time() + 240
    run, sessions = None, set()
    while time.time() < deadline:
        assert job_failure(token) is None
        run = find_job_run(token)
        if run is not None and run.status.pid:
            try:  # while it runs: a finished child is reaped and has no session any more
                sessions.add(os.getsid(run.status.pid))
            except ProcessLookupError:
                pass
        if run is not None and run.status.effective().state in ("finished", "failed", "interrupted"):
            break
        time.sleep(0.2)
    assert run is not None and run.status.effective().state == "finished", run and run.status.effective()
    assert run.metrics.max_step() == 30 and run.metrics.latest("train/loss") is not None
    assert sessions and os.getsid(0) not in sessions  # its own session: closing the app does not stop it
