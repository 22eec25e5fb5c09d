"""Receptive fields: what a TD-VAE or TD-IWAE learned from natural patches (seed003 §5.3–5.4):
the projective fields of its sparse z1 with a Gabor fit per unit, z2 against its prior, the
texture families in z2, how well each layer decodes them, the posterior correlations of z1
and the KL of z2 under its beta schedule."""

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st
import torch
from plotly.subplots import make_subplots

from app.state import (
    correlation_study_cached,
    current_model,
    field_census_cached,
    load_data,
    texture_data,
    texture_decoding_cached,
    unit_statistics_table,
)
from app.widgets import explain, require_model, show_figure, show_image, show_table
from engine.diagnostics.receptive_fields import LOCALISATION, field_gallery, gabor
from engine.models.base import model_device
from engine.models.tdvae import TDVAE
from engine.randomness import random_stream
from engine.store import Run

st.title("Receptive fields")
sel, loaded = current_model()
require_model(
    loaded,
    TDVAE,
    "a **TD-VAE or TD-IWAE** (families `tdvae`, `tdiwae`): a two-layer VAE with a sparse Laplace z1, a "
    "linear decoder and a Gaussian z2 above it, trained on whitened natural patches.",
    "patches-tdvae",
)
model: TDVAE = loaded.model
cfg = model.config
run_dir, step = str(sel.choice.dir), sel.step
data = load_data(run_dir, "test")
size = cfg.input_shape[-1]
st.caption(f"{cfg.summary()}. Step {loaded.step:,}.")
stats = unit_statistics_table(run_dir, step)
z1_stats, z2_stats = stats["z1"], stats["z2"]

# ---- projective fields --------------------------------------------------------------------------
st.subheader("Projective fields of z1")
census = field_census_cached(run_dir, step)
counts = census.counts
cols = st.columns(4)
cols[0].metric("Active z1 units", f"{len(census.units)} of {cfg.z1_dim}")
cols[1].metric("Localised Gabor-like", counts.get("localised", 0))
cols[2].metric("Gabor-like, not localised", counts.get("other", 0))
cols[3].metric("Not Gabor-like", counts.get("non-localised", 0))
classes = ["localised", "other", "non-localised"]
show_class = st.segmented_control(
    "Show", ["all", *classes], default="all", key="field-class", help="Which units the gallery shows"
)
order = [i for c in classes for i, label in enumerate(census.labels) if label == c]
if show_class and show_class != "all":
    order = [i for i in order if census.labels[i] == show_class]
if order:
    gallery = field_gallery(census.fields[order], upscale=max(1, 48 // size))
    show_image(gallery, "projective-fields.png", caption=f"{len(order)} fields, grey = 0", target_width=900)
else:
    st.info("No active unit falls in this class.")
explain(
    "Each tile is one active z1 unit's projective field: the decoded image of z1 + c·e_j minus that of "
    "z1 − c·e_j, which for the linear decoder is 2c·W[:, j] (thesis Fig. 5.19). Each is scaled to its own "
    "largest value, mid grey is zero. A Gabor (a Gaussian envelope times a sinusoid) is fitted to every "
    "field; a unit counts as **localised Gabor-like** when the fit explains at least half of the field's "
    "variance and passes the thesis's filter, given for 20×20 patches and scaled by the patch size here: "
    f"centre between pixels {LOCALISATION['centre_pixels']}, envelope scale {LOCALISATION['scale']}, wavelength above "
    f"{LOCALISATION['min_wavelength']} px and spatial frequency above {LOCALISATION['min_frequency']} cycles/px. "
    "The thesis counts 269 localised Gabors among 317 active units of its TD-VAE (450 units, 20×20)."
)

unit = (
    st.selectbox(
        "One unit's field and its Gabor fit",
        list(range(len(census.units))),
        format_func=lambda i: f"z1[{census.units[i]}] ({census.labels[i]}, R² {census.fits[i].r2:.2f})",
        key="field-unit",
    )
    if len(census.units)
    else None
)
if unit is not None:
    fit = census.fits[unit]
    pair = np.stack([census.fields[unit], gabor(size, fit)])
    show_image(
        field_gallery(pair, upscale=max(1, 160 // size)),
        "field-and-fit.png",
        caption="field | Gabor fit",
        target_width=360,
    )
    show_table(
        pd.DataFrame(
            [
                {
                    "centre x": fit.x0,
                    "centre y": fit.y0,
                    "scale (px)": fit.scale,
                    "wavelength (px)": fit.wavelength,
                    "orientation (°)": np.degrees(fit.theta),
                    "R²": fit.r2,
                }
            ]
        ).round(3),
        "gabor-fit.csv",
        key="gabor-fit",
    )

# ---- z2 against its prior ---------------------------------------------------------------------------
st.subheader("z2 against its prior")
n_hist = st.select_slider("Test patches", [200, 500, 1000, 2000], value=500, key="z2-patches")
with torch.no_grad(), random_stream(0, model_device(model)):
    x = data.batch(torch.arange(min(n_hist, len(data)))).to(model_device(model))
    z2 = model.posterior_samples(x, 1, proposals=20)["z2"][0].cpu().numpy()
d2 = cfg.z2_dim
ncols = min(5, d2)
nrows = -(-d2 // ncols)
fig = make_subplots(rows=nrows, cols=ncols, subplot_titles=[f"z2[{j}]" for j in range(d2)])
grid = np.linspace(-4, 4, 161)
density = np.exp(-0.5 * grid**2) / np.sqrt(2 * np.pi)
for j in range(d2):
    r, c = j // ncols + 1, j % ncols + 1
    fig.add_trace(
        go.Histogram(x=z2[:, j], histnorm="probability density", nbinsx=40, marker_color="#4c78a8", showlegend=False),
        row=r,
        col=c,
    )
    fig.add_trace(
        go.Scatter(x=grid, y=density, line=dict(color="#e45756"), showlegend=j == 0, name="N(0, 1)"), row=r, col=c
    )
fig.update_layout(height=160 * nrows + 60, margin=dict(l=10, r=10, t=30, b=10), bargap=0.02)
show_figure(fig, "z2-histograms.html", key="z2-hist")
explain(
    "Histograms of one posterior draw of z2 per test patch (SIR over 20 proposals for a TD-IWAE), against "
    "the prior N(0, 1) (thesis Fig. 5.11). An aggregate posterior that covers the prior means the prior is "
    f"used; the mean posterior sd of the active dimensions is {z2_stats.scale_mean[z2_stats.active].mean():.2f} "
    "here (thesis ≈ 0.4, far below the prior's 1)."
    if z2_stats.active.any()
    else "No z2 dimension is active."
)

# ---- texture families in z2 ---------------------------------------------------------------------------
st.subheader("Texture families in z2")
textures = texture_data(run_dir, "test")
families = textures.labels["family"].categories
lowest = np.argsort(z2_stats.scale_mean)[:2]
with torch.no_grad(), random_stream(1, model_device(model)):
    n_tex = min(1000, len(textures))
    xt = textures.batch(torch.arange(n_tex)).to(model_device(model))
    zt = model.posterior_samples(xt, 1, proposals=20)["z2"][0].cpu().numpy()
labels = textures.labels["family"].values[:n_tex].numpy()
scatter = go.Figure()
for k, name in enumerate(families):
    mine = labels == k
    scatter.add_trace(
        go.Scattergl(
            x=zt[mine, lowest[0]], y=zt[mine, lowest[1]], mode="markers", name=name, marker=dict(size=5, opacity=0.7)
        )
    )
scatter.update_layout(
    height=420, xaxis_title=f"z2[{lowest[0]}]", yaxis_title=f"z2[{lowest[1]}]", margin=dict(l=10, r=10, t=10, b=10)
)
show_figure(scatter, "z2-textures.html", key="z2-textures")
decoding = texture_decoding_cached(run_dir, step)
cols = st.columns(3)
cols[0].metric("z2 decodes the family", f"{decoding.z2.accuracy:.3f}", help="thesis TD-VAE: 0.779; chance 0.2")
cols[1].metric("z1 decodes the family", f"{decoding.z1.accuracy:.3f}", help="thesis TD-VAE: 0.254")
cols[2].metric("Chance", f"{decoding.z2.chance:.2f}")
confusion = go.Figure(
    go.Heatmap(
        z=decoding.z2.confusion,
        x=families,
        y=families,
        colorscale="Blues",
        zmin=0,
        zmax=1,
        text=np.round(decoding.z2.confusion, 2),
        texttemplate="%{text}",
    )
)
confusion.update_layout(
    height=360,
    xaxis_title="predicted",
    yaxis_title="true",
    yaxis_autorange="reversed",
    margin=dict(l=10, r=10, t=10, b=10),
)
show_figure(confusion, "z2-confusion.html", key="z2-confusion")
sel_dims = decoding.selective
rows = [{"features": "all z2", "dimensions": cfg.z2_dim, "accuracy": decoding.z2.accuracy}]
if sel_dims.selected is not None:
    rows.append(
        {
            "features": f"selective {sel_dims.dims}",
            "dimensions": len(sel_dims.dims),
            "accuracy": sel_dims.selected.accuracy,
        }
    )
if sel_dims.rest is not None:
    rows.append(
        {
            "features": "the other z2 dimensions",
            "dimensions": cfg.z2_dim - len(sel_dims.dims),
            "accuracy": sel_dims.rest.accuracy,
        }
    )
rows.append({"features": "all z1 locations", "dimensions": cfg.z1_dim, "accuracy": decoding.z1.accuracy})
show_table(pd.DataFrame(rows).round(3), "texture-decoding.csv", key="texture-decoding")
explain(
    "The scatter shows one posterior draw of z2 per texture test patch on the two z2 dimensions with the "
    "lowest mean posterior sd (thesis Fig. 5.12; not a t-SNE or PCA). The model never saw a texture or a "
    "label. The table is multinomial logistic regression on the posterior means of 8,000 texture training "
    "patches, scored on 2,000 test patches, averaged over 5 fits (Tables 5.1, 5.3, 5.4); the selective "
    "dimensions are added greedily while each raises a validation accuracy by at least 0.01 (Table 5.2). "
    "The confusion matrix is row-normalised."
)

# ---- posterior correlations of z1 ---------------------------------------------------------------------
st.subheader("Posterior correlations of z1")
c1, c2 = st.columns(2)
n_patches = c1.select_slider("Highest-contrast test patches", [10, 30, 100], value=10, key="corr-patches")
n_samples = c2.select_slider("Posterior draws per patch", [200, 500, 1000], value=500, key="corr-samples")
if st.toggle("Compute the correlations", key="corr-on", help="about a second per patch for a TD-VAE, longer with SIR"):
    study = correlation_study_cached(run_dir, step, n_patches, n_samples, 50)
    r = study.example[np.triu_indices_from(study.example, 1)]
    r = r[np.isfinite(r)]
    hist = go.Figure(go.Histogram(x=r, nbinsx=80, marker_color="#4c78a8"))
    hist.update_layout(
        height=280,
        xaxis_title="Pearson r between two active z1 units",
        yaxis_type="log",
        margin=dict(l=10, r=10, t=10, b=10),
    )
    show_figure(hist, "z1-correlations.html", key="corr-hist")
    top = [{"unit i": int(study.units[i]), "unit j": int(study.units[j]), "r": v} for i, j, v in study.example_top]
    show_table(pd.DataFrame(top).round(3), "z1-top-pairs.csv", key="corr-top")
    cols = st.columns(3)
    cols[0].metric(
        "Top-10 |r|, example patch",
        f"{np.mean([abs(t['r']) for t in top]):.3f}",
        help="thesis: TD-VAE 0.439, k = 50 0.516",
    )
    cols[1].metric("Top-5 |r| over patches", f"{study.top5_mean.mean():.3f}")
    cols[2].metric("Consistency ratio", f"{study.consistency:.2f}", help="thesis Table 5.8: TD-VAE 0.89, k = 4 1.87")
    explain(
        "For each of the highest-contrast natural test patches (the sd of the raw grey patch), draws from the "
        "model's posterior over z1 (ancestral for a TD-VAE, sampling-importance-resampling over 50 proposals "
        "for a TD-IWAE) give a correlation matrix of the active units. The histogram is the example patch "
        "(the highest-contrast one); the table its 10 strongest pairs. The consistency ratio takes the top-5 "
        "pairs of 3 patches and asks how far each pair's correlation on the other patches lies from its "
        "reference value, in sds: |mean − r_ref| / sd, averaged (thesis Table 5.8; lower is more consistent)."
    )

# ---- KL(z2) under the beta schedule -----------------------------------------------------------------------
st.subheader("KL of z2 during training, with the beta schedule")
metrics = Run.from_dir(run_dir, readonly=True).metrics
names = [n for n in metrics.scalar_names() if n.endswith("kl/z2") or n.endswith("/beta")]
series = metrics.scalars(names)
curve = make_subplots(specs=[[{"secondary_y": True}]])
for name, (steps, values) in series.items():
    curve.add_trace(
        go.Scatter(
            x=steps, y=values, name=name, mode="lines", line=dict(dash="dot" if name.endswith("beta") else "solid")
        ),
        secondary_y=name.endswith("beta"),
    )
curve.update_layout(height=320, xaxis_title="training step", margin=dict(l=10, r=10, t=10, b=10))
curve.update_yaxes(title_text="KL(z2) (nats)", secondary_y=False)
curve.update_yaxes(
    title_text="beta", range=[0, 1.05], tickvals=[0, 0.25, 0.5, 0.75, 1], showgrid=False, secondary_y=True
)
show_figure(curve, "kl-z2-beta.html", key="kl-beta")
explain(
    "The KL of q(z2 | x) to N(0, I) as logged during training, with beta, the weight of that term, on the "
    "right axis (thesis Figs. 5.2–5.3: annealed from 0.1 to 1 over the first half of training; with it, "
    "KL(z2) rises high early and then settles)."
)
