"""Train: start a run in a background process, follow any run live (whoever started it),
stop or resume it, and compare runs side by side."""

from __future__ import annotations

import json

import pandas as pd
import plotly.express as px
import streamlit as st

from app.runs import available_runs, runs_root
from app.training_jobs import FORCE_GRACE_S, force_stop, job_failure, start_training, stop_run
from app.widgets import explain
from engine.data import dataset_info, list_datasets
from engine.errors import AtlasError
from engine.store import Run
from engine.training import RunSpec
from engine.training.presets import PRESETS

JOB_KEY = "train_job"  # the token of the job this session started last
FOLLOW_KEY = "train_follow"  # the run key the live view follows
ROW_HEIGHT = 300
REFRESH_S = 3

st.title("Train")


# -- start a run ------------------------------------------------------------------------------------
def needs_user_file(preset: dict) -> bool:
    return preset["data"]["name"].startswith("file:USER_PATH")


def start_form() -> None:
    families = sorted({p["family"] for p in PRESETS.values()})
    left, right = st.columns(2)
    family = left.selectbox(
        "Model family",
        families,
        index=families.index("vae"),
        key="train-family",
        help="vae: VAE, beta-VAE and beta-TCVAE; mfcvae: multi-facet clustering VAE; hvae: "
        "VDVAE-style hierarchical VAE; hhvaem: hierarchical VAE with HMC for tables; "
        "icl: an in-context learner for the martingale checks",
    )
    names = [n for n, p in PRESETS.items() if p["family"] == family]
    name = right.selectbox("Preset", names, key="train-preset")
    preset = PRESETS[name]
    st.caption(preset["about"])
    own = preset["data"]["name"]
    c1, c2, c3, c4, c5 = st.columns(5)
    if needs_user_file(preset):
        path = c1.text_input(
            "Data file or folder",
            placeholder="path on the server",
            key="train-path",
            help="This recipe reproduces a paper setting on data you bring (see the README).",
        )
        dataset = f"file:{path}" if path else None
    else:
        same_kind = [d for d in list_datasets() if dataset_info(d).kind == dataset_info(own).kind]
        dataset = c1.selectbox(
            "Dataset",
            same_kind,
            index=same_kind.index(own),
            key=f"train-data-{name}",
            help="Another dataset of the same kind; the preset's data options then no longer apply (its defaults do).",
        )
    train = preset["train"]
    steps = c2.number_input("Steps", 10, 1_000_000, int(train["steps"]), step=100, key=f"train-steps-{name}")
    batch = c3.number_input("Batch size", 1, 65_536, int(train["batch_size"]), key=f"train-batch-{name}")
    lr = c4.number_input("Learning rate", 1e-6, 1.0, float(train["lr"]), format="%.5f", key=f"train-lr-{name}")
    seed = c5.number_input("Seed", 0, 2**31 - 1, int(train.get("seed", 0)), key=f"train-seed-{name}")
    every = st.number_input(
        "Evaluate and draw a sample grid every N steps",
        10,
        1_000_000,
        int(min(train.get("eval_every", 500), steps)),
        key=f"train-every-{name}",
    )
    with st.expander("Model hyperparameters"):
        table = pd.DataFrame(
            {"setting": list(preset["model"]), "value": [json.dumps(v) for v in preset["model"].values()]}
        )
        edited = st.data_editor(
            table,
            key=f"train-model-{name}",
            hide_index=True,
            num_rows="dynamic",
            width="stretch",
            column_config={"value": st.column_config.TextColumn(help="a JSON value")},
        )
        st.caption(
            "Values are JSON: numbers, true/false, quoted strings, lists like [6, 3]. Add a row for a "
            "setting the preset leaves at its default."
        )
    if not st.button("Start training", type="primary"):
        return
    try:
        settings = model_settings(edited, preset["model"])
        settings.update(
            {
                "train.steps": int(steps),
                "train.batch_size": int(batch),
                "train.lr": float(lr),
                "train.seed": int(seed),
                "train.eval_every": int(every),
            }
        )
        if dataset is None:
            raise AtlasError("this preset needs your copy of the data: give the path of its file or folder")
        # check the recipe here, so that a mistake is reported now and not by a dead process
        RunSpec.from_preset(name, {"train": {k[6:]: v for k, v in settings.items() if k.startswith("train.")}})
        token = start_training(name, settings, dataset=None if dataset == own else dataset)
    except AtlasError as err:
        st.error(f"Not started: {err}")
        return
    st.session_state[JOB_KEY] = token
    st.session_state[FOLLOW_KEY] = None  # follow the new run as soon as it exists
    st.success(f"Started `{name}` in a background process (job {token}); it keeps training if you close the page.")


def model_settings(edited: pd.DataFrame, original: dict) -> dict[str, object]:
    """The model rows that differ from the preset, as --set assignments."""
    out = {}
    for key, text in zip(edited["setting"], edited["value"], strict=True):
        if not isinstance(key, str) or not key.strip():
            continue
        try:
            value = json.loads(text) if isinstance(text, str) else text
        except json.JSONDecodeError:
            raise AtlasError(f'model setting {key!r}: {text!r} is not a JSON value (quote strings: "mlp")') from None
        if key not in original or original[key] != value:
            out[f"model.{key.strip()}"] = value
    return out


with st.expander("Start a run", expanded=not any(c.key.startswith("runs/") for c in available_runs(kind=None))):
    start_form()

# -- follow a run -----------------------------------------------------------------------------------
st.subheader("Follow a run")
choices = [c for c in available_runs(kind=None) if c.info.status != "broken"]
if not choices:
    st.info("No runs yet: start one above, or with `latent-atlas train --preset digits-vae`; it appears here live.")
    st.stop()
keys = [c.key for c in choices]
token = st.session_state.get(JOB_KEY)
if st.session_state.get(FOLLOW_KEY) not in keys:
    fresh = [c.key for c in choices if token and token in c.key]
    running = [c.key for c in choices if c.info.status == "running"]
    st.session_state[FOLLOW_KEY] = (fresh or running or [k for k in keys if k.startswith("runs/")] or keys)[0]
if token and not any(token in k for k in keys):
    failure = job_failure(token)
    if failure:
        st.error(f"The training process stopped before it started its run:\n\n```\n{failure}\n```")
    else:
        st.info("Starting the training process… its run appears here within a few seconds.")
        st.button("Refresh")
key = st.selectbox(
    "Run",
    keys,
    key=FOLLOW_KEY,
    format_func={c.key: c.label for c in choices}.get,
    help="Every run in the runs root, whoever started it: this page, the command line, torchrun or "
    "a script using engine.store.RunLogger.",
)
choice = choices[keys.index(key)]


MAX_CURVE_POINTS = 300  # per curve: a long run's curves stay cheap to send and draw every refresh


def thinned(steps, values) -> tuple:
    """At most MAX_CURVE_POINTS evenly spaced points of a curve, always with its last one."""
    if len(steps) <= MAX_CURVE_POINTS:
        return steps, values
    keep = sorted({*range(0, len(steps), -(-len(steps) // MAX_CURVE_POINTS)), len(steps) - 1})
    return steps[keep], values[keep]


def curve_figure(series: dict, names: list[str], title: str, log_y: bool = False):
    frames = [
        pd.DataFrame(dict(zip(("step", "value"), thinned(*series[n]), strict=True), metric=n))
        for n in names
        if n in series
    ]
    if not frames:
        return None
    fig = px.line(
        pd.concat(frames),
        x="step",
        y="value",
        color="metric",
        height=ROW_HEIGHT,
        log_y=log_y,
        render_mode="svg",
        title=title,
    )
    fig.update_layout(margin=dict(l=10, r=10, t=40, b=10), legend_title_text="", legend=dict(orientation="h", y=-0.25))
    return fig


def run_controls(run: Run, state: str) -> None:
    """Stop a running run; resume one that has stopped, to its planned or a new step count."""
    mine = key.startswith("runs/")
    if state == "running":
        left, right = st.columns([1, 3])
        if left.button("Stop", key=f"stop-{run.id}", help="Checkpoint and stop at the next logging step"):
            try:
                st.toast(stop_run(run))
            except AtlasError as err:
                st.error(str(err))
        if run.stop_request() is not None:
            right.caption("A stop has been requested; the run checkpoints and stops at its next logging step.")
            help_text = f"Interrupt the process (Ctrl-C); terminate it if it still runs {FORCE_GRACE_S:g} s later"
            if right.button("Force stop", key=f"force-{run.id}", help=help_text):
                try:
                    with st.spinner("Stopping the process…"):
                        st.toast(force_stop(run))
                except AtlasError as err:
                    st.error(str(err))
    elif mine and state in ("interrupted", "finished", "failed") and run.latest_checkpoint() is not None:
        planned = int(run.config.get("train", {}).get("steps", 1000))
        done = run.latest_checkpoint().step
        left, mid = st.columns([1, 1])
        target = left.number_input(
            "Train until step",
            done + 1,
            10_000_000,
            max(planned, done + 1) if done < planned else done + planned // 2,
            key=f"resume-steps-{run.id}",
        )
        mid.write("")
        if mid.button("Resume", key=f"resume-{run.id}", help=f"Continue from the checkpoint at step {done:,}"):
            try:
                st.session_state[JOB_KEY] = start_training(resume=run.id, settings={"train.steps": int(target)})
                st.toast(f"Resuming {run.id} from step {done:,} in a background process.")
            except AtlasError as err:
                st.error(str(err))


live = st.toggle(f"Live (refresh every {REFRESH_S} s)", value=True, key="train-live")


@st.fragment(run_every=REFRESH_S if live else None)
def follow() -> None:
    try:
        run = Run.from_dir(choice.dir, readonly=True)
        status = run.status.effective()
    except AtlasError as err:
        st.error(str(err))
        return
    total = run.config.get("train", {}).get("steps")
    batch = run.config.get("train", {}).get("batch_size", 1)
    latest = run.metrics.latest_all()
    step = run.metrics.max_step() or 0
    speed = latest.get("train/samples_per_s")
    cols = st.columns(6)
    cols[0].metric("State", status.state)
    cols[1].metric(f"Step (of {total:,})" if total else "Step", f"{step:,}")
    threads = latest.get("train/threads")  # the CPU threads the run chose (engine.threads)
    cols[2].metric(
        "Samples / s",
        f"{speed[1]:,.0f}" if speed else "–",
        help=f"on {threads[1]:.0f} CPU thread{'s' * (threads[1] != 1)}" if threads else None,
    )
    eta = (total - step) * batch / max(speed[1], 1e-9) if speed and total and status.state == "running" else None
    cols[3].metric("ETA", "–" if eta is None else f"{eta // 60:.0f} min {eta % 60:02.0f} s")
    cols[4].metric("Skipped updates", f"{latest['train/skipped'][1]:,.0f}" if "train/skipped" in latest else "–")
    cols[5].metric("Gradient norm", f"{latest['train/grad_norm'][1]:,.3g}" if "train/grad_norm" in latest else "–")
    if total:
        st.progress(min(1.0, step / total))
    if status.reason:
        st.caption(status.reason)
    run_controls(run, status.state)
    names = sorted(latest)
    series = run.metrics.scalars(names)
    if not series:
        st.info("No metrics logged yet.")
        return
    kl = [n for n in names if n.startswith("train/kl/")]
    panels = [
        # the objective has its own scale: per data dimension for the HVAEs (as VDVAE), per token for ICL
        ("Training objective (train/loss)", ["train/loss"], False),
        ("ELBO (nats per example)", ["train/elbo", "test/elbo", "train/recon"], False),
        ("KL per latent group (nats)", kl, len(kl) > 1),
        ("Gradient norm and skipped updates", ["train/grad_norm", "train/skipped"], True),
        ("Throughput (samples / s)", ["train/samples_per_s"], False),
    ]
    others = [n for n in names if n.startswith("test/") and n != "test/elbo"]
    if others:
        panels.append(("Test metrics", others, False))
    left, right = st.columns([2, 1])
    with left:
        grid = st.columns(2)
        for i, (title, wanted, log_y) in enumerate(panels):
            fig = curve_figure(series, wanted, title, log_y)
            if fig is not None:
                with grid[i % 2]:
                    st.plotly_chart(fig, width="stretch", key=f"curve-{i}")
    with right:
        images = run.metrics.images("samples")
        if images:
            img_step, png = images[-1]
            st.image(png, caption=f"Prior samples at step {img_step:,}", width="stretch", output_format="PNG")
        else:
            st.caption("Sample grids appear here at every evaluation (image models).")


follow()

# -- compare runs -----------------------------------------------------------------------------------
st.subheader("Compare runs")
labels = {c.key: c.label for c in choices}
picked = st.multiselect("Runs", keys, default=[key], format_func=labels.get, key="train-compare")
if picked:
    runs = {k: Run.from_dir(choices[keys.index(k)].dir, readonly=True) for k in picked}
    shared = sorted(set.intersection(*(set(r.metrics.scalar_names()) for r in runs.values())))
    if not shared:
        st.info("These runs have no metric in common.")
    else:
        default = next((m for m in ("test/elbo", "train/loss", "test/nll") if m in shared), shared[0])
        metric = st.selectbox("Metric", shared, index=shared.index(default), key="train-compare-metric")
        frames, rows = [], []
        for k, run in runs.items():
            (steps, values) = run.metrics.scalars([metric])[metric]
            frames.append(pd.DataFrame({"step": steps, "value": values, "run": labels[k]}))
            cfg = run.config
            rows.append(
                {
                    "run": labels[k],
                    "state": run.status.effective().state,
                    "preset": cfg.get("preset") or "–",
                    "dataset": cfg.get("data", {}).get("name"),
                    "steps": run.metrics.max_step(),
                    "lr": cfg.get("train", {}).get("lr"),
                    "batch": cfg.get("train", {}).get("batch_size"),
                    f"last {metric}": values[-1] if len(values) else None,
                }
            )
        fig = px.line(pd.concat(frames), x="step", y="value", color="run", height=360, render_mode="svg")
        fig.update_layout(margin=dict(l=10, r=10, t=20, b=10), yaxis_title=metric, legend_title_text="")
        st.plotly_chart(fig, width="stretch", key="compare-curves")
        st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")

explain(
    "Training runs in its own process, which writes metrics, sample grids and checkpoints to the run's "
    "directory as it goes; this page only reads them, every 3 s while *Live* is on. So closing the browser "
    "does not stop a run, the server stays responsive while it trains, and a run started from the command line, "
    "under torchrun or by any script using `engine.store.RunLogger` shows up and updates in the same way. "
    "*Stop* asks the run to checkpoint and stop at its next logging step (a file in its directory, so it also "
    "reaches a run on another machine that shares the runs root); *Resume* continues from the latest "
    "checkpoint, exactly where an uninterrupted run would have been. `skipped` counts updates dropped because "
    "the loss or gradient was not finite or the gradient norm exceeded the skip threshold."
)
st.caption(f"Runs root: `{runs_root()}`")
