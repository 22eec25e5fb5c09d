"""Latent map: every encoded input of a data set as one point of a 2-D map (PCA at once,
UMAP or t-SNE computed in a background process and cached on disk), coloured by a label,
a cluster or the reconstruction error; select points to see them, their mean decoded,
their neighbours, and send them to the traversal or HMC pages."""

from __future__ import annotations

import math
import time

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st
import torch

from app.components.latent_scatter import latent_scatter
from app.maps import map_figure
from app.navigation import PAGES
from app.runs import runs_root
from app.state import HMC_INPUT_KEY, MAP_SELECTION_KEY, current_model, load_data, unit_statistics_table
from app.widgets import download_figure, explain, show_table
from engine.data import load_dataset
from engine.data.base import Dataset
from engine.diagnostics.facets import clusters_of_means
from engine.errors import AtlasError
from engine.images import display_scale, image_grid, upscale
from engine.models.base import ClusteredPrior, EmbeddedCodes, model_device
from engine.projection import (
    METHODS,
    EncodedPoints,
    MapKey,
    PointsKey,
    Projection,
    ProjectionCache,
    encode_dataset,
    export_projector,
    map_job_status,
    start_map_job,
)
from engine.projection.encoding import pooled_per_channel
from engine.projection.maps import exact_knn
from engine.projection.sprites import SpriteAtlas, sprite_atlas
from engine.training import RunSpec

AXES = "axes"  # no projection: two of the latent dimensions themselves
METHOD_NAMES = {"pca": "PCA (at once)", "umap": "UMAP", "tsne": "t-SNE", AXES: "Two latent axes"}
GALLERY = 48
RECON = "reconstruction error"

st.title("Latent map")
sel, loaded = current_model()
model, run = loaded.model, loaded.run
run_dir = str(sel.choice.dir)
spec = RunSpec.from_dict(run.config)
own_test = load_data(run_dir, "test")
cache = ProjectionCache.for_runs(runs_root())


# -- which points ---------------------------------------------------------------------------------
WHOLE = "all"  # the data set's train and test splits, train first


def larger_options(n_points: int) -> dict:
    """Data options whose test split has at least n_points examples (a procedural data set
    renders as many as asked)."""
    options = dict(spec.data["options"])
    base_n = int(options.get("n") or len(load_data(run_dir, "train")) + len(own_test))
    options["n"] = int(math.ceil(n_points * base_n / len(own_test) * 1.001))
    return options


@st.cache_resource(max_entries=4, show_spinner=False)
def map_dataset(run_dir: str, split: str, n_points: int) -> tuple[Dataset, dict]:
    """The inputs the map is drawn from: the run's own test split, the whole data set (train
    then test), or a larger test split of the same procedural data."""
    if split == WHOLE:
        return load_data(run_dir, WHOLE), dict(spec.data["options"])
    if n_points <= len(own_test):
        return own_test, dict(spec.data["options"])
    options = larger_options(n_points)
    return load_dataset(spec.data["name"], split="test", seed=spec.train.seed, **options), options


@st.cache_resource(max_entries=4, show_spinner=False)
def encoded(run_dir: str, step: int, split: str, n_points: int) -> EncodedPoints:
    """Every latent group's posterior means (and reconstruction errors) of the first n_points
    inputs, from the disk cache or encoded once (and then cached on disk)."""
    data, options = map_dataset(run_dir, split, n_points)
    key = PointsKey(run.id, step, spec.data["name"], options, split, n_points)
    found = cache.get_latents(key)
    if found is None:
        with st.spinner(f"Encoding {n_points:,} inputs (once: the latents are cached on disk)…"):
            found = encode_dataset(model, data, n=n_points)
        cache.put_latents(key, found)
    return found


lazy = own_test.is_lazy
# Whether the whole data set can be mapped: a test split that is a shipped subset (Fashion-MNIST
# without its files) stands in for data that is not on this machine.
whole = not lazy and "shipped_subset" not in own_test.meta
c1, c2, c3, c4 = st.columns([1.2, 1, 1, 1.2])
split = "test"
if lazy:
    n_points = int(
        c1.number_input(
            "Points (test inputs)",
            min(1_000, len(own_test)),
            1_000_000,
            len(own_test),
            step=10_000,
            help="A procedural data set renders as many inputs as you ask: beyond the run's "
            f"own {len(own_test):,} test inputs the map draws a larger test split of the "
            "same data (such points cannot be sent to the other pages).",
        )
    )
elif whole:
    split = c1.radio(
        "Points",
        ["test", WHOLE],
        format_func={"test": f"test ({len(own_test):,})", WHOLE: "train + test"}.get,
        horizontal=True,
        key="map-split",
        help="The run's test inputs, or every input of the data set: its train split, then its test split "
        "(such points cannot be sent to the other pages). A large map's UMAP or t-SNE takes minutes.",
    )
    n_points = len(map_dataset(run_dir, split, len(own_test))[0])
else:
    n_points = len(own_test)
    c1.metric("Points (test inputs)", f"{n_points:,}")
groups = [g.name for g in model.latent_groups]
group_options = groups + (["all groups"] if len(groups) > 1 else [])
try:
    points_all = encoded(run_dir, loaded.step, split, n_points)
except AtlasError as err:
    st.error(f"Cannot encode these inputs: {err}")
    st.stop()
first = 0
if all(g.kind == "layer" for g in model.latent_groups):  # a hierarchy: open on the layer whose points spread most
    first = int(np.argmax([points_all.group(name).var(0).sum() for name in groups]))
group = c2.selectbox(
    "Latent group", group_options, index=first, help="Which latents the map shows: a facet, a layer, or all."
)
group_key = None if group == "all groups" else group
if isinstance(model, EmbeddedCodes):
    st.caption(
        "This model's latents are discrete codes: each point is the posterior's expected code embedding "
        "Σ_k π_k E_μ[k] at every position of the layer, side by side."
    )
method = c3.radio("Method", [*METHODS, AXES], format_func=METHOD_NAMES.get, horizontal=True, key="map-method")
data, options = map_dataset(run_dir, split, n_points)
points = points_all.group(group_key)
spatial_shape = next((g.shape for g in model.latent_groups if g.name == group_key and len(g.shape) == 3), None)
pooled = spatial_shape is not None and (
    st.radio(
        "Spatial latents",
        ["flattened", "pooled per channel"],
        horizontal=True,
        key="map-pooling",
        help="Every value of the (channels x rows x columns) latent as a dimension, or each channel's mean "
        "over its positions: one dimension per channel, wherever in the image its content is.",
    )
    == "pooled per channel"
)
if pooled:
    points = pooled_per_channel(points, spatial_shape)
    group_key = f"{group_key} (pooled per channel)"  # the maps of pooled points are cached apart
own = split == "test" and n_points <= len(own_test)


# -- colours ----------------------------------------------------------------------------------------
categorical = [n for n, col in data.labels.items() if col.is_categorical]
continuous = [n for n, col in data.labels.items() if not col.is_categorical]
cluster_options = [f"cluster of {n}" for n in groups] if isinstance(model, ClusteredPrior) else []
colour_options = cluster_options + categorical + ([RECON] if points_all.recon_error is not None else []) + continuous
colour_by = c4.selectbox("Colour by", colour_options or ["(nothing)"], key="map-colour")


def colouring() -> tuple[np.ndarray | None, dict[int, str] | None, np.ndarray | None]:
    """(category per point, category names) for a discrete colouring, or (None, None, values)."""
    if colour_by.startswith("cluster of "):
        name = colour_by.removeprefix("cluster of ")
        c = clusters_of_means(model, name, points_all.means[name])
        return c, {int(k): f"c{k}" for k in np.unique(c)}, None
    if colour_by in categorical:
        col = data.labels[colour_by]
        return col.values[:n_points].numpy(), dict(enumerate(col.categories)), None
    if colour_by == RECON:
        return None, None, points_all.recon_error
    if colour_by in continuous:
        return None, None, data.labels[colour_by].values[:n_points].numpy()
    return None, None, None


# -- the map: PCA at once, UMAP / t-SNE from the cache or a background job --------------------------------
points_key = PointsKey(run.id, loaded.step, spec.data["name"], options, split, n_points)


@st.cache_data(max_entries=8, show_spinner="Computing the PCA map…")
def pca_map(digest: str, _points: np.ndarray):
    key = MapKey.create(points_key, group_key, "pca")
    return cache.get_or_compute(key, _points)


def unit_names() -> list[str]:
    if pooled:
        return [f"{group}[channel {c}]" for c in range(points.shape[1])]
    if group_key is not None:
        return [f"{group_key}[{d}]" for d in range(points.shape[1])]
    return [f"{g.name}[{d}]" for g in model.latent_groups for d in range(g.size)]


def axes_map() -> Projection:
    """Two latent dimensions as the map's axes, by default the two whose posterior sd is smallest
    on average (seed003 Fig. 5.12: the dimensions a model is surest about)."""
    stats = unit_statistics_table(run_dir, sel.step)
    names = [group] if group != "all groups" else [g.name for g in model.latent_groups]
    sd = np.concatenate([stats[name].scale_mean for name in names])
    if pooled:
        sd = pooled_per_channel(sd[None], spatial_shape)[0]
    lowest = [int(d) for d in np.argsort(sd, kind="stable")[:2]]
    labels = unit_names()
    a1, a2 = st.columns(2)
    first = a1.selectbox("Horizontal axis", range(len(labels)), index=lowest[0], format_func=labels.__getitem__)
    second = a2.selectbox("Vertical axis", range(len(labels)), index=lowest[1], format_func=labels.__getitem__)
    coords = np.ascontiguousarray(points[:, [first, second]], dtype=np.float32)
    return Projection(coords, AXES, {"dims": [first, second]}, n_fit=len(points), seed=0, seconds=0.0)


pca = pca_map(MapKey.create(points_key, group_key, "pca").digest(), points)
shown, pending = pca, None
if method == AXES and points.shape[1] >= 2:
    shown = axes_map()
elif method == AXES:
    st.info("This group has one dimension: the PCA map shows it against nothing else.")
elif method != "pca":
    key = MapKey.create(points_key, group_key, method)
    found = cache.get(key)
    if found is not None:
        shown = found
    else:
        try:
            start_map_job(cache, key, points)
        except AtlasError as err:
            st.error(f"Cannot compute the {METHOD_NAMES[method]} map: {err}")
        pending = key

if pending is not None:

    @st.fragment(run_every=1)
    def progress() -> None:
        status = map_job_status(cache, pending) or {}
        if status.get("state") == "done" or cache.get(pending) is not None:
            st.rerun()  # the whole page: the new map replaces the PCA one
        if status.get("state") == "error":
            st.error(f"The {METHOD_NAMES[method]} map failed: {status.get('error')}")
            return
        elapsed = time.time() - status.get("started", time.time())
        st.progress(
            float(status.get("fraction", 0.0)),
            text=f"{METHOD_NAMES[method]} is computing in a background process ({status.get('stage', 'starting')}, "
            f"{elapsed:.0f} s); the PCA map is shown meanwhile and is replaced when it is ready.",
        )

    progress()


def hover_note(atlas: SpriteAtlas) -> str:
    """What hovering shows, when it is less than every input at its own size."""
    (h, w), layout = atlas.image_hw, atlas.layout
    if atlas.subsampled:
        return (
            f" Hover thumbnails for a random {len(atlas.ids):,} of the points ({layout.tile_w}×{layout.tile_h} px): "
            "more would not fit the browser's budget."
        )
    if (layout.tile_h, layout.tile_w) != (h, w):
        return (
            f" Hover thumbnails shrunk from {w}×{h} to {layout.tile_w}×{layout.tile_h} px to fit the browser's budget."
        )
    return ""


def figure(coords: np.ndarray) -> go.Figure:
    cats, names, values = colouring()
    if shown.method == AXES:
        axis = tuple(unit_names()[d] + " (posterior mean)" for d in shown.params["dims"])
    elif shown.method == "pca" and shown.explained_variance_ratio is not None:
        axis = tuple(f"PC{i + 1} ({shown.explained_variance_ratio[i]:.0%} of variance)" for i in range(2))
    else:
        axis = (f"{METHOD_NAMES[shown.method]} 1", f"{METHOD_NAMES[shown.method]} 2")
    fig = map_figure(coords, colour_by, cats, names, values, axis)
    fig.update_layout(uirevision=f"{shown.method}-{group}")  # keep the zoom while colours change
    return fig


@st.cache_resource(max_entries=4, show_spinner=False)
def hover_sprites(run_dir: str, split: str, n_points: int) -> SpriteAtlas:
    """The map's hover thumbnails: every input's image in sprite sheets (downscaled, or for
    a subset, when there are too many to send to the browser)."""
    images = map_dataset(run_dir, split, n_points)[0]
    with st.spinner(f"Drawing {n_points:,} hover thumbnails…"):
        return sprite_atlas(images.batch, n_points, images.value_range)


atlas = hover_sprites(run_dir, split, n_points) if data.kind == "image" else None
st.caption(
    f"{len(points):,} points, {points.shape[1]} latent dimensions ({group}); map: {METHOD_NAMES[shown.method]}"
    + (f", fitted on {shown.n_fit:,} points and the rest placed into it" if shown.n_fit < shown.n else "")
    + ("." if shown.method == AXES else f", computed in {shown.seconds:.1f} s (cached on disk).")
    + ("" if atlas is None else hover_note(atlas))
)
left, right = st.columns([3, 1.2])
with left:
    fig = figure(shown.coords)
    picked = latent_scatter(fig, atlas, key=f"latent-map-{run.id}")  # a new model starts unselected
    download_figure(fig, f"latent-map-{run.id}-{group}-{shown.method}.html", key="latent-map")


def thumbnails(ids: list[int], captions: list[str]) -> None:
    if data.kind == "image":
        x = data.batch(torch.as_tensor(ids))
        scale = display_scale(x.shape[-1], target=56)
        st.image(
            [upscale(image_grid(t[None], padding=0, value_range=data.value_range), scale) for t in x],
            caption=captions,
            width=max(80, scale * x.shape[-1]),
            output_format="PNG",
        )
    else:
        show_table(
            pd.DataFrame(data.batch(torch.as_tensor(ids)).flatten(1).numpy(), index=ids), f"selected-{run.id}.csv"
        )


def mean_latent_decoded(ids: list[int]) -> torch.Tensor:
    """The decoding of the selected points' mean latent (every group averaged)."""
    device = model_device(model)
    z = {name: torch.from_numpy(m[ids].mean(0, keepdims=True)).to(device) for name, m in points_all.means.items()}
    shapes = {g.name: g.shape for g in model.latent_groups}
    z = {name: v.reshape(1, *shapes[name]) for name, v in z.items()}
    with torch.no_grad():
        return model.decode(z).cpu()


with right:
    if picked:
        st.markdown(f"**{len(picked):,} selected** (the first {min(GALLERY, len(picked))} shown)")
        if data.kind == "image":
            try:
                mean_image = mean_latent_decoded(picked)
                st.image(
                    upscale(
                        image_grid(mean_image, padding=0, value_range=data.value_range),
                        display_scale(mean_image.shape[-1], target=120),
                    ),
                    caption="their mean latent, decoded",
                    output_format="PNG",
                )
            except (AtlasError, RuntimeError, KeyError) as err:
                st.caption(f"The mean latent cannot be decoded for this model: {err}")
        if own:
            b1, b2 = st.columns(2)
            if b1.button("Traverse these", help="Open Latent traversals with this selection as its gallery"):
                st.session_state.setdefault(MAP_SELECTION_KEY, {})[run_dir] = picked[:GALLERY]
                st.switch_page(next(p for p in PAGES if p.file == "traversals.py").page())
            if b2.button("HMC on the first", help="Open HMC chains on the posterior of the first selected input"):
                st.session_state[HMC_INPUT_KEY] = picked[0]
                st.session_state["hmc_source"] = "latent posterior of the selected model"
                st.switch_page(next(p for p in PAGES if p.file == "hmc_chains.py").page())
        else:
            st.caption(
                "These points come from the whole data set, training inputs included, so they cannot be sent to "
                "the traversal or HMC pages; map the test split to send a selection."
                if split == WHOLE
                else "These points come from a larger test split than the run's own, so they cannot be sent to "
                "the traversal or HMC pages; lower the number of points to send a selection."
            )
        thumbnails(picked[:GALLERY], [f"#{i}" for i in picked[:GALLERY]])
    else:
        st.caption(
            "Drag a lasso or a box over points (or click one) to see the inputs, their mean latent decoded, "
            "and to send them to the traversal or HMC pages. Hover a point to see its input, number and colour value."
        )

# -- nearest neighbours -----------------------------------------------------------------------------
st.subheader("Nearest neighbours in latent space")
n1, n2 = st.columns([1, 3])
anchor = int(n1.number_input("Input #", 0, len(points) - 1, picked[0] if picked else 0, key=f"nn-{n_points}"))
k = int(n1.slider("Neighbours", 4, 32, 12))
idx, dist = exact_knn(points[anchor : anchor + 1], points, k + 1)
keep = idx[0] != anchor  # the query is its own nearest neighbour (or ties with a duplicate)
order, dist = [anchor] + [int(i) for i in idx[0][keep][:k]], dist[0][keep][:k]
with n2:
    thumbnails(order, [f"#{anchor} (query)"] + [f"#{i} · {d:.2f}" for i, d in zip(order[1:], dist, strict=True)])
explain(
    "The number under each neighbour is its distance from the query: Euclidean, between posterior means "
    f"E[z|x] in the {group} latents (all {points.shape[1]} dimensions), not in the 2-D map: the map keeps "
    "neighbourhoods only approximately, so two inputs next to each other in the map may be far apart in latent "
    "space, and the other way round.",
    title="About the neighbours",
)

# -- export -----------------------------------------------------------------------------------------
with st.expander("Export for TensorBoard's projector"):
    n_export = int(
        st.number_input(
            "Points to export (a random subset when fewer than all)",
            min(len(points), 100),
            min(len(points), 100_000),
            min(len(points), 10_000),
            step=1000,
        )
    )
    if st.button("Build the bundle"):
        rng = np.random.default_rng(0)
        chosen = (
            np.sort(rng.choice(len(points), n_export, replace=False))
            if n_export < len(points)
            else np.arange(len(points))
        )
        meta = pd.DataFrame({"input": chosen})
        for name in categorical:
            col = data.labels[name]
            meta[name] = [col.categories[v] for v in col.values[:n_points].numpy()[chosen]]
        if points_all.recon_error is not None:
            meta[RECON] = points_all.recon_error[chosen]
        images = data.batch(torch.as_tensor(chosen)) if data.kind == "image" else None
        bundle = export_projector(points[chosen], meta, images, name=f"{run.id}-{group}")
        st.session_state["map-export"] = (bundle.data, bundle.note)
    if "map-export" in st.session_state:
        payload, note = st.session_state["map-export"]
        st.caption(note)
        st.download_button(
            "Download the projector bundle (zip)", payload, f"projector-{run.id}-{group}.zip", mime="application/zip"
        )

explain(
    "Each point is one test input's posterior mean E[z|x], mapped to 2-D. **PCA** is a linear projection onto "
    "the two directions of largest variance: exact, instant, and distances along its axes mean something. "
    "**UMAP** and **t-SNE** are nonlinear: they keep who is near whom, so clusters stand out, but the sizes of "
    "and distances between clusters are not meaningful. For large sets they are fitted on a random subset and "
    "the other points are placed into that map. Every map is computed once per (run, checkpoint, data, latent "
    "group, method, settings) and kept on disk; UMAP and t-SNE run in a background process so the page stays "
    "responsive, showing PCA until they are ready. **Two latent axes** is no projection: two of the latent "
    "dimensions themselves, by default the two with the smallest mean posterior sd, the dimensions the model "
    "is surest about (seed003 Fig. 5.12 shows a TD-VAE's z2 this way, coloured by texture family)."
)
