"""Runs: every run the dashboard can see, side by side."""

import pandas as pd
import plotly.express as px
import streamlit as st

from app.runs import available_runs, runs_root
from app.widgets import explain, show_figure, show_table
from engine.store import Run

st.title("Runs")
choices = available_runs(kind=None)
if not choices:
    st.info("No runs yet: train one with `latent-atlas train --preset digits-vae`.")
    st.stop()

table = pd.DataFrame(
    [
        {
            "run": c.info.id,
            "where": c.key.split("/")[0],
            "state": c.info.status,
            "model": c.info.model,
            "dataset": c.info.dataset,
            "step": c.info.latest_step,
            "checkpoints": c.info.n_checkpoints,
            "test ELBO (nats)": c.info.metrics.get("test/elbo"),
            "note": c.info.reason,
        }
        for c in choices
    ]
)
show_table(table, "runs.csv", key="runs")
st.caption(f"Demo runs ship with the app; other runs come from the runs root `{runs_root()}`.")

st.subheader("Compare training curves")
readable = [c for c in choices if c.info.status != "broken"]
picked = st.multiselect(
    "Runs",
    [c.key for c in readable],
    default=[c.key for c in readable[:3]],
    format_func={c.key: c.label for c in readable}.get,
)
metric = st.selectbox(
    "Metric", ["test/elbo", "train/elbo", "train/loss", "train/kl/z", "train/grad_norm", "train/samples_per_s"]
)
frames = []
for key in picked:
    choice = next(c for c in readable if c.key == key)
    series = Run.from_dir(choice.dir, readonly=True).metrics.scalars([metric]).get(metric)
    if series is not None:
        frames.append(pd.DataFrame({"step": series[0], metric: series[1], "run": choice.label}))
if frames:
    fig = px.line(pd.concat(frames), x="step", y=metric, color="run", height=380)
    fig.update_layout(margin=dict(l=10, r=10, t=10, b=10), legend=dict(orientation="h", y=-0.25))
    show_figure(fig, "runs-compare.html", key="compare")
else:
    st.info(f"None of the picked runs logged `{metric}`.")
explain(
    "Every run writes its metrics to an SQLite file as it trains, so these curves include runs "
    "still in progress. `test/elbo` is the evidence lower bound on held-out data, in nats per "
    "example (higher is better); `train/loss` is the objective actually minimised, which for "
    "β-VAE and β-TCVAE runs includes their extra penalties, and which the hierarchical VAEs "
    "count per data dimension (as VDVAE does) and the sequence models per token."
)
