"""Global and local latents: what UG-VAE's global beta, shared by a group, and its local z hold
(seed002 ch. 4: Figs. 4.4, 4.7 and 4.8, Table 4.2). The computations are in
engine.diagnostics.global_latents; this page draws them."""

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st
import torch

from app.runs import available_runs
from app.state import current_model, load_data, load_model
from app.widgets import explain, require_model, show_figure, show_image, show_table
from engine.data.groups import RANDOM
from engine.diagnostics.global_latents import (
    DOMAINS,
    GroupPosteriors,
    GroupSet,
    beta_map,
    classifier_table,
    component_usage,
    global_local_panels,
    group_posteriors,
    group_structures,
    panel_components,
    separation,
    spread_and_width,
    structured_groups,
)
from engine.images import labelled_rows
from engine.models.ugvae import UGVAE, alignment_grid

PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f"]
RANDOM_COLOUR = "#b0b0b0"
NONE = "(none)"

st.title("Global and local latents")
sel, loaded = current_model()
require_model(
    loaded,
    UGVAE,
    "a model with a **global latent shared by a group** (UG-VAE, family `ugvae`): every batch shares one "
    "global code beta, which moves the means of all the clusters of the local codes z at once.",
    "digits-ugvae",
)
model = loaded.model
if not model.config.has_global:
    st.info(
        "This is the GMVAE ablation of UG-VAE (variant `gmvae`): it has no global latent beta, so there is "
        "nothing shared by a group to show. Pick a `ugvae` or `mlvae` run. To train one: "
        "`latent-atlas train --preset digits-ugvae`."
    )
    st.stop()

run_dir, run_id = str(sel.choice.dir), sel.choice.info.id
test = load_data(run_dir, "test")
is_image = test.kind == "image"
device = next(model.parameters()).device
cfg = model.config
st.caption(cfg.summary())


@st.cache_data(max_entries=16, show_spinner="Assigning test inputs to components…")
def usage_of(run_dir: str, step: int | None) -> np.ndarray:
    return component_usage(load_model(run_dir, step).model, load_data(run_dir, "test"))


@st.cache_data(max_entries=32, show_spinner="Encoding the groups…")
def posteriors_of(
    run_dir: str, step: int | None, split: str, structure: str, size: int, share: float, epochs: int
) -> tuple[GroupSet, GroupPosteriors]:
    data = load_data(run_dir, split)
    groups = structured_groups(data, structure, size, random_share=share, epochs=epochs, seed=0)
    return groups, group_posteriors(load_model(run_dir, step).model, data, groups)


@st.cache_data(max_entries=32, show_spinner="Fitting the classifiers (a few seconds)…")
def table_of(run_dir: str, step: int | None, structure: str, size: int, share: float, draws: int) -> pd.DataFrame:
    _, train = posteriors_of(run_dir, step, "train", structure, size, share, 3)
    _, test = posteriors_of(run_dir, step, "test", structure, size, share, 5)
    return pd.DataFrame(classifier_table(train, test, draws=draws, seed=0))


def panel_image(panel: torch.Tensor, beta_span: float) -> np.ndarray:
    """One component's grid (rows, cols, *shape) with each row labelled by its beta level."""
    levels = np.linspace(-beta_span, beta_span, len(panel))
    rows, labels = list(panel.cpu()), [f"beta {v:+.2f}" for v in levels]
    return labelled_rows(rows, labels, value_range=test.value_range, label_width=90)


# -- Fig. 4.4: the global x local grid ----------------------------------------------------------
def other_runs() -> dict[str, str]:
    """UG-VAE runs with a beta other than this one, {label: directory}."""
    out = {}
    for choice in available_runs():
        if choice.info.family == "ugvae" and str(choice.dir) != run_dir:
            out[choice.label] = str(choice.dir)
    return out


def global_local_section() -> None:
    st.subheader("Global × local: one panel per cluster")
    usage = usage_of(run_dir, sel.step)
    k = cfg.components
    c1, c2, c3, c4 = st.columns(4)
    components = c1.multiselect(
        "Components (clusters d)",
        list(range(k)),
        default=panel_components(usage, 3),
        format_func=lambda d: f"d = {d} ({usage[d]} test inputs)",
        key="gl-components",
        max_selections=6,
    )
    n_rows = c2.slider("Steps of beta and z", 3, 11, 7, 2, key="gl-steps")
    beta_span = c3.slider("beta from -s to +s", 0.5, 3.0, 1.5, 0.25, key="gl-beta-span")
    z_span = c4.slider("z around its mean ± s", 0.5, 5.0, 3.0, 0.5, key="gl-z-span")
    others = other_runs()
    compare = st.selectbox(
        "Beside it, the grid of another UG-VAE run (e.g. the ML-VAE, K = 1)",
        [NONE, *others],
        key="gl-compare",
        help="Train the thesis's ablation with `latent-atlas train --preset digits-mlvae`.",
    )
    if not components:
        st.info("Pick at least one component.")
        return
    panels = global_local_panels(model, components, n_rows, n_rows, beta_span, z_span)
    shown = [(f"this run, d = {d}", panel, f"{run_id}-d{d}") for d, panel in zip(components, panels)]
    if compare != NONE:
        other = load_model(others[compare], None).model
        if other.config.has_global:
            d = panel_components(usage_of(others[compare], None), 1)[0]
            panel = global_local_panels(other, [d], n_rows, n_rows, beta_span, z_span)[0]
            shown.append((f"{compare}, d = {d}", panel, f"compare-d{d}"))
        else:
            st.info(f"{compare} is a GMVAE (no beta); pick a run with a global latent.")
    columns = st.columns(len(shown))
    for column, (caption, panel, name) in zip(columns, shown):
        with column:
            show_image(panel_image(panel, beta_span), f"global-local-{name}.png", caption, 320, key=f"gl-{name}")
    explain(
        "Each panel fixes one mixture component d of the local prior p(z | d, beta) (seed002 Fig. 4.4). Going "
        f"**down** a panel the global beta moves from -{beta_span:g} to +{beta_span:g} on every dimension at once; "
        f"going **across**, the local z moves from the component's mean mu_z^(d)(beta) - {z_span:g} to + {z_span:g} "
        "on every dimension (interpolation in the prior, as in the thesis). Since beta sets the means and "
        "variances of every component, a row change alters what all clusters draw: in the thesis beta carries "
        "what a batch shares (on MNIST cursive grade, contrast, thickness) and z the digit's shape. The ML-VAE "
        "ablation (one component) beside it has a unimodal local prior; the thesis finds its global and local "
        "effects mild and hard to tell apart."
    )


# -- Figs. 4.7 and 4.8: group posteriors, the path between two groups, the alignment grid ----------------
def kind_name(names: dict[int, str], kind: int) -> str:
    return names.get(int(kind), str(kind))


def map_figure(points: np.ndarray, kinds: np.ndarray, names: dict[int, str], path: np.ndarray, ends) -> go.Figure:
    fig = go.Figure()
    for i, kind in enumerate(sorted(np.unique(kinds), key=lambda k: (k == RANDOM, k))):
        where = np.flatnonzero(kinds == kind)
        colour = RANDOM_COLOUR if kind == RANDOM else PALETTE[i % len(PALETTE)]
        fig.add_trace(
            go.Scatter(
                x=points[where, 0],
                y=points[where, 1],
                mode="markers",
                name=kind_name(names, kind),
                marker=dict(size=8, color=colour, opacity=0.8, symbol="circle" if kind != RANDOM else "diamond"),
                customdata=where,
                hovertemplate="group #%{customdata}<extra>%{fullData.name}</extra>",
            )
        )
    fig.add_trace(
        go.Scatter(
            x=path[:, 0],
            y=path[:, 1],
            mode="lines+markers",
            name="interpolation path",
            line=dict(color="black", width=2),
            marker=dict(size=5, color="black"),
            hoverinfo="skip",
        )
    )
    for (x, y), label in zip(ends, ("A", "B")):
        fig.add_annotation(x=x, y=y, text=label, showarrow=True, arrowhead=2, font=dict(size=14))
    fig.update_layout(height=480, margin=dict(l=10, r=10, t=10, b=10), legend=dict(itemsizing="constant"))
    return fig


def group_map_section() -> tuple[str, int, float]:
    st.subheader("Where groups land in beta space")
    structures = group_structures(test)
    if not structures:
        st.info("The test split has no categorical label to build structured groups from.")
        st.stop()
    c1, c2, c3 = st.columns(3)
    default = structures.index(DOMAINS) if DOMAINS in structures else 0
    structure = c1.selectbox("Groups that share", structures, index=default, key="gm-structure")
    sizes = [s for s in (4, 8, 16, 32, 64) if s <= len(test) // 4] or [max(1, len(test) // 4)]
    size = c2.select_slider("Group size", sizes, value=16 if 16 in sizes else sizes[-1], key="gm-size")
    share = c3.select_slider(
        "Share of random groups", [0.0, 0.2, 1 / 3, 0.5], value=1 / 3, format_func=lambda s: f"{s:.0%}", key="gm-share"
    )
    groups, post = posteriors_of(run_dir, sel.step, "test", structure, size, share, 5)
    kinds = sorted({int(k) for k in groups.kinds}, key=lambda k: (k == RANDOM, k))
    c1, c2, c3 = st.columns(3)
    kind_a = c1.selectbox("Group A: a group of", kinds, 0, format_func=lambda k: kind_name(groups.names, k), key="gm-a")
    kind_b = c2.selectbox(
        "Group B: a group of",
        kinds,
        min(1, len(kinds) - 1),
        format_func=lambda k: kind_name(groups.names, k),
        key="gm-b",
    )
    steps = c3.slider("Interpolation steps", 3, 11, 7, 2, key="gm-steps")
    a = int(np.flatnonzero(groups.kinds == kind_a)[0])
    b = int(np.flatnonzero(groups.kinds == kind_b)[-1])  # the last of its kind: another group when A's kind is B's
    bmap = beta_map(post.mean, a, b, steps)
    axis = (
        [f"PC{i + 1} of beta means ({bmap.explained[i]:.0%} of variance)" for i in range(2)]
        if bmap.method == "pca"
        else ["beta0", "beta1"]
    )
    fig = map_figure(bmap.points, groups.kinds, groups.names, bmap.path, bmap.points[[a, b]])
    fig.update_layout(xaxis_title=axis[0], yaxis_title=axis[1])
    left, right = st.columns([3, 2])
    with left:
        show_figure(fig, f"beta-map-{run_id}-{structure}-{size}.html", key="gm-map")
        silhouette = separation(post) if len({int(k) for k in post.kinds if k != RANDOM}) > 1 else float("nan")
        spread, width = spread_and_width(post)
        st.caption(
            f"{len(groups)} test groups of {size} ({structure}). Silhouette of the structured kinds' means: "
            f"{silhouette:.2f} (1: tight and far apart, 0: overlapping). The means spread by {spread:.3f} (sd "
            f"over groups), while each posterior q(beta | X) is {width:.3f} wide (its sd): "
            + ("draws from it barely tell groups apart." if spread < 0.5 * width else "draws keep groups apart.")
        )
    with right:
        if is_image:
            x_a = test.batch(groups.groups[a]).to(device)
            x_b = test.batch(groups.groups[b]).to(device)
            grid = alignment_grid(model, x_a, x_b, n=steps).cpu()
            rows = list(grid.view(steps, steps, *test.shape))
            labels = ["beta of A"] + [""] * (steps - 2) + ["beta of B"]
            image = labelled_rows(rows, labels, value_range=test.value_range, label_width=90)
            name_a, name_b = kind_name(groups.names, kind_a), kind_name(groups.names, kind_b)
            show_image(image, f"alignment-{run_id}-{name_a}-{name_b}.png", f"{name_a} → {name_b}", 360, key="gm-grid")
        else:
            st.caption("The alignment grid draws images; this model was trained on a table.")
    explain(
        "**Left:** every point is one group of test inputs, placed at the mean of its global posterior "
        "q(beta | X) (seed002 eqs. 4.8-4.9: the product of one Gaussian vote per input), projected on the two "
        "principal axes of all the groups' means (the thesis draws a t-SNE, Figs. 4.7b and 4.8). Colour: what the "
        "group's inputs share; grey diamonds are random groups. If beta captures what a group has in common, "
        "groups of one kind gather and random groups sit between them. The black line is the straight path "
        "from group A's beta to group B's. **Right:** the alignment grid of Fig. 4.7a: rows decode beta along "
        "that path (A at the top, B at the bottom), columns the local z interpolated from the first input of "
        "A to the first input of B. In the thesis, moving down converts the domain (a photo becomes a 3D "
        "render) while moving across keeps it and changes the content. Try the domains of digits-domains."
    )
    return structure, size, share


# -- Table 4.2: can a classifier tell the groups apart from beta? ----------------------------------------------
def classifier_section(structure: str, size: int, share: float) -> None:
    st.subheader("Telling groups apart from beta (Table 4.2)")
    draws = st.radio(
        "Features",
        [10, 0],
        format_func=lambda d: "10 draws from q(beta) per group (as the thesis)" if d else "posterior means",
        horizontal=True,
        key="cl-draws",
    )
    table = table_of(run_dir, sel.step, structure, size, share, draws)
    shown = table[["classes", "classifier", "train_accuracy", "test_accuracy", "test_chance", "train_groups"]]
    show_table(shown.round(3), f"group-classifiers-{run_id}-{structure}-{size}.csv", key="cl-table")
    explain(
        "Linear and RBF support-vector machines learn the kind of a group from its beta: fitted on groups of "
        "the **training** split (3 orders of it), scored on groups of the **test** split (5 orders), as in "
        "Table 4.2 of the thesis, whose classifiers see samples of q(beta). With **random** groups as one more "
        "class the task gets harder in the thesis (black vs blond hair: 0.95 → 0.54 with a linear SVM), since a "
        "random group that happens to be mostly one kind looks like a group of that kind. The chance column is "
        "the test share of the largest class. Draws from q(beta) tell groups apart only when the groups' means "
        "lie further apart than each posterior is wide (the caption under the map compares the two); the means "
        "alone can differ between kinds even for an untrained encoder, since a group's mean of almost any "
        "feature does, so compare runs (UG-VAE against the ML-VAE) rather than reading one number."
    )


if is_image:
    global_local_section()
else:
    st.caption("The global × local grid draws images; this model was trained on a table.")
chosen = group_map_section()
classifier_section(*chosen)
