"""Layer diagnostics: what every latent layer of a hierarchical VAE carries (seed000 App. B.7;
seed003_004 on posterior collapse and active units)."""

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st
import torch
from plotly.subplots import make_subplots

from app.runs import available_runs, run_slug
from app.state import current_model, hvae_layer_statistics, load_data, load_model
from app.widgets import explain, require_model, show_figure, show_image, show_table
from engine.diagnostics.activity import ACTIVE_THRESHOLD
from engine.diagnostics.dctvae import context_code_length
from engine.diagnostics.hvae import COLLAPSED_NATS, LayerStatistics
from engine.images import labelled_rows
from engine.models.base import model_device
from engine.models.dctvae import DCTVAE
from engine.models.hvae import HVAE
from engine.models.rrvq import RRVQVAE
from engine.randomness import random_stream

st.title("Layer diagnostics")
sel, loaded = current_model()
model = loaded.model
require_model(
    loaded,
    (HVAE, RRVQVAE),
    "a **hierarchical VAE** (family `hvae`, `dctvae` or `rrvq`) with one latent layer per top-down block.",
    "digits-hvae",
)
codes = isinstance(model, RRVQVAE) and model.discrete

run_dir = str(sel.choice.dir)
data = load_data(run_dir, "test")
device = next(model.parameters()).device
stats = hvae_layer_statistics(run_dir, sel.step)


@st.cache_data(max_entries=16, show_spinner="Measuring the context's code length…")
def context_nats(run_dir: str, step: int | None, n: int = 1000) -> float | None:
    """A DCT-VAE's mean -L_DDGM(f(x)) over test inputs in nats (None for a plain HVAE):
    layer_statistics covers the Gaussian layers only."""
    m = load_model(run_dir, step).model
    if not isinstance(m, DCTVAE):
        return None
    return float(context_code_length(m, load_data(run_dir, "test"), n=n).mean())


layers = np.arange(len(stats.names))
labels = [f"{n} ({r}×{r})" for n, r in zip(stats.names, stats.resolutions)]
collapsed = stats.collapsed

st.subheader("KL per layer and its cumulative sum")
unit = st.radio("Unit", ["nats", "bits per dimension"], horizontal=True)
kl = stats.kl if unit == "nats" else stats.kl_bits_per_dim
fig = make_subplots(specs=[[{"secondary_y": True}]])
fig.add_trace(
    go.Bar(
        x=layers,
        y=kl,
        name="KL of the layer",
        customdata=labels,
        marker_color=np.where(collapsed, "#d62728", "#1f77b4"),
        hovertemplate="%{customdata}<br>KL %{y:.4g}<extra></extra>",
    )
)
fig.add_trace(
    go.Scatter(x=layers, y=np.cumsum(kl), name="cumulative KL", mode="lines+markers", line=dict(color="black")),
    secondary_y=True,
)
fig.update_xaxes(title_text="top-down layer (0 = top, lowest resolution)")
fig.update_yaxes(title_text=f"KL ({unit})", secondary_y=False, rangemode="tozero")
fig.update_yaxes(title_text=f"cumulative KL ({unit})", secondary_y=True, rangemode="tozero", showgrid=False)
fig.update_layout(height=360, margin=dict(l=10, r=10, t=10, b=10), legend=dict(orientation="h", y=1.1))
show_figure(fig, "layer-kl.html", key="kl")
context_term = context_nats(run_dir, sel.step)
c1, c2, c3, c4 = st.columns(4)
c1.metric("Total KL", f"{stats.kl.sum():.1f} nats")
c2.metric("Collapsed layers", f"{int(collapsed.sum())} of {len(collapsed)}")
c3.metric("Active units", f"{int(stats.active_units.sum()):,} of {int(stats.units.sum()):,}")
if context_term is not None:
    c4.metric("Context −L_DDGM", f"{context_term:.1f} nats")
    st.caption(
        "This DCT-VAE's top latent is its context, which is not a Gaussian layer and is not among the bars: its "
        f"term of the ELBO is its code length under the diffusion prior, −L_DDGM, {context_term:.1f} nats per test "
        "input (a bound, every step, seed004 eq. 13), on top of the layers' total KL."
    )
explain(
    "Each bar is E_x KL(q(z_l | z_<l, x) ‖ p(z_l | z_<l)) for one layer, measured at a posterior draw "
    f"of the layers above it, over {stats.n_examples:,} test inputs; the layers' KLs sum to the KL term of "
    f"the ELBO. Red bars are **collapsed** layers (KL below {COLLAPSED_NATS} nats per latent unit): their "
    "posterior is almost their prior, so they tell the decoder almost nothing about the input. The "
    "cumulative curve is seed000 Fig. B.14: flat stretches are collapsed layers. Bits per "
    "dimension divide nats by (number of pixel values × ln 2)."
)

st.subheader("Active units per layer")
fig = go.Figure()
fig.add_trace(go.Bar(x=layers, y=stats.units, name="units", marker_color="#c7c7c7"))
fig.add_trace(go.Bar(x=layers, y=stats.active_units, name="active (Var_x E[z|x] > 0.01)", marker_color="#1f77b4"))
fig.add_trace(
    go.Bar(x=layers, y=stats.informative_units, name=f"units with KL > {COLLAPSED_NATS} nats", marker_color="#2ca02c")
)
fig.update_layout(
    barmode="group",
    height=320,
    yaxis_type="log",
    yaxis_title="units (log scale)",
    xaxis_title="top-down layer",
    margin=dict(l=10, r=10, t=10, b=10),
    legend=dict(orientation="h", y=1.12),
)
show_figure(fig, "active-units.html", key="au")
table = pd.DataFrame(
    {
        "layer": stats.names,
        "resolution": [f"{r}×{r}" for r in stats.resolutions],
        "units": stats.units,
        "active units": stats.active_units,
        "units with KL > 0.01": stats.informative_units,
        "KL (nats)": np.round(stats.kl, 4),
        "collapsed": collapsed,
    }
)
show_table(table, "layers.csv", key="layers")
explain(
    f"A unit is **active** when its posterior mean moves with the input, Var_x E[z|x] > {ACTIVE_THRESHOLD} "
    "(Burda et al. 2016; seed003_004). In a hierarchy the posterior mean of a layer is taken along the "
    "mean path (the layers above at their posterior means). Because the prior of a lower layer also "
    "depends on the layers above, a unit can move with the input and still copy its prior; the green "
    "bars count units whose KL to their conditional prior exceeds 0.01 nats, the stricter test."
)

if codes:
    st.caption(
        "In this hierarchy of codes a unit is one position of a layer's grid: its KL is the categorical KL over "
        "the codes there, and its activity the variance over inputs of the expected code embedding Σ_k π_k E_μ[k] "
        "(summed over the embedding's dimensions), along the path of the layers above at their most probable codes."
    )

st.subheader("Beside another run")
kin = ("rrvq",) if isinstance(model, RRVQVAE) else ("hvae", "vdvae", "dctvae")  # runs whose layers compare with these
others = [c for c in available_runs() if c.info.family in kin and c.info.status != "broken" and c.key != sel.choice.key]
default = 0
if isinstance(model, DCTVAE):
    default = next(
        (k + 1 for k, c in enumerate(others) if c.key.startswith("demo/") and run_slug(c.info.id) == "digits-hvae"), 0
    )
other = st.selectbox(
    "Compare with",
    [None, *others],
    index=default,
    format_func=lambda c: "nothing" if c is None else c.label,
    key="compare",
    help="Another hierarchical VAE or DCT-VAE, at its latest checkpoint.",
)


def comparison_figure(pairs: list[tuple[str, LayerStatistics]], value: str, title: str) -> go.Figure:
    """One panel per run, side by side on a shared y axis (the runs may have different layers)."""
    fig = make_subplots(1, len(pairs), shared_yaxes=True, subplot_titles=[name for name, _ in pairs])
    for col, (_, s) in enumerate(pairs, start=1):
        names = [f"{n} ({r}×{r})" for n, r in zip(s.names, s.resolutions)]
        if value == "kl":
            traces = [go.Bar(x=names, y=s.kl, marker_color=np.where(s.collapsed, "#d62728", "#1f77b4"), name="KL")]
        else:
            traces = [
                go.Bar(x=names, y=s.units, marker_color="#c7c7c7", name="units"),
                go.Bar(x=names, y=s.active_units, marker_color="#1f77b4", name="active units"),
            ]
        for trace in traces:
            trace.update(showlegend=col == 1 and value != "kl", legendgroup=trace.name)
            fig.add_trace(trace, 1, col)
    fig.update_xaxes(tickangle=-60, tickfont=dict(size=10))
    fig.update_yaxes(title_text=title, col=1)
    if value != "kl":
        fig.update_yaxes(type="log")
    fig.update_layout(
        barmode="group",
        height=400,
        margin=dict(l=10, r=10, t=60, b=10),
        legend=dict(orientation="h", x=1, xanchor="right", y=1.12, yanchor="bottom"),
    )
    return fig


if other is not None:
    other_stats = hvae_layer_statistics(str(other.dir), None)
    other_context = context_nats(str(other.dir), None)
    mine, theirs = f"{run_slug(sel.choice.info.id)} (selected)", run_slug(other.info.id)
    if mine == f"{theirs} (selected)":
        theirs = other.label
    pairs = [(mine, stats), (theirs, other_stats)]
    show_figure(comparison_figure(pairs, "kl", "KL (nats)"), "layer-kl-compared.html", key="kl-compared")
    show_figure(comparison_figure(pairs, "units", "units (log scale)"), "active-units-compared.html", key="au-compared")
    show_table(
        pd.DataFrame(
            {
                "run": [mine, theirs],
                "latent layers": [len(s.names) for _, s in pairs],
                f"layers above {COLLAPSED_NATS} nats per unit": [int((~s.collapsed).sum()) for _, s in pairs],
                "KL of the layers (nats)": [round(float(s.kl.sum()), 2) for _, s in pairs],
                "context −L_DDGM (nats)": [None if c is None else round(c, 2) for c in (context_term, other_context)],
                "active units": [int(s.active_units.sum()) for _, s in pairs],
                "units": [int(s.units.sum()) for _, s in pairs],
            }
        ),
        "layers-compared.csv",
        key="layers-compared",
    )
    explain(
        "The same measurements on two runs, one panel each (their layers need not match: a DCT-VAE has a fixed "
        "context where a plain HVAE has its top latent layer). A layer counts as used when its KL exceeds "
        f"{COLLAPSED_NATS} nats per latent unit; red bars are the others. A DCT-VAE's context is not a Gaussian "
        "layer and has no bar: its cost, the code length −L_DDGM under the diffusion prior, is in the table's "
        "context column. seed004 argues that a fixed context at the top keeps more of the layers below it in "
        "use; compare the counts of used layers. On the 16×16 digits it does not: over three seeds every Gaussian "
        "layer of digits-dctvae collapses, where digits-hvae keeps one (README, scripts/dctvae_comparison.py)."
    )

st.subheader("Per-unit activity")
metric = st.radio("Colour by", ["KL per unit (nats)", "Var_x E[z|x]"], horizontal=True)
values = stats.unit_kl if metric.startswith("KL") else stats.unit_variance
width = max(len(v) for v in values)
heat = np.full((len(values), width), np.nan)
for i, v in enumerate(values):
    heat[i, : len(v)] = np.sort(v)[::-1]
fig = go.Figure(
    go.Heatmap(
        z=np.log10(np.maximum(heat, 1e-6)),
        y=labels,
        colorscale="Viridis",
        colorbar=dict(title="log10"),
        hovertemplate="%{y}<br>unit rank %{x}<br>log10 value %{z:.2f}<extra></extra>",
    )
)
fig.update_layout(
    height=max(300, 24 * len(values)),
    xaxis_title="units of the layer, sorted (most used first)",
    yaxis_autorange="reversed",
    margin=dict(l=10, r=10, t=10, b=10),
)
show_figure(fig, "unit-activity.html", key="units")

st.subheader("Posterior / prior mixing")
c1, c2, c3 = st.columns(3)
n_inputs = c1.slider("Inputs", 2, 10, 6)
temperature = c2.slider("Prior temperature", 0.0, 1.0, 0.8, 0.1, key="mix_t")
seed = c3.number_input("Seed", 0, 2**31 - 1, 0, key="mix_seed")
# an HVAE mixes by the first layers of every resolution; a hierarchy of codes (one layer per resolution) by its top layers
steps = len(model.names) if isinstance(model, RRVQVAE) else max(model.layers_per_resolution().values())
x = data.batch(torch.arange(n_inputs)).to(device)
cols = [x.cpu()]
heads = ["input"]
with torch.no_grad(), random_stream(int(seed), x.device):
    for s in range(steps + 1):
        cols.append(model.sample_mixed(x, s, temperature=temperature).cpu())
        heads.append(f"{100 * model.posterior_share(s):.0f}%")
rows = [torch.stack([c[i] for c in cols]) for i in range(n_inputs)]
show_image(
    labelled_rows(rows, [f"test #{i}" for i in range(n_inputs)], data.value_range, label_width=70),
    "posterior-prior-mixing.png",
    key="mix",
)
st.caption(
    "Columns, left to right: "
    + " · ".join(
        f"{h} = input"
        if i == 0
        else f"{h} from q (top {i - 1} layers)"
        if isinstance(model, RRVQVAE)
        else f"{h} from q (first {i - 1} layers of each resolution)"
        for i, h in enumerate(heads)
    )
)
explain(
    "seed000 Fig. B.12. Column s decodes the input with the first s latent layers **of every "
    "resolution** drawn from the posterior q(z_l | z_<l, x) and the remaining layers drawn from the "
    "prior p(z_l | z_<l) at the chosen temperature; each column is labelled with the share of all "
    "latent values that came from q. Where the picture already matches the input with a small "
    "share, the first layers of each resolution decide the image and the later ones add detail."
)

st.subheader("Samples at several temperatures")
c1, c2 = st.columns(2)
per_row = c1.slider("Samples per row", 4, 16, 10)
sample_seed = c2.number_input("Seed", 0, 2**31 - 1, 0, key="t_seed")
if codes:
    st.caption("For codes the temperature divides the prior's logits before each draw.")
temps = [1.0, 0.9, 0.8, 0.7, 0.5]
rows = []
with torch.no_grad():
    for t in temps:
        with random_stream(int(sample_seed), model_device(model)):
            rows.append(model.sample(per_row, temperature=t).cpu())
show_image(
    labelled_rows(rows, [f"T = {t}" for t in temps], data.value_range, label_width=70),  # the label font has no τ
    "temperature-samples.png",
    key="temps",
)
explain(
    "Every latent layer is drawn from its prior with the standard deviation multiplied by τ (the "
    "thesis shows MNIST rows at τ = 1.0, 0.9, 0.8, 0.7, 0.5). Lower τ trades diversity for cleaner "
    "samples. Each row uses the same random seed, so columns are comparable across rows."
)
