"""Training monitor: a run's curves and samples, refreshed live while it trains."""

import pandas as pd
import plotly.express as px
import streamlit as st

from app.runs import available_runs
from app.state import RUN_KEY
from app.widgets import explain
from engine.store import Run

st.title("Training monitor")
choices = [c for c in available_runs(kind=None) if c.info.status != "broken"]
if not choices:
    st.info("No runs yet: start one with `latent-atlas train --preset digits-vae`; it appears here live.")
    st.stop()
keys = [c.key for c in choices]
default = keys.index(st.session_state[RUN_KEY]) if st.session_state.get(RUN_KEY) in keys else 0
key = st.selectbox("Run", keys, index=default, format_func={c.key: c.label for c in choices}.get)
choice = choices[keys.index(key)]
live = st.toggle("Refresh every 3 s", value=choice.info.status == "running")
CURVES = ["train/loss", "train/elbo", "test/elbo", "test/nll", "test/bayes_nll", "train/recon", "train/kl/z",
          "train/tc", "train/grad_norm",
          "train/samples_per_s", "train/skipped"]  # fmt: skip


@st.fragment(run_every=3 if live else None)
def monitor() -> None:
    run = Run.from_dir(choice.dir, readonly=True)
    status = run.status.effective()
    spec_steps = run.config.get("train", {}).get("steps")
    step = run.metrics.max_step() or 0
    speed = run.metrics.latest("train/samples_per_s")
    batch = run.config.get("train", {}).get("batch_size", 1)
    c1, c2, c3, c4 = st.columns(4)
    c1.metric("State", status.state)
    c2.metric("Step", f"{step:,}" + (f" / {spec_steps:,}" if spec_steps else ""))
    c3.metric("Samples / s", f"{speed[1]:,.0f}" if speed else "–")
    if speed and spec_steps and status.state == "running":
        c4.metric("ETA", f"{max(0, spec_steps - step) * batch / max(speed[1], 1e-9):,.0f} s")
    if status.reason:
        st.caption(status.reason)
    series = run.metrics.scalars([c for c in CURVES])
    if not series:
        st.info("No metrics logged yet.")
        return
    frames = [pd.DataFrame({"step": s, "value": v, "metric": name}) for name, (s, v) in series.items()]
    fig = px.line(pd.concat(frames), x="step", y="value", facet_col="metric", facet_col_wrap=3, height=520)
    fig.update_yaxes(matches=None, title=None)
    fig.for_each_annotation(lambda a: a.update(text=a.text.split("=")[-1]))
    fig.update_layout(margin=dict(l=10, r=10, t=30, b=10))
    st.plotly_chart(fig, width="stretch", key="monitor-curves")
    images = run.metrics.images("samples")
    if images:
        img_step, png = images[-1]
        st.image(png, caption=f"Prior samples at step {img_step:,}", width=360, output_format="PNG")


monitor()
explain(
    "Training processes write their metrics to the run's SQLite store as they go (the dashboard "
    "only reads), so a run started from the command line, or by any script using "
    "`engine.store.RunLogger`, shows up here and updates live. `skipped` counts updates dropped "
    "because the loss or gradient was not finite."
)
