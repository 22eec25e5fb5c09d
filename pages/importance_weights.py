"""Importance weights: the IWAE bound against k, the weights of one input and their
effective sample size, and posterior samples by sampling-importance-resampling."""

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st
import torch
from plotly.subplots import make_subplots

from app import links
from app.runs import available_runs
from app.state import affordable, current_model, importance_pool, load_data, load_model, td_bound_terms, training_k
from app.widgets import explain, show_figure, show_image, show_table
from engine.images import labelled_rows
from engine.inference.importance import (
    SIRDraws,
    bound_band,
    effective_sample_size,
    most_correlated_pair,
    normalized_weights,
    running_log_mean_weight,
    sir_draws,
)
from engine.models.base import model_device
from engine.models.latents import split_latents
from engine.models.tdvae import TDVAE
from engine.projection.maps import pca_basis

KS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)
POOLS = [100, 500, 1000, 2000, 5000]

st.title("Importance weights")
sel, loaded = current_model()
run_dir = str(sel.choice.dir)
model = loaded.model
data = load_data(run_dir, "test")


@st.cache_data(max_entries=16, show_spinner="Resampling…")
def cached_sir_draws(run_dir: str, step: int | None, index: int, k: int, n: int, seed: int) -> SIRDraws:
    """SIR for one test input: k proposals, n resamples, flattened over latent groups."""
    model = load_model(run_dir, step).model
    x = load_data(run_dir, "test").batch(torch.tensor([index])).to(model_device(model))
    with torch.no_grad():
        return sir_draws(model, x, k, n, torch.Generator().manual_seed(seed))


# -- the bound against k ------------------------------------------------------------------------
st.subheader("The importance-weighted bound against k")
c1, c2, c3 = st.columns(3)
# defaults sized to this model's speed: about 100,000 scored samples for a small VAE, fewer for a deep HVAE
n = c1.slider("Test examples", 10, 500, affordable(run_dir, sel.step, 4.0, [10, 20, 40, 100], per_choice=2000), 10)
pool = c2.select_slider(
    "Importance samples per example (K)", POOLS, affordable(run_dir, sel.step, 4.0, POOLS, per_choice=n)
)
seed = int(c3.number_input("Seed", 0, 2**31 - 1, 0))
log_w = torch.from_numpy(importance_pool(run_dir, sel.step, n, pool, seed))  # (pool, n)
ks = [k for k in KS if k <= pool]
bound = bound_band(log_w, ks)
curve, band = bound.curve.numpy(), bound.band.numpy()
fig = go.Figure(
    [
        go.Scatter(
            x=ks + ks[::-1],
            y=np.r_[curve + band, (curve - band)[::-1]],
            fill="toself",
            line=dict(width=0),
            fillcolor="rgba(31,119,180,0.15)",
            hoverinfo="skip",
            name="± 2 s.e. of the rise",
        ),
        go.Scatter(x=ks, y=curve, mode="lines+markers", name="L^k", line=dict(color="#1f77b4")),
    ]
)
fig.update_layout(
    xaxis_type="log",
    xaxis_title="k (importance samples)",
    yaxis_title="bound (nats per example)",
    height=340,
    margin=dict(l=10, r=10, t=10, b=10),
    legend=dict(x=0.01, y=0.99),
)
show_figure(fig, "iwae-bound-vs-k.html", key="curve")
c1, c2, c3 = st.columns(3)
c1.metric("ELBO (L^1)", f"{curve[0]:.2f} nats")
c2.metric(f"L^{ks[-1]}", f"{curve[-1]:.2f} nats", f"{curve[-1] - curve[0]:+.2f}")
drops = int((np.diff(curve) < 0).sum())
c3.metric(
    "Steps where the bound fell",
    f"{drops} of {len(ks) - 1}",
    help="In expectation L^k never falls as k grows (Burda et al. 2016, Thm 1); a fall here is Monte "
    "Carlo noise and shrinks with more examples or samples.",
)
show_table(
    pd.DataFrame({"k": ks, "bound (nats)": curve, "rise from L^1": bound.rise.numpy(), "± 2 s.e.": band}),
    "iwae-bound-vs-k.csv",
    key="curve-table",
)
explain(
    "L^k = E log (1/k) Σ w_i with w_i = p(x, z_i)/q(z_i|x) and z_i drawn from the encoder. "
    "L^1 is the ELBO; the bound cannot fall as k grows, in expectation, and tends to log p(x) "
    "(Burda et al., 2016). How much it rises says how far the encoder's Gaussian is from the true "
    f"posterior. Every k reuses the same {pool} draws per example, cut into blocks of k and averaged "
    "(so large k has fewer blocks and more noise); the band is twice the standard error, across "
    "examples, of the rise L^k − L^1."
)

# -- one input's weights ------------------------------------------------------------------------
st.subheader("Importance weights of one input")
i = st.slider("Test example", 0, log_w.shape[1] - 1, 0)
lw = log_w[:, i]
w = normalized_weights(lw[:, None])[:, 0].numpy()
ess = effective_sample_size(lw[:, None]).item()
running = running_log_mean_weight(lw).numpy()
c1, c2 = st.columns([2, 1])
with c1:
    hist = go.Figure(go.Histogram(x=w * len(w), nbinsx=60))
    hist.update_layout(
        xaxis_title="normalised weight × K (1 = average)",
        yaxis_title="count",
        height=280,
        margin=dict(l=10, r=10, t=10, b=10),
    )
    show_figure(hist, f"weights-{i}.html", key="hist")
with c2:
    st.metric("Effective sample size", f"{ess:.0f} of {len(w)}")
    st.metric("Largest normalised weight", f"{w.max():.3f}")
    st.metric("log mean weight (this input's L^K)", f"{running[-1]:.2f}")
conv = go.Figure(go.Scatter(x=np.arange(1, len(lw) + 1), y=running, mode="lines"))
conv.update_layout(
    xaxis_type="log",
    xaxis_title="draws used",
    yaxis_title="log of the running mean weight",
    height=240,
    margin=dict(l=10, r=10, t=10, b=10),
)
show_figure(conv, f"running-mean-{i}.html", key="running")
explain(
    "ESS = 1 / Σ w̃_i² counts how many equally weighted draws the weighted sample is worth. Close "
    "to K: the encoder matches the posterior well. Much smaller: a few draws dominate and the "
    "encoder misses part of the posterior. (ESS is not in the seed thesis; it is the standard "
    "definition, added here.) The running mean (1/k) Σ_{i≤k} w_i converges to p(x) as k grows; "
    "jumps in its log are single draws with large weights."
)

# -- SIR -------------------------------------------------------------------------------------------
st.subheader("Posterior samples by sampling-importance-resampling")
c1, c2, c3 = st.columns(3)
links.follow("input", "sir-input", range(len(data)), 0)
index = int(c1.number_input("Test input", 0, len(data) - 1, key="sir-input"))
k_sir = c2.select_slider("Proposals k", [100, 500, 1000, 2000, 5000], 1000)
n_sir = c3.select_slider("Resamples", [100, 250, 500, 1000], 500)
draws = cached_sir_draws(run_dir, sel.step, index, int(k_sir), int(n_sir), seed)
proposals, resampled = draws.proposals, draws.resampled
total = proposals.shape[1]
names = (
    [f"{g.name}[{j}]" for g in model.latent_groups for j in range(g.size)]
    if len(model.latent_groups) > 1
    else [f"z[{j}]" for j in range(total)]
)
if total == 2:
    view, axes = "coordinates", (0, 1)
else:
    view = st.radio("2-D view", ["principal axes of the SIR samples", "two coordinates"], horizontal=True)
    axes = (0, 1)
    if view == "two coordinates":
        a, b = most_correlated_pair(resampled)  # the default: what a diagonal encoder cannot hold
        d1, d2 = st.columns(2)
        axes = (
            d1.selectbox("x axis", range(total), a, format_func=names.__getitem__),
            d2.selectbox("y axis", range(total), b, format_func=names.__getitem__),
        )
if view.startswith("principal"):
    project = pca_basis(resampled, 2).project
    labels = ("SIR principal axis 1", "SIR principal axis 2")
else:
    project = lambda z: z[:, list(axes)]  # noqa: E731
    labels = (names[axes[0]], names[axes[1]])
p2, r2, m2 = project(proposals), project(resampled), project(draws.mean[None])
scatter = go.Figure(
    [
        go.Scattergl(
            x=p2[:, 0],
            y=p2[:, 1],
            mode="markers",
            name=f"encoder draws (k = {len(p2)})",
            marker=dict(size=4, color="rgba(120,120,120,0.35)"),
        ),
        go.Scattergl(
            x=r2[:, 0],
            y=r2[:, 1],
            mode="markers",
            name=f"SIR resamples (n = {len(r2)})",
            marker=dict(size=5, color="rgba(214,39,40,0.55)"),
        ),
        go.Scatter(
            x=m2[:, 0], y=m2[:, 1], mode="markers", name="encoder mean", marker=dict(size=12, symbol="x", color="black")
        ),
    ]
)
scatter.update_layout(
    height=460,
    xaxis_title=labels[0],
    yaxis_title=labels[1],
    margin=dict(l=10, r=10, t=10, b=10),
    yaxis=dict(scaleanchor="x", scaleratio=1),
)
show_figure(scatter, f"sir-{index}.html", key="sir")
ess_sir = effective_sample_size(torch.from_numpy(draws.log_w)[:, None]).item()
st.caption(
    f"ESS of the {len(p2)} proposals: {ess_sir:.0f}; the {len(r2)} resamples hold {draws.distinct} distinct draws."
)
if data.kind == "image":
    show, device = 12, model_device(model)
    with torch.no_grad():
        x = data.batch(torch.tensor([index]))
        rows = [
            x.expand(show, *x.shape[1:]),
            model.decode(split_latents(torch.from_numpy(proposals[:show]).to(device), model.latent_groups)).cpu(),
            model.decode(split_latents(torch.from_numpy(resampled[:show]).to(device), model.latent_groups)).cpu(),
        ]
    grid = labelled_rows(rows, ["input", "encoder draws", "SIR resamples"], value_range=data.value_range)
    show_image(grid, f"sir-decoded-{index}.png", key="sir-decoded")
explain(
    "Sampling-importance-resampling: draw k latents from the encoder, weight each by "
    "w = p(x, z)/q(z|x), and resample with probabilities proportional to w. As k grows the "
    "resamples tend to the true posterior p(z|x) (Cremer et al., 2017): the implicit posterior that "
    "the IWAE bound scores. Grey: the encoder's diagonal Gaussian; red: where the weights move it. A "
    "tilt or a bend in the red cloud is posterior structure the encoder cannot represent. For a "
    "hierarchical model the proposal is each layer's Gaussian as the encoder gives it along the "
    "posterior-mean path, drawn independently. The decoded rows show the decoder's mean for the "
    "first draws of each kind."
)

# ---- a TD-VAE against its TD-IWAE siblings ---------------------------------------------------------
if isinstance(model, TDVAE):
    st.subheader("The bound's terms against the training k")
    siblings = [
        c
        for c in available_runs()
        if c.info.family in ("tdvae", "tdiwae")
        and c.info.status != "broken"
        and c.info.input_shape == tuple(model.config.input_shape)
    ]
    chosen = st.multiselect(
        "Runs",
        siblings,
        default=[c for c in siblings if c.key == sel.choice.key] + [c for c in siblings if c.key != sel.choice.key][:4],
        format_func=lambda c: c.label,
        key="td-runs",
        help="TD-VAE and TD-IWAE runs on patches of this size, each at its latest checkpoint",
    )
    if chosen:
        rows = []
        for c in chosen:
            terms = td_bound_terms(str(c.dir), None, run_dir)
            rows.append({"run": c.label, "training k": training_k(str(c.dir)), **terms})
        table = pd.DataFrame(rows).sort_values("training k", kind="stable")
        names = {
            "neg_iwae_k100": "−IWAE (k = 100)",
            "neg_elbo": "−ELBO",
            "recon": "−reconstruction",
            "kl_z1": "KL(z1)",
            "kl_z2": "KL(z2)",
        }
        terms_fig = make_subplots(rows=1, cols=len(names), subplot_titles=list(names.values()))
        for i, key in enumerate(names, start=1):
            values = -table[key] if key == "recon" else table[key]
            terms_fig.add_trace(
                go.Bar(
                    x=[("TD-VAE" if k == 0 else f"k = {k}") for k in table["training k"]],
                    y=values,
                    marker_color="#4c78a8",
                    showlegend=False,
                    hovertext=table["run"],
                ),
                row=1,
                col=i,
            )
        terms_fig.update_layout(height=320, margin=dict(l=10, r=10, t=30, b=10))
        show_figure(terms_fig, "td-terms.html", key="td-terms")
        show_table(table.round(2), "td-terms.csv", key="td-terms-table")
        explain(
            "Each run scored on the same 200 test patches of the selected run's data (the ELBO's terms "
            "averaged over 5 draws per patch, beta = 1), as in the thesis's Figs. 5.4–5.5: with a larger "
            "training k the loss should fall, the reconstruction error rise and KL(z1) fall, while KL(z2) "
            "stays about the same; k = 1 should match the TD-VAE. `scripts/sparse_patches.py` measures "
            "this over three seeds at k = 1,000."
        )
