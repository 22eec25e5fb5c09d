"""Latent activity: which latent dimensions carry information about the input, how many
nats each group (facet, layer) spends, and how the dimensions line up with known factors
(MIG, SAP, DCI). The IWAE bound and importance weights have their
own page (Importance weights)."""

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from app.state import (
    activity_table,
    current_model,
    disentanglement_scores,
    elbo_kls,
    hvae_layer_statistics,
    load_data,
    unit_statistics_table,
)
from app.widgets import explain, show_figure, show_table
from engine.diagnostics.activity import ACTIVE_THRESHOLD
from engine.errors import AtlasError
from engine.models.hvae import HVAE
from engine.projection.factors import known_factors

st.title("Latent activity")
sel, loaded = current_model()  # shows an error and stops if the run cannot be loaded
run_dir = str(sel.choice.dir)


def _layer_kls() -> tuple[list[str], list[float]]:
    stats = hvae_layer_statistics(run_dir, sel.step)
    return stats.names, [float(k) for k in stats.kl]


st.subheader("Active units per group")
rows = []
bars = go.Figure()
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
    rows.append(
        {
            "group": name,
            "dimensions": len(active),
            "active": int(active.sum()),
            "collapsed fraction": float(1 - active.mean()),
            "KL (nats)": kl,
        }
    )
    bars.add_trace(
        go.Bar(
            x=[f"{name}[{d}]" for d in range(len(active))],
            y=stats["mean_variance"],
            name=name,
            marker=dict(line_width=0, opacity=[1.0 if a else 0.35 for a in active]),
        )
    )
bars.add_hline(y=ACTIVE_THRESHOLD, line_dash="dot", annotation_text=f"active above {ACTIVE_THRESHOLD}")
bars.update_layout(
    yaxis_type="log",
    yaxis_title="Var over x of E[z_d | x]",
    height=320,
    bargap=0.1,
    margin=dict(l=10, r=10, t=10, b=10),
    showlegend=len(rows) > 1,
)
show_figure(bars, "activity.html", key="activity-bars")
show_table(pd.DataFrame(rows), "activity.csv", key="activity")
explain(
    f"A latent dimension is active when Var_x E[z_d|x] > {ACTIVE_THRESHOLD} (Burda et al., 2016): "
    "its posterior mean moves with the input. Collapsed dimensions (faded bars) carry no information "
    "about x. "
    "The KL column is the total over the group, averaged over test inputs"
    + (" (each layer's KL to its conditional prior, at a posterior draw)." if by_layer else ".")
)

st.subheader("Every unit's posterior location and scale")
group = st.selectbox("Latent group", groups, index=0, key="unit-group") if len(groups) > 1 else groups[0]
units = unit_statistics_table(run_dir, sel.step)[group]
index = list(range(len(units.loc_mean)))
per_unit = go.Figure()
per_unit.add_trace(
    go.Scatter(
        x=index,
        y=units.loc_mean,
        error_y=dict(type="data", array=units.loc_sd, thickness=1, width=0),
        mode="markers",
        name="location: mean ± sd over inputs",
        marker=dict(size=4),
    )
)
per_unit.add_trace(
    go.Scatter(
        x=index,
        y=units.scale_mean,
        mode="markers",
        name=f"mean {units.scale_name}",
        marker=dict(size=4, symbol="diamond"),
    )
)
per_unit.update_layout(
    height=340, xaxis_title=f"{group} unit", margin=dict(l=10, r=10, t=10, b=10), legend=dict(orientation="h", y=1.1)
)
show_figure(per_unit, "unit-statistics.html", key="unit-statistics")
active = units.active
explain(
    "For every unit of the group, over the test inputs: the mean of its posterior location with the sd of that "
    "location as a bar, and the mean of its posterior scale (thesis Figs. 5.6–5.10 for z2 and 5.14–5.18 for z1). "
    "A unit whose location does not move with the input (sd near 0) is inactive; "
    f"here {int(active.sum())} of {len(active)} move (variance above {ACTIVE_THRESHOLD})"
    + (f", and their mean {units.scale_name} is {units.scale_mean[active].mean():.2f}." if active.any() else ".")
)

st.subheader("Disentanglement against the known factors")
try:
    factor_names, no_factors = known_factors(load_data(run_dir, "test"), 2000)[0], ""
except AtlasError as err:
    factor_names, no_factors = [], str(err)
total_dims = sum(g.size for g in loaded.model.latent_groups)
if not factor_names:
    st.info(f"There are no known factors to score the latents on: {no_factors}.")
else:
    c1, c2, c3 = st.columns(3)
    options = (["all groups"] if total_dims <= 256 else []) + groups
    chosen = c1.selectbox("Latents", options, key="dis-group")
    dims = (
        total_dims if chosen == "all groups" else next(g.size for g in loaded.model.latent_groups if g.name == chosen)
    )
    with_dci = c2.toggle("DCI too (seconds to minutes)", False, key="dis-dci")
    with_factor_vae = c3.toggle("FactorVAE score too", False, key="dis-fvae")
    if dims > 256:
        st.info(f"{chosen} has {dims:,} dimensions; the scores are computed for groups of at most 256. Pick another.")
    else:
        try:
            scores = disentanglement_scores(
                run_dir, sel.step, None if chosen == "all groups" else chosen, with_dci, with_factor_vae=with_factor_vae
            )
        except AtlasError as err:
            st.error(f"Cannot score these latents: {err}")
            st.stop()
        m = st.columns(6)
        m[0].metric("MIG", f"{scores['mig']:.3f}")
        m[1].metric("SAP", f"{scores['sap']:.3f}")
        if scores["factor_vae"] is not None:
            m[2].metric("FactorVAE score", f"{scores['factor_vae'].score:.3f}")
        if scores["dci"] is not None:
            m[3].metric("DCI disentanglement", f"{scores['dci'].disentanglement:.3f}")
            m[4].metric("DCI completeness", f"{scores['dci'].completeness:.3f}")
            m[5].metric("DCI informativeness", f"{scores['dci'].informativeness:.3f}")
        elif scores["dci_error"]:
            st.caption(f"DCI is not computed here: {scores['dci_error']}")
        normalised = scores["mi"] / np.maximum(scores["entropies"], 1e-12)
        heat = go.Figure(
            go.Heatmap(
                z=normalised.T,
                x=[f"z[{d}]" for d in range(scores["dims"])],
                y=scores["factors"],
                colorscale="Viridis",
                zmin=0,
                zmax=1,
                colorbar=dict(title="I / H"),
                hovertemplate="%{y} · %{x}<br>I(z; factor) / H(factor) = %{z:.3f}<extra></extra>",
            )
        )
        heat.update_layout(
            height=120 + 40 * len(scores["factors"]),
            xaxis_title="latent dimension",
            margin=dict(l=10, r=10, t=10, b=10),
        )
        show_figure(heat, "mutual-information.html", key="dis-mi")
        per_factor = pd.DataFrame(
            {
                "factor": scores["factors"],
                "H (nats)": np.round(scores["entropies"], 3),
                "best dimension": normalised.argmax(0),
                "MIG": np.round(scores["mig_per_factor"], 3),
            }
        )
        show_table(per_factor, "disentanglement.csv", key="dis-table")
        explain(
            "Each cell is the mutual information between one latent dimension (its posterior mean, cut into 20 "
            "equal-width bins) and one ground-truth factor of the test inputs, divided by the factor's entropy: 1 "
            "when the dimension determines the factor. **MIG** (the thesis's §6 definition, plug-in estimates here) "
            "averages over factors the gap between the two dimensions that know most about it, over its entropy: "
            "high when each factor lives in one dimension. **SAP** averages the gap in accuracy between the two "
            "best single-dimension classifiers of each factor (a 20-bin histogram classifier; copies of balanced "
            "factors score 1 − 1/K). **DCI** fits a gradient-boosted classifier of each factor from all dimensions: "
            "disentanglement is high when each dimension matters to one factor, "
            "completeness when each factor is read from one dimension, informativeness is the mean test accuracy. "
            "Everything is measured on the first 2,000 test inputs (SAP and DCI fit on the first half and score the "
            "second). The **FactorVAE score** fixes one factor at a time (64 test inputs sharing its value), takes "
            "the dimension whose variance, over its variance on all inputs, drops most, and reports how often a "
            "majority vote from that dimension names the fixed factor (400 votes train it, 400 score it; "
            "dimensions with a standard deviation under 0.05 are pruned). The factors are the label columns: "
            "categorical ones and numeric ones with at most 64 distinct values, each value a class. With a single "
            "factor, a score says how concentrated that factor is, not how factors are separated."
        )
