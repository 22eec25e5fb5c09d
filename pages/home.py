"""Home: what Latent Atlas is for, a card for the selected model, and where to go next."""

import pandas as pd
import plotly.express as px
import streamlit as st

from app.navigation import PAGES
from app.state import affordable, bounds, current_model
from app.widgets import explain, plain
from engine.models import PLUGINS

st.title("Latent Atlas")
st.markdown(
    "A generative model compresses each input into a few **latent** numbers and learns to "
    "turn latents back into data. Latent Atlas lets you look at what those numbers mean: "
    "sample from the model, move one latent at a time, and check how well it explains held-out data. "
    "Pick a model in the sidebar: the demo models were trained on small embedded datasets "
    "and load in seconds."
)

for error in PLUGINS.errors:  # an installed plugin that could not be loaded: its families are missing
    st.warning(f"A model-family plugin was skipped: {plain(error)}")

sel, loaded = current_model()
model, spec = loaded.model, loaded.spec
cfg = model.config

st.subheader("The selected model")
left, right = st.columns([3, 2])
with left:
    n_params = sum(p.numel() for p in model.parameters())
    groups = ", ".join(f"`{g.name}` ({g.kind}, {g.size} dims)" for g in model.latent_groups)
    options = ", ".join(f"{k}={v}" for k, v in spec.data["options"].items())
    st.markdown(
        f"- **Dataset:** `{spec.data['name']}`{f' ({options})' if options else ''}, "
        f"examples of shape {tuple(cfg.input_shape)}\n"
        f"- **Model:** {spec.family.upper()}: {cfg.summary()}\n"
        f"- **Latent groups:** {groups}\n"
        f"- **Parameters:** {n_params:,}\n"
        f"- **Checkpoint:** step {loaded.step:,} ({loaded.weights} weights) of run `{sel.choice.info.id}`"
    )
    k = affordable(str(sel.choice.dir), sel.step, 4.0, [10, 20, 50, 100], per_choice=200)
    b = bounds(str(sel.choice.dir), sel.step, k=k)
    c1, c2 = st.columns(2)
    c1.metric("Test ELBO", f"{b['elbo']:.2f} nats")
    c2.metric(f"Test IWAE bound (k = {b['k']})", f"{b['iwae']:.2f} nats", delta=f"{b['iwae'] - b['elbo']:+.2f} vs ELBO")
    explain(
        "Both numbers are lower bounds on the log-likelihood log p(x) of held-out examples, in nats "
        f"per example, averaged over {b['n']} test examples; higher is better. The ELBO uses one "
        "sample from the encoder; the importance-weighted bound (IWAE) averages k samples inside "
        "the logarithm and is always at least as tight (Burda et al., 2016)."
    )
with right:
    curves = loaded.run.metrics.scalars(["train/elbo", "test/elbo"])
    frames = [
        pd.DataFrame({"step": s, "ELBO (nats)": v, "curve": name.split("/")[0]}) for name, (s, v) in curves.items()
    ]
    if frames:
        fig = px.line(pd.concat(frames), x="step", y="ELBO (nats)", color="curve", height=300, title="Training curve")
        fig.update_layout(margin=dict(l=10, r=10, t=40, b=10), legend_title_text="")
        st.plotly_chart(fig, width="stretch")
    else:
        st.caption("This run logged no metrics.")

st.subheader("Where to go")
for spec in PAGES[1:]:
    col_a, col_b = st.columns([1, 3])
    col_a.page_link(spec.page(), label=spec.title, icon=spec.icon)
    col_b.markdown(spec.question)
