"""Latent traversals: what each latent dimension controls."""

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st
import torch

from app.runs import trained_on_images
from app.state import MAP_SELECTION_KEY, activity_table, current_model, load_data
from app.widgets import explain, offer_demos, show_figure, show_image, show_table
from engine.diagnostics.activity import ACTIVE_THRESHOLD, GroupActivity
from engine.images import display_scale, image_grid, labelled_rows, png_bytes, upscale
from engine.models.base import continuous_latents, posterior_means
from engine.traversal import (
    RANGE_MODES,
    block_traversal_latents,
    channel_blocks,
    channel_order,
    decode_group,
    grid_2d,
    interpolate,
    position_label,
    traversal_latents,
    traversal_range,
)

GALLERY_PAGE = 24
FROM_MAP = "the latent map's selection"

MAX_GRID_ROWS = 24

st.title("Latent traversals")
sel, loaded = current_model()
model = loaded.model
run_dir = str(sel.choice.dir)
data = load_data(run_dir, "test")
device = next(model.parameters()).device
if data.kind != "image":
    offer_demos("Traversals draw images; the selected model was trained on a table.", trained_on_images)
if not continuous_latents(model):
    offer_demos(
        f"Traversals move continuous latents along a line; this {getattr(model.config, 'model_name', 'model')}'s "
        "latents are discrete codes, where there is no line to move along. The **Discrete codes** page swaps "
        "one code at a time instead, and resamples one layer of codes at a time.",
        lambda info: info.family != "rrvq" and trained_on_images(info),
    )

groups = [g for g in model.latent_groups]
group = groups[0]
if len(groups) > 1:
    names = [g.name for g in groups]
    group = groups[
        names.index(
            st.selectbox(
                "Latent group", names, format_func=lambda n: f"{n} ({next(g.kind for g in groups if g.name == n)})"
            )
        )
    ]
stats = activity_table(run_dir, sel.step)[group.name]
act = GroupActivity(**{k: torch.from_numpy(v) for k, v in stats.items()})
order = act.order().tolist()
active = act.active.tolist()


# -- the starting point ---------------------------------------------------------------------
def gallery() -> int:
    """A filterable, paged gallery of test inputs; returns the chosen index."""
    categorical = [name for name, col in data.labels.items() if col.is_categorical]
    index = torch.arange(len(data))
    c1, c2, c3 = st.columns(3)
    sent = [i for i in st.session_state.get(MAP_SELECTION_KEY, {}).get(run_dir, []) if 0 <= i < len(data)]
    filters = ["(no filter)", *categorical] + ([FROM_MAP] if sent else [])
    if len(filters) > 1:
        column = c1.selectbox("Filter by", filters, index=filters.index(FROM_MAP) if sent else 0)
        if column == FROM_MAP:
            index = torch.as_tensor(sent)
        elif column != "(no filter)":
            col = data.labels[column]
            value = c2.selectbox("Value", col.categories)
            index = index[col.values == col.categories.index(value)]
    pages = max(1, (len(index) + GALLERY_PAGE - 1) // GALLERY_PAGE)
    page = c3.number_input(f"Page (of {pages})", 1, pages, 1)
    shown = index[(page - 1) * GALLERY_PAGE : page * GALLERY_PAGE]
    thumbs = data.batch(shown)
    scale = display_scale(thumbs.shape[-1], target=56)
    st.image(
        [upscale(image_grid(t[None], padding=1, value_range=data.value_range), scale) for t in thumbs],
        caption=[f"#{i}" for i in shown.tolist()],
        output_format="PNG",
    )
    return int(st.selectbox("Use test example", shown.tolist(), format_func=lambda i: f"#{i}"))


st.subheader("Start from")
source = st.radio(
    "Starting point",
    ["a test input", "a random test input", "the prior mean"],
    horizontal=True,
    label_visibility="collapsed",
)
if source == "a test input":
    with st.expander("Gallery of test inputs", expanded=True):
        chosen = gallery()
elif source == "a random test input":
    if st.button("Draw another") or "random_input" not in st.session_state:
        st.session_state["random_input"] = int(torch.randint(len(data), ()).item())
    chosen = st.session_state["random_input"] % len(data)
else:
    chosen = None

with torch.no_grad():
    if chosen is None:
        base = {g.name: torch.zeros(g.size, device=device) for g in groups}
        start_caption = "the prior mean (all latents 0)"
    else:
        x0 = data.batch(torch.tensor([chosen])).to(device)
        base = {name: m[0].flatten() for name, m in posterior_means(model, x0).items()}
        start_caption = f"test input #{chosen}"
        show_image(
            image_grid(x0.cpu(), value_range=data.value_range),
            f"input-{chosen}.png",
            caption=f"Test input #{chosen}",
            target_width=96,
            key="start",
        )


# -- the traversal grid ---------------------------------------------------------------------
st.subheader("Traversal grid")
whole_channel = len(group.shape) == 3 and (
    st.radio(
        "Traverse",
        ["one position", "whole channel"],
        horizontal=True,
        help="A spatial latent (channels x rows x columns): move one channel at one position, "
        "or all positions of a channel together.",
    )
    == "whole channel"
)
c1, c2, c3 = st.columns(3)
mode = c1.radio(
    "Range",
    RANGE_MODES,
    format_func={"prior": "± k prior sd", "posterior": "aggregate posterior (mean ± 2 sd)", "data": "data min–max"}.get,
)
k = c2.slider("k (prior sd)", 0.5, 4.0, 2.0, 0.5, disabled=mode != "prior")
steps = c3.slider("Steps", 5, 15, 11, 2)
low, high = traversal_range(mode, act, k=k)
base_z = base[group.name].cpu()
if whole_channel:
    channels = channel_order(act, group.shape)
    rows_shown, blocks = channels[:MAX_GRID_ROWS], channel_blocks(group.shape)
    channel_kl = act.kl.view(group.shape[0], -1).sum(-1)
    latents = block_traversal_latents(base_z, [blocks[c] for c in rows_shown], low, high, steps=steps)
    labels = [f"channel {c}  {channel_kl[c].item():.2f} nats" for c in rows_shown]
    total, unit = group.shape[0], "channels"
else:
    rows_shown = order[:MAX_GRID_ROWS]  # a layer of a hierarchical VAE can have a thousand dimensions
    latents = traversal_latents(base_z, rows_shown, low, high, steps=steps)
    labels = [
        f"{position_label(d, group.shape)}  {act.kl[d].item():.2f} nats" + ("" if active[d] else "  (inactive)")
        for d in rows_shown
    ]
    total, unit = len(order), "dimensions"
with torch.no_grad():
    images = decode_group(model, base, group.name, latents.to(device)).cpu()  # (rows, steps, C, H, W)
show_image(
    labelled_rows(list(images), labels, value_range=data.value_range),
    f"traversal-{sel.choice.info.id}-{group.name}.png",
    key="grid",
)
if total > len(rows_shown):
    st.caption(f"The {len(rows_shown)} most informative of {total} {unit} are shown.")
if whole_channel:
    st.caption("Each row moves all positions of one channel together, each from its low to its high end.")
explain(
    f"Each row starts from {start_caption} and moves **one** latent dimension from the low end of "
    "its range (left) to the high end (right), keeping all the others fixed; the middle column is "
    "close to the start. Rows are sorted by how much information the dimension carries (its KL "
    "from the prior, in nats). A dimension is **inactive** when its posterior mean hardly changes "
    f"across inputs (Var_x E[z|x] < {ACTIVE_THRESHOLD}); decoding ignores it, so its row does not "
    "change. Ranges: ± k prior standard deviations; the aggregate posterior fitted to the test "
    "set (mean ± 2 sd, as in disentanglement_lib); or the smallest and largest posterior mean seen."
)

# -- KL per dimension -----------------------------------------------------------------------
st.subheader("Information per dimension")
table = pd.DataFrame(
    {
        "dimension": [f"z{d}" for d in range(group.size)],
        "KL (nats)": act.kl.numpy(),
        "Var_x E[z|x]": act.mean_variance.numpy(),
        "active": active,
    }
)
fig = go.Figure(
    go.Bar(
        x=table["dimension"],
        y=table["KL (nats)"],
        marker_color=["#1f77b4" if a else "#c7c7c7" for a in active],
        hovertext=[f"Var_x E[z|x] = {v:.3g}" for v in table["Var_x E[z|x]"]],
    )
)
fig.update_layout(height=280, margin=dict(l=10, r=10, t=10, b=10), yaxis_title="mean KL (nats)")
show_figure(fig, f"kl-per-dimension-{sel.choice.info.id}.html", key="kl")
show_table(table, f"activity-{sel.choice.info.id}.csv", key="activity")
explain(
    "The bar is the average over test inputs of KL(q(z_d|x) ‖ p(z_d)): how many nats the encoder "
    f"puts into dimension d. Grey bars are inactive dimensions (Var_x E[z|x] below {ACTIVE_THRESHOLD}), "
    "the signature of posterior collapse: the model has learned to leave them at the prior."
)


# -- live sliders -----------------------------------------------------------------------------
@st.fragment
def live_sliders() -> None:
    st.subheader("Move the latents yourself")
    shown_dims = order[: min(len(order), 12)]
    left, right = st.columns([3, 2])
    z = base_z.clone()
    with left:
        for d in shown_dims:
            lo, hi = float(low[d]), float(high[d])
            z[d] = st.slider(
                f"z{d}" + ("" if active[d] else " (inactive)"),
                lo,
                hi,
                float(np.clip(float(base_z[d]), lo, hi)),
                step=(hi - lo) / 100,
                key=f"live-{sel.choice.key}-{group.name}-{chosen}-{d}-{mode}",
            )
    with torch.no_grad():
        x = decode_group(model, base, group.name, z[None].to(device)).cpu()
    with right:
        picture = upscale(image_grid(x, padding=0, value_range=data.value_range), display_scale(x.shape[-1], 256))
        st.image(png_bytes(picture), caption="decoded", width=256, output_format="PNG")
    if len(order) > len(shown_dims):
        st.caption(
            f"The {len(shown_dims)} most informative of {len(order)} dimensions are shown; the rest stay at the start."
        )


live_sliders()

# -- 2-D grid -----------------------------------------------------------------------------------
st.subheader("Two dimensions at once")
c1, c2, c3 = st.columns(3)
dim_x = c1.selectbox("Across (columns)", order, index=0, format_func=lambda d: f"z{d}")
dim_y = c2.selectbox("Down (rows)", order, index=min(1, len(order) - 1), format_func=lambda d: f"z{d}")
steps2 = c3.slider("Steps per axis", 5, 11, 7, 2)
if dim_x == dim_y:
    st.info("Pick two different dimensions.")
else:
    with torch.no_grad():
        grid = grid_2d(base_z, dim_x, dim_y, low, high, steps=steps2)
        images = decode_group(model, base, group.name, grid.to(device)).cpu()
    show_image(
        image_grid(images.flatten(0, 1), nrow=steps2, value_range=data.value_range),
        f"grid2d-z{dim_x}-z{dim_y}.png",
        caption=f"z{dim_x} grows to the right, z{dim_y} downwards",
        key="grid2d",
    )
    explain(
        "The grid decodes every combination of the two dimensions over their ranges, all other "
        "latents fixed at the start: it shows whether the two factors combine independently "
        "(a disentangled pair) or interact."
    )

# -- interpolation ---------------------------------------------------------------------------------
st.subheader("Interpolate between two test inputs")
c1, c2, c3 = st.columns(3)
a = int(c1.number_input("From test example #", 0, len(data) - 1, 0))
b = int(c2.number_input("To test example #", 0, len(data) - 1, min(1, len(data) - 1)))
steps3 = c3.slider("Steps", 5, 15, 9, 2, key="interp-steps")
with torch.no_grad():
    pair = data.batch(torch.tensor([a, b])).to(device)
    means = posterior_means(model, pair)
    ends = {name: m.flatten(1) for name, m in means.items()}
    rows = []
    for how in ("linear", "spherical"):
        path = interpolate(ends[group.name][0].cpu(), ends[group.name][1].cpu(), steps=steps3, mode=how)
        start = {name: v[0] for name, v in ends.items()}
        rows.append(decode_group(model, start, group.name, path.to(device)).cpu())
show_image(
    labelled_rows(rows, ["linear", "spherical"], value_range=data.value_range),
    f"interpolation-{a}-{b}.png",
    key="interp",
)
explain(
    "Both rows decode a path between the posterior means of the two inputs. The straight line "
    "(linear) passes through latents of smaller norm than typical Gaussian samples; the spherical "
    "path (slerp) keeps the norm, which often gives sharper images midway."
)
