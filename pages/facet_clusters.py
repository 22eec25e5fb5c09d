"""Facet clusters: what each facet of a multi-facet clustering VAE (MFCVAE) groups together
(seed000 Figs. 2.4-2.6)."""

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import streamlit as st
import torch

from app import links
from app.state import current_model, facet_encoding, facet_probe_table, load_data
from app.widgets import explain, require_model, show_figure, show_image, show_table
from engine.diagnostics.clustering import ari, display_order, nmi
from engine.diagnostics.facets import (
    cluster_grid,
    cluster_mean_grid,
    ellipse,
    facet_accuracies,
    mixture_parameters,
    project_facet,
    swap_facet,
)
from engine.images import display_scale, image_grid, labelled_rows, upscale
from engine.models.base import reconstruct
from engine.models.cluster_accuracy import cluster_accuracy
from engine.models.mfcvae import MFCVAE

PALETTE = px.colors.qualitative.Dark24 + px.colors.qualitative.Light24

st.title("Facet clusters")
sel, loaded = current_model()
model = loaded.model
require_model(
    loaded,
    MFCVAE,
    "a **multi-facet clustering model** (MFCVAE): a VAE whose latent space is split into facets, each "
    "with its own mixture-of-Gaussians prior, so that every facet clusters the data its own way (e.g. "
    "by digit and by colour).",
    "facet-digits-mfcvae",
)

run_dir, run_id = str(sel.choice.dir), sel.choice.info.id
data = load_data(run_dir, "test")
is_image = data.kind == "image"
device = next(model.parameters()).device
enc = facet_encoding(run_dir, sel.step)
n_facets = len(model.names)
dims, ks = model.config.facet_dims, model.config.clusters
categorical = [name for name, col in data.labels.items() if col.is_categorical]


def facet_label(j: int) -> str:
    depth = " · deepest" if j == n_facets - 1 and n_facets > 1 else (" · shallowest" if j == 0 and n_facets > 1 else "")
    return f"facet{j} (dim {dims[j]}, {ks[j]} clusters{depth})"


links.follow("facet", "facet", range(n_facets), 0)
j = st.selectbox(
    "Facet",
    range(n_facets),
    format_func=facet_label,
    key="facet",
    help="Facet 0 branches off the encoder earliest (style, colour); the last facet is the "
    "deepest (abstract content such as the digit).",
)
name, k = model.names[j], ks[j]
pred, conf = enc.clusters(j), enc.confidence(j)
grid = cluster_grid(pred, conf, k, per_cluster=20)
occupied = int((grid.sizes > 0).sum())
c1, c2, c3 = st.columns(3)
c1.metric("Clusters used", f"{occupied} / {k}")
c2.metric("Mean assignment confidence", f"{conf.mean():.2f}")
c3.metric("Test inputs", f"{len(pred):,}")


def cluster_caption(c: int) -> str:
    row = int(np.flatnonzero(grid.order == c)[0])
    return f"cluster {c} (n = {grid.sizes[row]}, conf {grid.mean_confidence[row]:.2f})"


def pad(x: torch.Tensor, n: int) -> torch.Tensor:
    """x (m, C, H, W) padded to n images with blanks at the darkest value."""
    if len(x) >= n:
        return x[:n]
    blank = torch.full((n - len(x), *data.shape), float(data.value_range[0]))
    return torch.cat([x, blank])


# -- Fig. 2.4: the cluster grid ------------------------------------------------------------------
def cluster_examples() -> None:
    st.subheader("Test inputs in each cluster")
    c1, c2, c3 = st.columns(3)
    per_row = c1.slider("Inputs per cluster", 4, 20, 10, key="per-row")
    most = c2.slider("Clusters shown (sharpest first)", 1, k, min(k, 40), key="grid-rows") if k > 1 else 1
    hide_empty = c3.toggle("Hide empty clusters", value=True)
    rows = [r for r in range(k) if grid.sizes[r] > 0 or not hide_empty][:most]
    if not is_image:
        st.info("This model was trained on a table, so there are no pictures to show; see the charts below.")
        return
    images = [pad(data.batch(torch.as_tensor(enc.index[grid.members[r][:per_row]])), per_row) for r in rows]
    labels = [f"c{grid.order[r]}  n={grid.sizes[r]}  conf {grid.mean_confidence[r]:.2f}" for r in rows]
    show_image(
        labelled_rows(images, labels, value_range=data.value_range, label_width=170),
        f"cluster-grid-{run_id}-{name}.png",
        key="cluster-grid",
    )
    explain(
        f"Every test input is assigned to the cluster of **{name}** it most probably belongs to, "
        "argmax_c q(c|x), where q(c|x) compares how well each cluster's Gaussian explains the "
        "input's latent code (seed000 eq. A.47). Each **row** is one cluster; the row shows the "
        "inputs assigned to it with the highest confidence max_c q(c|x), most confident on the left. "
        "Rows are sorted by the cluster's mean confidence, so the sharpest clusters come first "
        "(as in Fig. 2.4 of the thesis). The label gives the cluster id, its number of members n "
        "and the mean confidence. If a facet has learned a factor, every row looks alike in that "
        "factor (the same digit, or the same colour) and differs in the others. Blank cells: the "
        "cluster has fewer members than columns."
    )


def cluster_sizes() -> None:
    _, _, pi = mixture_parameters(model, j)
    shown = grid.order
    ids = [f"c{c}" for c in shown]
    fig = go.Figure(
        [
            go.Bar(x=ids, y=grid.sizes / grid.sizes.sum(), name="share of test inputs"),
            go.Bar(x=ids, y=pi[shown], name="prior weight π"),
        ]
    )
    fig.update_layout(
        height=300,
        margin=dict(l=10, r=10, t=30, b=10),
        barmode="group",
        yaxis_title="fraction",
        xaxis=dict(type="category", title="cluster (sorted by mean confidence)"),
        legend=dict(orientation="h", y=1.12),
    )
    left, right = st.columns(2)
    with left:
        show_figure(fig, f"cluster-sizes-{run_id}-{name}.html", key="sizes")
    hist = go.Figure(go.Histogram(x=conf, nbinsx=40))
    hist.update_layout(
        height=300,
        margin=dict(l=10, r=10, t=30, b=10),
        xaxis_title="assignment confidence max_c q(c|x)",
        yaxis_title="test inputs",
    )
    with right:
        show_figure(hist, f"confidence-{run_id}-{name}.html", key="confidence")
    explain(
        "**Left:** for each cluster (same order as the grid), the share of test inputs assigned to it "
        "and its prior weight π_c. When the model fixes π = 1/K (as for colour data in the thesis) the "
        "π bars are flat. Clusters with no inputs are unused; a model usually needs fewer "
        "clusters than it was given. **Right:** how sure the model is of each assignment. A pile "
        "near 1 means well-separated clusters; mass near 1/K means the facet barely distinguishes them."
    )


# -- agreement with the labels --------------------------------------------------------------------
def label_agreement() -> None:
    st.subheader("Do the clusters match a known label?")
    if not categorical:
        st.caption("This data set has no categorical labels to compare the clusters with.")
        return
    label = st.selectbox("Label", categorical, key="label")
    column = data.labels[label]
    truth = column.values[enc.index].numpy()
    n_classes = len(column.categories)
    acc = cluster_accuracy(pred, truth, k, n_classes)
    c1, c2, c3 = st.columns(3)
    how = "Hungarian 1-to-1 matching" if acc.method == "hungarian" else "each cluster → its majority class"
    c1.metric("Clustering accuracy", f"{acc.accuracy:.1%}", help=how)
    c2.metric("NMI", f"{nmi(pred, truth):.3f}")
    c3.metric("ARI", f"{ari(pred, truth):.3f}")
    st.caption(f"Accuracy by {how} ({k} clusters, {n_classes} classes). {acc.note}")
    order = display_order(acc.table, acc.mapping)
    table = acc.table[order]
    fig = go.Figure(
        go.Heatmap(
            z=table,
            x=[str(c) for c in column.categories],
            y=[f"c{c}" for c in order],
            colorscale="Blues",
            hovertemplate="cluster %{y}, " + label + " %{x}: %{z} inputs<extra></extra>",
        )
    )
    fig.update_layout(
        height=max(300, 18 * len(order) + 80),
        margin=dict(l=10, r=10, t=10, b=10),
        xaxis_title=label,
        yaxis=dict(title="cluster", autorange="reversed", type="category"),
    )
    show_figure(fig, f"confusion-{run_id}-{name}-{label}.html", key="confusion")
    explain(
        f"Each cell counts the test inputs of {label} value *column* that {name} put in cluster *row*. "
        "Clusters have no names, so to score them we match them to classes: with as many clusters as "
        "classes one-to-one by the **Hungarian** algorithm, with more clusters (the usual case) each "
        "cluster to its most frequent class (**majority**), then count the inputs that land on their "
        "class (seed000 §1.8). Rows are ordered by the class they map to, so a good facet gives a "
        "staircase. **NMI** (normalised mutual information, 0 to 1) and **ARI** (adjusted Rand index, "
        "0 for chance, 1 for perfect) need no matching."
    )

    st.markdown("**Every facet against every label**")
    cols = st.columns(2)
    rows = [
        {"facet": facet, "label": lab, "accuracy": score["accuracy"]}
        for facet, by_label in facet_accuracies(model, data, enc).items()
        for lab, score in by_label.items()
    ]
    acc_table = pd.DataFrame(rows).pivot(index="facet", columns="label", values="accuracy").reset_index()
    with cols[0]:
        st.caption("Clustering accuracy on the test set")
        show_table(acc_table.round(3), f"cluster-accuracy-{run_id}.csv", key="acc-table")
    probes = facet_probe_table(run_dir, sel.step)
    probe_df = pd.DataFrame(probes).T.reset_index(names="latent")[["latent", *categorical]]
    with cols[1]:
        st.caption("Probe accuracy (MLP from E[z_j|x] to the label, 2,000 training inputs)")
        show_table(probe_df.round(3), f"probe-{run_id}.csv", key="probe-table")
    explain(
        "Left: the clustering accuracy above, for every facet and label: a facet that has captured "
        "a factor scores high on that label and low on the others. Right: the **probe** of thesis "
        "Table 2.1: a small neural network (one hidden layer of 100 units) is trained to predict the "
        "label from one facet's latent code (or from all facets, 'all') on a random 2,000 training "
        "inputs and tested on 1,000 test inputs. It asks whether the information is *in* the facet at "
        "all, even if the clusters do not line up with it. Disentangled facets carry one factor each."
    )


# -- the latent space ------------------------------------------------------------------------------
@st.cache_resource(max_entries=16, show_spinner=False)
def scatter_figure(
    points: np.ndarray,
    means: np.ndarray,
    groups: np.ndarray,
    names: dict[int, str],
    index: np.ndarray,
    pred: np.ndarray,
    outlines: list[np.ndarray],
    colours: list[str],
    axis: list[str],
) -> go.Figure:
    """The facet's scatter: one trace per group of points (clusters or a label's values), one
    outline per used mixture component, and the components' means. A facet of 150 clusters
    makes some 300 traces, which Plotly takes over a second to build and check, so the figure
    is built once per content (the arguments are its key) and shared, read-only, by every
    session and rerun."""
    fig = go.Figure()
    for g in np.unique(groups):
        sel_g = np.flatnonzero(groups == g)
        fig.add_trace(
            go.Scattergl(
                x=points[sel_g, 0],
                y=points[sel_g, 1],
                mode="markers",
                name=str(names[int(g)]),
                marker=dict(size=5, color=PALETTE[int(g) % len(PALETTE)], opacity=0.6),
                customdata=np.stack([index[sel_g], pred[sel_g]], 1),
                hovertemplate="test #%{customdata[0]}<br>cluster c%{customdata[1]}<extra></extra>",
            )
        )
    for outline, colour in zip(outlines, colours):
        fig.add_trace(
            go.Scatter(
                x=outline[:, 0],
                y=outline[:, 1],
                mode="lines",
                showlegend=False,
                line=dict(color=colour, width=1.5),
                hoverinfo="skip",
            )
        )
    fig.add_trace(
        go.Scatter(
            x=means[:, 0],
            y=means[:, 1],
            mode="markers",
            name="component means",
            marker=dict(symbol="x", size=9, color="black"),
            text=[f"c{c}" for c in range(len(means))],
            hovertemplate="mean of %{text}<extra></extra>",
        )
    )
    fig.update_layout(
        height=560,
        margin=dict(l=10, r=10, t=10, b=10),
        xaxis_title=axis[0],
        yaxis_title=axis[1],
        dragmode="lasso",
        legend=dict(itemsizing="constant"),
    )
    return fig


def latent_scatter() -> None:
    st.subheader("The facet's latent space")
    means, covs, _ = mixture_parameters(model, j)
    proj = project_facet(enc.means[j], means, covs)
    colour_by = st.selectbox("Colour by", ["cluster", *categorical], key="colour-by")
    if colour_by == "cluster":
        groups, names = pred, {c: f"c{c}" for c in range(k)}
    else:
        groups = data.labels[colour_by].values[enc.index].numpy()
        names = dict(enumerate(data.labels[colour_by].categories))
    used = [c for c in range(k) if grid.sizes[np.flatnonzero(grid.order == c)[0]] > 0]
    outlines = [ellipse(proj.means[c], proj.covariances[c], n_sd=2.0) for c in used]
    colours = [PALETTE[c % len(PALETTE)] if colour_by == "cluster" else "#555" for c in used]
    if proj.method == "pca":
        axis = [f"PC{i + 1} ({proj.explained[i]:.0%} of variance)" for i in range(2)]
    else:
        axis = [f"z{i}" for i in range(2)] if dims[j] == 2 else ["z0", "(none: 1-D facet)"]
    fig = scatter_figure(proj.points, proj.means, groups, names, np.asarray(enc.index), pred, outlines, colours, axis)
    left, right = st.columns([3, 1])
    with left:
        event = show_figure(fig, f"latent-{run_id}-{name}.html", key="scatter", on_select="rerun")
    picked = [int(p["customdata"][0]) for p in (event.selection.points if event else []) if "customdata" in p]
    with right:
        if picked:
            st.caption(f"{len(picked)} selected (first 24 shown)")
        else:
            st.caption("Drag a lasso or box over points to see their images, or pick one:")
            picked = [
                int(
                    st.number_input(
                        "Test example #", 0, len(data) - 1, int(enc.index[grid.members[0][0]]), key="scatter-pick"
                    )
                )
            ]
        if is_image:
            x = data.batch(torch.as_tensor(picked[:24]))
            scale = display_scale(x.shape[-1], target=64)
            st.image(
                [upscale(image_grid(t[None], padding=0, value_range=data.value_range), scale) for t in x],
                caption=[f"#{i} · c{pred[i]}" for i in picked[:24]],
                output_format="PNG",
            )
    how = (
        (
            f"the facet has {dims[j]} dimensions, so the plot shows its two **principal components** "
            "(the directions along which the codes vary most)"
        )
        if proj.method == "pca"
        else "the facet's raw coordinates"
    )
    explain(
        f"Each dot is one test input's latent code E[z|x] for {name}; {how}. Colours are the "
        "assigned clusters (or a label of your choice). Each ellipse is one mixture component of the "
        "prior p(z|c) = N(μ_c, Σ_c), drawn at 2 standard deviations and projected onto the same plane; "
        "the crosses are the means μ_c (unused clusters' ellipses are omitted). Good clustering shows "
        "clouds of one colour inside their own ellipse. With PCA, clusters that overlap here may still "
        "be separate in the dimensions not shown. Hover for the example number; select points to see "
        "their images on the right."
    )


# -- Fig. 2.6: cluster-conditional samples --------------------------------------------------------
def cluster_samples() -> None:
    st.subheader("Generate from one cluster")
    c1, c2, c3 = st.columns(3)
    used = [int(grid.order[r]) for r in range(k) if grid.sizes[r] > 0] or [int(grid.order[0])]
    cluster = c1.selectbox("Cluster", used, format_func=cluster_caption, key="sample-cluster")
    temperature = c2.slider("Temperature τ", 0.05, 1.5, 0.3, 0.05, key="temperature")
    seed = c3.number_input("Seed", 0, 2**31 - 1, 0, key="sample-seed")
    per_row, n_rows = 10, 4
    gen = torch.Generator(device=device).manual_seed(int(seed))
    with torch.no_grad():
        samples = model.sample(
            per_row * n_rows, temperature=temperature, generator=gen, **{f"cluster_{name}": cluster}
        ).cpu()
    if not is_image:
        show_table(pd.DataFrame(samples.flatten(1).numpy()), f"samples-{run_id}-{name}-c{cluster}.csv", key="samples")
        return
    row = int(np.flatnonzero(grid.order == cluster)[0])
    members = pad(data.batch(torch.as_tensor(enc.index[grid.members[row][:per_row]])), per_row)
    rows = [members, *samples.view(n_rows, per_row, *samples.shape[1:])]
    labels = ["test inputs", f"samples, T={temperature:g}", *[""] * (n_rows - 1)]  # the image font has no τ
    show_image(
        labelled_rows(rows, labels, value_range=data.value_range, label_width=170),
        f"samples-{run_id}-{name}-c{cluster}-t{temperature:g}.png",
        key="samples",
    )
    explain(
        f"The top row repeats the cluster's most confident test inputs; below are new images the model "
        f"generates when {name} is **fixed to cluster {cluster}**: z ~ N(μ_c, τ·Σ_c) for this facet, while "
        "every other facet draws a random cluster from its prior and a code from that cluster's Gaussian "
        "(thesis Fig. 2.6). The images are the decoder's mean. The **temperature τ** scales the "
        "covariance: small τ stays near the cluster's centre (typical, clean, less varied), τ = 1 is "
        "the model's actual prior. The thesis uses τ = 0.3 for its colour data sets (3DShapes, SVHN) "
        "and τ = 1 for MNIST; 0.3 is the default here. If the facet has captured a factor, every sample "
        "shows the cluster's value of it while the other factors vary."
    )


# -- Fig. 2.5: facet swap -----------------------------------------------------------------------------
def facet_swap() -> None:
    st.subheader("Swap one facet between two inputs")
    if not is_image:
        st.caption("Swapping is shown as pictures; this model was trained on a table.")
        return
    first = [int(enc.index[m[0]]) for m in grid.members if len(m)]
    default_a, default_b = first[0], first[1] if len(first) > 1 else first[0]
    c1, c2 = st.columns(2)
    a = int(c1.number_input("Input A: test example #", 0, len(data) - 1, default_a, key="swap-a"))
    b = int(c2.number_input("Input B: test example #", 0, len(data) - 1, default_b, key="swap-b"))
    x = data.batch(torch.tensor([a, b])).to(device)
    with torch.no_grad():
        recon = reconstruct(model, x).cpu()
        hat_a, hat_b = swap_facet(model, x[:1], x[1:], name)
    swapped = torch.cat([hat_a, hat_b]).cpu()
    grid_img = labelled_rows(
        [x.cpu(), recon, swapped],
        ["inputs A, B", "reconstructions", f"{name} swapped"],
        value_range=data.value_range,
        scale=display_scale(2 * data.shape[-1], 240),
    )
    show_image(grid_img, f"swap-{run_id}-{name}-{a}-{b}.png", key="swap", target_width=320)
    explain(
        f"Both inputs are encoded to the most likely code of every facet, E[z_j|x]. The last row "
        f"decodes A's codes with **B's {name}** (left) and B's codes with **A's {name}** (right) (thesis "
        f"Fig. 2.5). If the facets are disentangled, the left image keeps what A's other facets encode "
        f"and takes on what {name} encodes from B. A (cluster c{pred[a]}) and B (cluster c{pred[b]}) "
        "default to the most confident members of the two sharpest clusters; try inputs from clusters "
        "that differ. Compare with the reconstructions (no swap), not with the inputs: the model's "
        "blur is not the swap's fault."
    )


# -- the K1 x K2 grid of cluster means ------------------------------------------------------------
def cluster_mean_cross() -> None:
    st.subheader("Cluster means of two facets combined")
    if n_facets < 2 or not is_image:
        st.caption("This needs a model with two or more facets trained on images.")
        return
    c1, c2, c3 = st.columns(3)
    rows_f = c1.selectbox("Rows: facet", range(n_facets), index=0, format_func=lambda f: f"facet{f}", key="cross-rows")
    cols_f = c2.selectbox(
        "Columns: facet", range(n_facets), index=1, format_func=lambda f: f"facet{f}", key="cross-cols"
    )
    limit = c3.slider("Clusters per facet (sharpest first)", 2, 30, 12, key="cross-limit")
    if rows_f == cols_f:
        st.info("Pick two different facets.")
        return

    def used_clusters(f: int) -> list[int]:
        g = cluster_grid(enc.clusters(f), enc.confidence(f), ks[f], per_cluster=1)
        return [int(c) for c, s in zip(g.order, g.sizes) if s > 0][:limit]

    r_ids, c_ids = used_clusters(rows_f), used_clusters(cols_f)
    with torch.no_grad():
        images = cluster_mean_grid(model, rows_f, cols_f, r_ids, c_ids).cpu()  # (R, C, *shape)
    show_image(
        labelled_rows(list(images), [f"facet{rows_f} c{c}" for c in r_ids], value_range=data.value_range),
        f"cluster-means-{run_id}-f{rows_f}-f{cols_f}.png",
        key="cross",
    )
    st.caption(f"Columns, left to right: facet{cols_f} clusters " + ", ".join(f"c{c}" for c in c_ids))
    others = [f"facet{f}" for f in range(n_facets) if f not in (rows_f, cols_f)]
    explain(
        f"Image (row, column) decodes facet{rows_f} at the **mean** μ of the row's cluster and facet{cols_f} "
        "at the mean of the column's cluster"
        + (f", with {', '.join(others)} at their prior mixture mean" if others else "")
        + ". Only used clusters appear, sharpest first. If the two facets are disentangled, each row "
        "keeps one value of the first factor (e.g. the digit) and each column one value of the second "
        "(e.g. the colour): the grid shows every combination, including ones the data may never contain."
    )


# -- training curves --------------------------------------------------------------------------------
@st.cache_resource(max_entries=16, show_spinner=False)
def accuracy_figure(run_dir: str, last_step: int | None, _metrics) -> go.Figure | None:
    """The per-facet accuracy curves in the run's metrics (`_metrics`, those of run_dir), built
    once per run and last logged step: Plotly Express takes tens of milliseconds to build a
    faceted figure, and the page reruns on every interaction."""
    metrics = _metrics
    names = [s for s in metrics.scalar_names() if s.startswith("test/acc/facet")]
    if not names:
        return None
    frames = []
    for metric, (steps, values) in metrics.scalars(names).items():
        facet, label = metric.split("/")[2:4]
        frames.append(pd.DataFrame({"step": steps, "accuracy": values, "facet": facet, "label": label}))
    fig = px.line(
        pd.concat(frames),
        x="step",
        y="accuracy",
        color="facet",
        facet_col="label",
        markers=True,
        height=320,
        color_discrete_sequence=px.colors.qualitative.D3,
    )
    fig.update_layout(margin=dict(l=10, r=10, t=30, b=10))
    fig.update_yaxes(range=[0, 1.02])
    return fig


def accuracy_curves() -> None:
    st.subheader("Clustering accuracy during training")
    fig = accuracy_figure(run_dir, loaded.run.metrics.max_step(), loaded.run.metrics)
    if fig is None:
        st.caption("This run logged no per-facet accuracy.")
        return
    show_figure(fig, f"facet-accuracy-{run_id}.html", key="acc-curves")
    starts = model.config.facet_start_steps
    explain(
        "Clustering accuracy of each facet against each label on held-out data, logged during "
        "training. A facet that learns a factor rises on that label's panel and stays low on the "
        "others. With progressive training a shallower facet joins later and fades in"
        + (f" (here facets join at steps {', '.join(map(str, starts))})" if starts else "")
        + "; its curve often jumps then, as in the thesis' Figs. A.12-A.14."
    )


cluster_examples()
cluster_sizes()
label_agreement()
latent_scatter()
cluster_samples()
facet_swap()
cluster_mean_cross()
accuracy_curves()
