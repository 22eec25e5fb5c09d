"""The `latent-atlas` command line, run as a user would run it."""

import json
import subprocess
import sys

import pytest


def cli(*args, runs_dir):
    return subprocess.run(
        [sys.executable, "-m", "engine.cli", "--runs-dir", str(runs_dir), *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize("command", [[], ["train"], ["runs"], ["eval"], ["publish"], ["app"]])
def test_every_command_has_help(tmp_path, command):
    out = cli(*command, "--help", runs_dir=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "usage: latent-atlas" in out.stdout


def test_train_runs_eval_round_trip(tmp_path):
    out = cli(
        "train",
        "--preset",
        "digits-vae",
        "--steps",
        "120",
        "--quiet",
        "--set",
        "train.eval_every=60",
        "--set",
        "train.checkpoint_every=60",
        "--threads",
        "1",
        runs_dir=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    assert "finished" in out.stdout
    assert "threads: 1 (--threads: requested; OpenMP's default wait)" in out.stderr  # the choice is logged
    listing = json.loads(cli("runs", "--json", runs_dir=tmp_path).stdout)
    assert len(listing) == 1 and listing[0]["status"] == "finished" and listing[0]["latest_step"] == 120
    run_id = listing[0]["id"]
    table = cli("runs", runs_dir=tmp_path).stdout
    assert run_id in table and "digits" in table
    result = cli("eval", run_id, "--k", "50", "--n", "100", "--json", runs_dir=tmp_path)
    assert result.returncode == 0, result.stderr
    bounds = json.loads(result.stdout)
    assert bounds["step"] == 120 and bounds["n"] == 100
    assert bounds["elbo"] < bounds["iwae"] < 0
    from engine.store import RunStore

    _, used = RunStore(tmp_path).open_run(run_id).metrics.scalars(["train/threads"])["train/threads"]
    assert list(used) == [1.0] * len(used) and len(used) > 0  # and the run records what it ran on

    published = cli("publish", run_id, "--to", str(tmp_path / "demo"), "--name", "demo", runs_dir=tmp_path)
    assert published.returncode == 0, published.stderr
    copy_dir = next((tmp_path / "demo").iterdir())
    again = json.loads(cli("eval", str(copy_dir), "--k", "50", "--n", "100", "--json", runs_dir=tmp_path).stdout)
    assert again["elbo"] == bounds["elbo"] and again["iwae"] == bounds["iwae"]  # same weights, same seed
    original_size = sum(f.stat().st_size for f in (tmp_path / run_id / "checkpoints").iterdir())
    copy_size = sum(f.stat().st_size for f in (copy_dir / "checkpoints").iterdir())
    assert copy_size < original_size / 2  # weights only: no optimiser state, one checkpoint

    every = cli("publish", run_id, "--to", str(tmp_path / "all"), "--all-checkpoints", runs_dir=tmp_path)
    assert every.returncode == 0, every.stderr
    kept = sorted(p.name for p in (next((tmp_path / "all").iterdir()) / "checkpoints").glob("*.safetensors"))
    assert kept == sorted(p.name for p in (tmp_path / run_id / "checkpoints").glob("*.safetensors"))
    assert len(kept) == 2  # steps 60 and 120


def test_train_with_explicit_options(tmp_path):
    out = cli(
        "train",
        "--dataset",
        "digits",
        "--latent-dim",
        "3",
        "--objective",
        "beta-tcvae",
        "--beta",
        "4",
        "--steps",
        "30",
        "--batch-size",
        "32",
        "--quiet",
        "--set",
        "model.hidden=[64]",
        runs_dir=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    run_dir = next(tmp_path.iterdir())
    config = json.loads((run_dir / "config.json").read_text())
    assert config["model"]["latent_dim"] == 3
    assert config["model"]["hidden"] == [64]
    assert config["model"]["objective"] == "beta-tcvae"
    assert config["train"]["batch_size"] == 32


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "--dataset", "no-such-data", "--steps", "5"], "no-such-data"),
        (["train", "--model", "no-such-model", "--dataset", "digits"], "unknown model family"),
        (["train", "--dataset", "digits", "--latent-dim", "1000000000"], "latent_dim"),
        (["train", "--dataset", "digits", "--set", "nonsense"], "SECTION.KEY=VALUE"),
        (["eval", "missing-run"], "No run"),
        (["eval", "no/../../such-run"], "run id"),
    ],
)
def test_bad_input_exits_2_with_a_message(tmp_path, args, message):
    out = cli(*args, runs_dir=tmp_path)
    assert out.returncode == 2
    assert message in out.stderr
    assert "Traceback" not in out.stderr


def test_the_dashboard_binds_to_localhost_with_cross_site_protection_an_upload_cap_and_no_file_watcher(
    tmp_path, monkeypatch
):
    """`latent-atlas app` hands these settings to Streamlit (captured instead of exec'd)."""
    from engine import cli as cli_module
    from engine.limits import MAX_UPLOAD_MB

    started = []
    monkeypatch.setattr(cli_module.os, "execve", lambda path, args, env: started.append((args, env)))
    cli_module.main(["--runs-dir", str(tmp_path), "app", "--headless", "--threads", "1"])
    [(args, env)] = started
    assert env["LATENT_ATLAS_THREADS"] == "1"  # the server's threads and those of the jobs it starts
    settings = dict(zip(args[5::2], args[6::2]))  # python -m streamlit run MAIN, then --name value pairs
    assert settings["--server.address"] == "127.0.0.1"
    assert settings["--server.enableXsrfProtection"] == "true"
    assert settings["--server.maxUploadSize"] == str(MAX_UPLOAD_MB) == "200"
    assert settings["--server.fileWatcherType"] == "none"  # no per-session scans of sys.modules

    cli_module.main(["--runs-dir", str(tmp_path), "app", "--headless", "--watch"])
    args, _ = started[1]
    assert dict(zip(args[5::2], args[6::2]))["--server.fileWatcherType"] == "auto"


def test_the_app_launcher_starts_the_server_without_importing_torch(tmp_path):
    """`latent-atlas app` only starts the server; importing torch first (a second or more)
    would delay the dashboard for nothing: the page scripts load what they need. The probe
    runs the launcher with os.execve replaced by a report of what was imported by then."""
    probe = (
        "import os, sys\n"
        "def report(path, argv, env):\n"
        "    print(sorted(m for m in ('torch', 'numpy', 'pandas', 'streamlit') if m in sys.modules))\n"
        "    print(argv[argv.index('--server.maxUploadSize') + 1])\n"
        "    sys.exit(0)\n"
        "os.execve = report\n"
        "from engine.cli import main\n"
        f"main(['--runs-dir', {str(tmp_path)!r}, 'app', '--port', '8599'])\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    imported, upload_mb = out.stdout.splitlines()[-2:]  # after the launcher's own line
    assert imported == "[]" and upload_mb == "200", out.stdout
