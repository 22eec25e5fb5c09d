"""Home: what Latent Atlas is for, and the runs it can show."""

import pandas as pd
import streamlit as st

from app.runs import all_runs, runs_root
from engine.store import Run

st.title("Latent Atlas")
st.markdown(
    "Look inside deep generative models: what each latent encodes, how samples change as "
    "a latent moves, and whether a model's bounds and diagnostics hold up. "
    "Models come from the demo checkpoints shipped with the app and from every run in "
    f"the runs root (`{runs_root()}`)."
)

infos = all_runs()
if not infos:
    st.info("No runs yet. Train one with `latent-atlas train --preset digits-vae`.")
    st.stop()

table = pd.DataFrame(
    [
        {
            "run": i.id,
            "state": i.status,
            "model": i.model,
            "dataset": i.dataset,
            "step": i.latest_step,
            "test ELBO (nats)": i.metrics.get("test/elbo"),
        }
        for i in infos
    ]
)
st.dataframe(table, hide_index=True, use_container_width=True)

choice = st.selectbox("Run", [i.id for i in infos])
info = next(i for i in infos if i.id == choice)
if info.status == "broken":
    st.error(f"This run cannot be read: {info.reason}")
    st.stop()
run = Run.from_dir(info.dir, readonly=True)
left, right = st.columns(2)
with left:
    curves = run.metrics.scalars(["train/elbo", "test/elbo"])
    frames = [pd.DataFrame({"step": steps, "value": values, "metric": name}) for name, (steps, values) in curves.items()]
    if frames:
        st.subheader("Training curve")
        st.line_chart(pd.concat(frames), x="step", y="value", color="metric")
with right:
    images = run.metrics.images("samples")
    if images:
        step, png = images[-1]
        st.subheader(f"Prior samples at step {step}")
        st.image(png, width=320)
