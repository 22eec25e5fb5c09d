"""Bounds & activity: how tight the ELBO is, and which latents carry information."""

import pandas as pd
import plotly.graph_objects as go
import streamlit as st
import torch

from app.state import activity_table, affordable, current_model, elbo_kls, hvae_layer_statistics, importance_pool
from app.widgets import explain, show_figure, show_table
from engine.diagnostics.activity import ACTIVE_THRESHOLD
from engine.inference.importance import bound_curve, effective_sample_size, normalized_weights
from engine.models.hvae import HVAE

st.title("Bounds & activity")
sel, loaded = current_model()  # shows an error and stops if the run cannot be loaded
run_dir = str(sel.choice.dir)


def _layer_kls() -> tuple[list[str], list[float]]:
    stats = hvae_layer_statistics(run_dir, sel.step)
    return stats.names, [float(k) for k in stats.kl]


st.subheader("The importance-weighted bound against k")
c1, c2, c3 = st.columns(3)
# defaults sized to this model's speed: about 100,000 scored samples for a small VAE, fewer for a deep HVAE
n = c1.slider("Test examples", 20, 500, affordable(run_dir, sel.step, 4.0, [20, 40, 100], per_choice=1000), 20)
pool_choices = [100, 500, 1000, 2000]
pool = c2.select_slider("Importance samples drawn", pool_choices,
                        affordable(run_dir, sel.step, 4.0, pool_choices[:3], per_choice=n))  # fmt: skip
seed = c3.number_input("Seed", 0, 2**31 - 1, 0)
log_w = torch.from_numpy(importance_pool(run_dir, sel.step, n, pool, int(seed)))  # (pool, n)
ks = [k for k in (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000) if k <= pool]
curve = bound_curve(log_w, ks).numpy()
fig = go.Figure(go.Scatter(x=ks, y=curve, mode="lines+markers", name="L^k"))
fig.update_layout(xaxis_type="log", xaxis_title="k (importance samples)", yaxis_title="bound (nats per example)",
                  height=320, margin=dict(l=10, r=10, t=10, b=10))  # fmt: skip
show_figure(fig, "iwae-bound-vs-k.html", key="curve")
explain(
    "L^k = E log (1/k) Σ w_i with w_i = p(x, z_i)/q(z_i|x) and z_i drawn from the encoder. "
    "L^1 is the ELBO; the bound can only rise with k and tends to log p(x) (Burda et al., 2016, "
    "Thm 1). How much it rises says how far the encoder's Gaussian is from the true posterior. "
    f"All points reuse one pool of {pool} draws per example, cut into blocks of k."
)

st.subheader("Importance weights of one input")
i = st.slider("Test example", 0, log_w.shape[1] - 1, 0)
w = normalized_weights(log_w[:, i : i + 1])[:, 0].numpy()
ess = effective_sample_size(log_w[:, i : i + 1]).item()
c1, c2 = st.columns([2, 1])
with c1:
    hist = go.Figure(go.Histogram(x=w * len(w), nbinsx=60))
    hist.update_layout(xaxis_title="normalised weight × k (1 = average)", yaxis_title="count", height=280,
                       margin=dict(l=10, r=10, t=10, b=10))  # fmt: skip
    show_figure(hist, f"weights-{i}.html", key="hist")
with c2:
    st.metric("Effective sample size", f"{ess:.0f} of {len(w)}")
    st.metric("Largest normalised weight", f"{w.max():.3f}")
explain(
    "ESS = 1 / Σ w̃_i² counts how many equally weighted draws the weighted sample is worth. Close "
    "to k: the encoder matches the posterior well. Much smaller: a few draws dominate and the "
    "encoder misses part of the posterior. (ESS is not in the seed thesis; it is the standard "
    "definition, added here.)"
)

st.subheader("Latent activity")
rows = []
groups = [g.name for g in loaded.model.latent_groups]
# a hierarchy's layers have conditional priors, so their KL is not the one to N(0, I)
if isinstance(loaded.model, HVAE):
    layer_kl = dict(zip(*_layer_kls()))
elif any(g.kind == "layer" for g in loaded.model.latent_groups):
    layer_kl = elbo_kls(run_dir, sel.step)
else:
    layer_kl = {}
by_layer = bool(layer_kl) and set(groups) <= set(layer_kl)
for name, stats in activity_table(run_dir, sel.step).items():
    active = stats["mean_variance"] > ACTIVE_THRESHOLD
    kl = layer_kl[name] if by_layer else float(stats["kl"].sum())
    rows.append({"group": name, "dimensions": len(active), "active": int(active.sum()),
                 "collapsed fraction": float(1 - active.mean()), "KL (nats)": kl})  # fmt: skip
show_table(pd.DataFrame(rows), "activity.csv", key="activity")
explain(
    f"A latent dimension is active when Var_x E[z_d|x] > {ACTIVE_THRESHOLD} (Burda et al., 2016): "
    "its posterior mean moves with the input. Collapsed dimensions carry no information about x. "
    "The KL column is the total over the group, averaged over test inputs"
    + (" (each layer's KL to its conditional prior, at a posterior draw)." if by_layer else ".")
)
