"""Discrete codes: what a hierarchy of codes (RRVQ-VAE, rVQ-VAE; seed001 ch. 3) does with its
codes: reconstructions beside prior samples, layerwise resampling (Fig. 3.3), the index map
(Fig. B.1), code usage over the test set and along training, codes swapped and decoded, and
the worst-case entropy theory of Theorems 3.1-3.2 (Figs B.3-B.5)."""

import time

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st
import torch

from app.runs import available_runs, run_slug
from app.state import code_usage_along_training, code_usage_table, current_model, load_data, load_model
from app.widgets import explain, require_model, show_figure, show_image, show_table
from engine.diagnostics.code_entropy import entropy_curves
from engine.diagnostics.codes import colour_spread, index_map, index_map_tiles, swap_codes
from engine.images import image_grid, labelled_rows, tile_rows, to_pixels
from engine.models.base import model_device
from engine.models.rrvq import RRVQVAE
from engine.randomness import random_stream
from engine.store import Run

PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf"]

NEEDS = (
    "a **hierarchy of codes** (family `rrvq`): the RRVQ-VAE, the rVQ-VAE or a Table 3.3 ablation, whose "
    "latents are categorical codes chosen by responsibilities over learned codebooks."
)


def entropy_theory() -> None:
    """Theorems 3.1-3.2 as a widget: the worst-case entropy of rVQ and softmax categoricals."""
    st.subheader("Why responsibilities: worst-case entropy")
    c1, c2, c3, c4 = st.columns(4)
    codes = c1.select_slider("Codes K", [2, 4, 16, 64, 256, 1024], value=256, key="th-codes")
    delta = c2.slider("Gap δ", 0.1, 2.0, 1.0, 0.1, key="th-delta", help="Extra distance of the K − 1 far codes")
    d_max = c3.slider("Largest distance d", 10, 60, 30, 5, key="th-dmax")
    simulate = c4.select_slider("Random codebooks", [0, 200, 1000, 5000], value=0, key="th-sim")
    curves = entropy_curves(d_max=float(d_max), points=121, delta=float(delta), codes=int(codes), simulate=simulate)
    fig = go.Figure()
    fig.add_scatter(x=curves.d, y=curves.rvq, name="rVQ, exact", line={"color": "#1f77b4"})
    fig.add_scatter(x=curves.d, y=curves.rvq_approx, name="rVQ, eq. B.21", line={"color": "#1f77b4", "dash": "dot"})
    fig.add_scatter(x=curves.d, y=curves.softmax, name="softmax (ℓ = d), exact", line={"color": "#d62728"})
    fig.add_scatter(
        x=curves.d, y=curves.softmax_approx, name="softmax, eq. B.33", line={"color": "#d62728", "dash": "dot"}
    )
    if curves.simulated:
        fig.add_scatter(x=curves.d, y=curves.simulated_mean, name="random codebooks, mean", line={"color": "#2ca02c"})
        fig.add_scatter(
            x=curves.d,
            y=curves.simulated_min,
            name="random codebooks, lowest",
            line={"color": "#2ca02c", "dash": "dash"},
        )
    positive = np.concatenate([curves.rvq[curves.rvq > 0], curves.softmax[curves.softmax > 0]])
    fig.update_layout(
        xaxis_title="distance d of the nearest code (softmax: logit gap ℓ)",
        yaxis={"title": "entropy (nats)", "type": "log", "range": [np.log10(positive.min()), np.log10(codes) + 0.3]},
        height=420,
        margin={"t": 20},
        legend={"orientation": "h", "y": -0.2},
    )
    show_figure(fig, "worst-case-entropy.html", key="entropy-theory")
    above = curves.d > 10
    m = st.columns(3)
    m[0].metric("Largest relative error of eq. B.21, d > 10", f"{np.nanmax(curves.rvq_relative_error[above]):.1e}")
    m[1].metric("… of eq. B.33, ℓ > 10", f"{np.nanmax(curves.softmax_relative_error[above]):.1e}")
    crossing = delta**2 / (2 * (1 - delta)) if delta < 1 else None
    m[2].metric("rVQ above softmax for d >", f"{crossing:.2f}" if crossing is not None else "never (δ ≥ 1)")
    explain(
        "The worst arrangement for rVQ puts one code at distance d from the embedding and the other K − 1 at "
        "d + δ on the same line; for a softmax, one logit c + ℓ and K − 1 logits c. Both give the categorical "
        "softmax(0, −x, …, −x), with x = δ²/2 + δd for rVQ and x = ℓ for the softmax, whose entropy falls like "
        "(K − 1)(1 + x)e^(−x) (Theorems 3.1 and 3.2). For large d and δ < 1, rVQ keeps the higher entropy "
        "(Corollary 3.2.1): a large network output drives a softmax to one-hot faster, and a near one-hot prior "
        "makes the KL unstable. The dotted lines are the first-order approximations; their relative error is "
        "about (K − 1)e^(−x), so it is 1e-2 at d = 10 for K = 256 and under 1e-5 only past d ≈ 17 (the thesis "
        "reports ≈ 1e-6 for inputs above 10). Random codebooks (K codes uniform on a sphere of radius 0.5 in 32 "
        "dimensions, App. B.4.3) stay far above the worst case."
    )


st.title("Discrete codes")
sel, loaded = current_model()
if not isinstance(loaded.model, RRVQVAE):
    entropy_theory()
require_model(loaded, RRVQVAE, NEEDS, "digits-rrvq")
model: RRVQVAE = loaded.model
cfg = model.config
run_dir, step = str(sel.choice.dir), sel.step
device = model_device(model)
data = load_data(run_dir, "test")
st.caption(f"{cfg.summary()}. Step {loaded.step:,}.")
layers = model.names  # top first
default_layer = "z2" if "z2" in layers else layers[-1]

# ---- reconstructions and prior samples ------------------------------------------------------------
st.subheader("Reconstructions and prior samples")
c1, c2 = st.columns(2)
temperature = c1.slider("Prior temperature", 0.1, 1.5, 1.0, 0.1, key="codes-temp")
seed = int(c2.number_input("Seed", 0, 10_000, 0, key="codes-seed"))
n_show = 12
with torch.no_grad():
    x = data.batch(torch.arange(min(n_show, len(data)))).to(device)
    recon = (
        model.decode(model.one_hot(model.code_indices(x)))
        if model.discrete
        else model.decode({n: q.mean for n, q in model.encode(x).items()})
    )
    with random_stream(seed):
        samples = model.sample(2 * n_show, temperature=temperature)
rows = [x, recon, samples[:n_show], samples[n_show:]]
show_image(
    labelled_rows(rows, ["test input", "reconstruction", "prior samples", ""]),
    "reconstructions-and-samples.png",
    target_width=900,
)
explain(
    "Top: test images and their reconstructions from their most probable codes (hard codes, as the model is "
    "evaluated). Below: ancestral samples from the prior, each layer's codes drawn given the layers above "
    "(Figs 3.1, B.6, B.7). The thesis's point (§3.5): spatially arranged codes from a convolutional network give "
    "patchwork samples when the prior does not tie the positions together; the hierarchy is what ties them."
)


def swatch_toy() -> None:
    """§3.5 / Fig. 3.1: every swatch-trained run of the family, reconstructions beside samples."""
    st.subheader("Patchwork samples: the swatch toy")
    runs = [
        c
        for c in available_runs()
        if c.info.family == "rrvq" and c.info.dataset == "swatches" and c.info.status != "broken"
    ][:6]
    if not runs:
        st.info(
            "No run of this family on the nine colour swatches yet. Train the three models of §3.5 (a minute or two "
            "each on a CPU) and they appear here side by side: `latent-atlas train --preset swatches-spatial-vae`, "
            "`--preset swatches-rvq` and `--preset swatches-mlp-rvq`."
        )
        return
    rows, labels, table = [], [], []
    for choice in runs:
        other = load_model(str(choice.dir), None).model
        swatches = load_data(str(choice.dir), "test")
        with torch.no_grad(), random_stream(seed):
            xs = swatches.batch(torch.arange(min(10, len(swatches)))).to(model_device(other))
            recon = other.decode({n: q.mean for n, q in other.encode(xs).items()})
            drawn = other.sample(64)
        name = f"{other.config.model_name} · {run_slug(choice.info.id)}"
        rows += [recon.cpu(), drawn[:10].cpu()]
        labels += [f"{other.config.model_name}: recon", "samples"]
        table.append({"run": name, "colour spread of samples": float(colour_spread(drawn).mean())})
    show_image(labelled_rows(rows, labels, label_width=190), "swatch-toy.png", target_width=900)
    show_table(pd.DataFrame(table), "swatch-spread.csv", key="swatch-spread")
    explain(
        "Every image of the toy data is one of nine colours everywhere (§3.5). Models whose latents sit on a grid "
        "and reach only their patch through a convolutional network (the Spatial-VAE, the convolutional rVQ-VAE) "
        "reconstruct the swatches but, drawing each position's latent from a prior that does not tie the "
        "positions together, sample patchworks of colours; an rVQ-VAE whose codes each reach the whole image "
        "through an MLP samples single-colour images. The spread is the standard deviation of colour over an "
        "image's pixels, averaged over channels and 64 samples (0 for a swatch); scripts/swatches_study.py "
        "measures it over three seeds."
    )


if not model.discrete:
    st.info(
        f"This {cfg.model_name} has Gaussian latents, so it has no codes to count, map or swap; layerwise "
        "resampling below still applies (the layers below take their means)."
    )

# ---- layerwise resampling -------------------------------------------------------------------------
st.subheader("Layerwise resampling")
c1, c2, c3 = st.columns(3)
layer = c1.selectbox("Resample layer", layers, index=layers.index(default_layer), key="lw-layer")
n_rows = c2.slider("Rows (draws of the layers above)", 1, 8, 4, key="lw-rows")
n_cols = c3.slider("Columns (draws of the layer)", 2, 12, 8, key="lw-cols")
start = time.perf_counter()
with random_stream(seed):
    grid = model.layerwise_samples(layer, n_rows, n_cols, temperature=temperature)
elapsed = time.perf_counter() - start
show_image(
    image_grid(grid.reshape(-1, *cfg.input_shape), nrow=n_cols),
    f"layerwise-{layer}.png",
    caption=f"{n_rows} × {n_cols} in {1000 * elapsed:.0f} ms",
    target_width=700,
)
explain(
    f"Each row draws the layers above {layer} from the prior once; each column draws {layer} again given them; "
    "the layers below take their most probable value, and the result is decoded (Fig. 3.3). What changes along "
    "a row is what this layer decides; what stays is decided above it. In the thesis's SVHN model resampling "
    "ℓ = 2 changes the digit's identity and keeps the rest."
)

if not model.discrete:
    swatch_toy()
    entropy_theory()
    st.stop()

# ---- index map ------------------------------------------------------------------------------------
st.subheader("Index map")
c1, c2 = st.columns(2)
map_layer = c1.selectbox("Layer", layers, index=len(layers) - 1, key="map-layer")
n_map = c2.slider("Test images", 4, 24, 12, key="map-n")
start = time.perf_counter()
with torch.no_grad():
    xm = data.batch(torch.arange(min(n_map, len(data)))).to(device)
    indices, norms = index_map(model, xm, map_layer)
norms_all = model.code_norms(map_layer)
lo, hi = float(norms_all.min()), float(norms_all.max())
pairs = index_map_tiles(to_pixels(xm.cpu()), norms, lo, hi)
scaled = ((norms - lo) / max(hi - lo, 1e-8)).cpu().numpy()
elapsed = time.perf_counter() - start
show_image(
    tile_rows(pairs, 8),
    f"index-map-{map_layer}.png",
    caption=f"input, then {map_layer}'s codes coloured by ‖E_μ‖ (viridis, {lo:.2f} to {hi:.2f}); {1000 * elapsed:.0f} ms",
    target_width=900,
)
first = indices[0].cpu().numpy()
fig = go.Figure(
    go.Heatmap(
        z=scaled[0],
        text=first,
        texttemplate="%{text}",
        colorscale="Viridis",
        showscale=False,
        hovertemplate="row %{y}, column %{x}<br>code %{text}<extra></extra>",
    )
)
fig.update_layout(height=320, width=320, yaxis={"autorange": "reversed", "scaleanchor": "x"}, margin={"t": 10})
with st.expander(f"The first image's {map_layer} codes by number"):
    st.plotly_chart(fig, width="content")
explain(
    "Fig. B.1: the layer's grid of most probable codes, each position coloured by the norm of its code's mean. "
    "Where one code covers a region (a background), the image looks segmented."
)

# ---- code usage -----------------------------------------------------------------------------------
st.subheader("Code usage")
usage = code_usage_table(run_dir, step)
summary = pd.DataFrame(
    {
        "layer": list(usage),
        "positions": [f"{side}×{side}" for side in model.sides],
        "codes K": cfg.codes,
        "perplexity": [round(u.perplexity, 2) for u in usage.values()],
        "dead codes": [u.dead for u in usage.values()],
    }
)
show_table(summary, "code-usage.csv")
fig = go.Figure()
colour = {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(layers)}
for name, u in usage.items():
    freq = np.sort(u.frequencies)[::-1]
    fig.add_bar(x=np.arange(1, len(freq) + 1), y=freq, name=name, marker_color=colour[name])
fig.update_layout(
    barmode="group",
    xaxis_title="code, most used first",
    yaxis_title="share of positions",
    height=340,
    margin={"t": 20},
)
show_figure(fig, "code-usage.html", key="usage-bars")
history = pd.DataFrame(code_usage_along_training(run_dir))
if len(history["step"].unique()) > 1:
    fig = go.Figure()
    for name in layers:
        rows_ = history[history["layer"] == name]
        fig.add_scatter(
            x=rows_["step"], y=rows_["perplexity"], mode="lines+markers", name=name, line={"color": colour[name]}
        )
    fig.update_layout(xaxis_title="step", yaxis_title="perplexity (test)", height=320, margin={"t": 20})
    show_figure(fig, "code-usage-along-training.html", key="usage-history")
else:
    st.caption("The run keeps one checkpoint, so there is no history of code usage to show.")
metrics = Run.from_dir(run_dir, readonly=True).metrics.scalars([f"train/perplexity/{n}" for n in layers])
if metrics:
    fig = go.Figure()
    for name in layers:
        if f"train/perplexity/{name}" in metrics:
            steps, values = metrics[f"train/perplexity/{name}"]
            fig.add_scatter(x=steps, y=values, mode="lines", name=name, line={"color": colour[name]})
    fig.update_layout(xaxis_title="step", yaxis_title="batch perplexity (training)", height=300, margin={"t": 20})
    show_figure(fig, "batch-perplexity.html", key="usage-training")
explain(
    "Usage counts each test image's most probable code at every position. Perplexity is exp of the entropy of "
    "those counts: K when every code is used equally, 1 when one code takes every position (index collapse, "
    "the failure users of VQ models meet most). Dead codes are never chosen. Along training: the same counts at "
    "each kept checkpoint, and the perplexity of the batch's average posterior logged at every training step."
)

# ---- traversal over codes -------------------------------------------------------------------------
st.subheader("Swap a code")
c1, c2, c3, c4 = st.columns(4)
image_index = int(c1.number_input("Test image", 0, len(data) - 1, 0, key="swap-image"))
swap_layer = c2.selectbox("Layer", layers, index=layers.index(default_layer), key="swap-layer")
swap_side = model.sides[layers.index(swap_layer)]
BELOW = {"the prior's most probable codes": "mode", "the input's codes": "keep"}
below = c4.selectbox("Layers below take", list(BELOW), key="swap-below")
where = c3.selectbox(
    "Where",
    ["the whole layer"] + [f"row {r}, column {c}" for r in range(swap_side) for c in range(swap_side)],
    key="swap-where",
)
position = None if where == "the whole layer" else tuple(int(s.split()[-1]) for s in where.split(", "))
with torch.no_grad():
    xi = data.batch(torch.tensor([image_index])).to(device)
    current = int(model.code_indices(xi)[swap_layer][0, *(position or (0, 0))])
    variants = swap_codes(model, xi, swap_layer, range(cfg.codes), position, BELOW[below])
show_image(
    image_grid(torch.cat([xi, variants]), nrow=min(cfg.codes + 1, 17)),
    "swapped-codes.png",
    caption=f"the input, then code 0 … {cfg.codes - 1} in {swap_layer} at {where} (its own code: {current})",
    target_width=900,
)
explain(
    "The input's most probable codes are decoded with one layer's code replaced, at one position or at every "
    "position of the layer, by each code in turn. The layers above keep the input's codes; the layers below "
    "either keep them too, which shows what the decoder reads from this layer directly, or become the prior's "
    "most probable codes given the swap, which shows what the swap means for everything below it."
)

swatch_toy()
entropy_theory()
