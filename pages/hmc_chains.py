"""HMC chains: where Hamiltonian Monte Carlo wanders in a posterior, and whether it mixed."""

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st
import torch
from plotly.subplots import make_subplots

from app import links
from app.state import HMC_INPUT_KEY, current_model, load_data
from app.widgets import explain, show_figure, show_image, show_table
from engine.errors import AtlasError
from engine.images import labelled_rows
from engine.inference.chains import (
    ESS_OK,
    RHAT_OK,
    HMCSettings,
    chain_summary,
    decoded_along_chain,
    density_view,
    hidden_region,
    inpaint,
    run_posterior,
    run_toy,
)
from engine.inference.imputation import acquire, impute
from engine.inference.targets import TARGETS, make_target
from engine.models.base import MaskedLikelihood, continuous_latents
from engine.models.hhvaem import HHVAEM

TOYS = {
    "correlated gaussian": "Correlated Gaussian",
    "banana": "Banana",
    "funnel": "Neal's funnel",
    "wave": "Wave (Fig. 5.7)",
    "dual moon": "Dual moon (Fig. 5.7)",
}
COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"]

st.title("HMC chains")
st.markdown(
    "Hamiltonian Monte Carlo explores a density by simulating a particle that slides over the landscape "
    "of −log p: it follows the gradient for a few *leapfrog* steps, then a Metropolis test keeps or "
    "rejects the move. Here it runs on a toy density with known moments, or on the posterior p(z | x) "
    "of the selected model for one input, where it corrects what the encoder's Gaussian gets wrong."
)

# ---- what to sample ---------------------------------------------------------------------
SOURCES = ["toy density", "latent posterior of the selected model"]
if "hmc_source" not in st.session_state and links.named("input"):  # a link to one test input's posterior
    st.session_state["hmc_source"] = SOURCES[1]
source = st.radio("Target", SOURCES, horizontal=True, key="hmc_source")
model = x = mask = None
if source != "toy density":
    sel, loaded = current_model()
    model = loaded.model
    if not continuous_latents(model):
        st.info(
            "HMC follows the gradient of log p(z | x) through a continuous latent space; this "
            f"{getattr(model.config, 'model_name', 'model')}'s latents are discrete codes, which have no gradient "
            "to follow. The **Discrete codes** page shows their posterior code by code; the toy densities "
            "above run without a model."
        )
        st.stop()
hierarchical = model is not None and any(g.kind == "layer" for g in model.latent_groups)
defaults = (60, 60, 5) if hierarchical else (200, 200, 10) if model is not None else (300, 300, 10)


def controls() -> HMCSettings:
    c1, c2, c3, c4, c5, c6 = st.columns(6)
    chains = int(c1.number_input("Chains", 1, 64, 8, key="hmc_chains"))
    warmup = int(c2.number_input("Warm-up", 0, 5000, defaults[0], step=50, key=f"hmc_warmup_{defaults[0]}"))
    samples = int(c3.number_input("Samples", 20, 5000, defaults[1], step=50, key=f"hmc_samples_{defaults[1]}"))
    leapfrog = int(c4.number_input("Leapfrog steps", 1, 100, defaults[2], key=f"hmc_leapfrog_{defaults[2]}"))
    target_accept = c5.slider("Target acceptance", 0.3, 0.95, HMCSettings.target_accept, 0.05)
    seed = int(c6.number_input("Seed", 0, 2**31 - 1, 0))
    return HMCSettings(chains, warmup, samples, leapfrog, target_accept, seed)


settings = controls()
chains, warmup, target_accept = settings.chains, settings.num_warmup, settings.target_accept
if hierarchical:
    st.caption(
        "A hierarchical model: every leapfrog step runs the whole top-down network, so the defaults are short "
        "runs; raise them for converged chains (a minute or more on a CPU)."
    )
if source == "toy density":
    links.drop("input")
    toys = [k for k in TOYS if k in TARGETS]
    links.follow("toy", "hmc_toy", toys, toys[0])
    toy = st.selectbox("Density", toys, format_func=TOYS.get, key="hmc_toy")

    @st.cache_data(max_entries=16, show_spinner="Running the chains…")
    def toy_run(name, s):
        return run_toy(name, s)

    try:
        run = toy_run(toy, settings)
    except AtlasError as err:
        st.error(str(err))
        st.stop()
    density = density_view(run, make_target(toy).log_prob)
else:
    data = load_data(str(sel.choice.dir), "test")
    dim = sum(g.size for g in model.latent_groups)
    c1, c2, c3, c4 = st.columns(4)
    links.drop("toy")
    links.follow("input", HMC_INPUT_KEY, range(len(data)), 0)  # the latent map may have sent one
    index = int(c1.number_input(f"Test input (0–{len(data) - 1})", 0, len(data) - 1, key=HMC_INPUT_KEY))
    can_inpaint = data.kind == "image" and not hierarchical and isinstance(model, MaskedLikelihood)
    regions = ["nothing"] + (["bottom half", "top half", "left half", "right half", "centre"] if can_inpaint else [])
    region = c2.selectbox(
        "Hide (inpaint)", regions, help="HMC then samples p(z | the visible part) and fills in the rest."
    )
    if dim < 2:
        st.info("This model has a 1-D latent; the 2-D view needs at least two latent dimensions.")
        st.stop()
    a = int(c3.number_input("View: dimension", 0, dim - 1, 0))
    b = int(c4.number_input("against dimension", 0, dim - 1, 1 if a != 1 else 0))
    device = next(model.parameters()).device
    x = data.batch(torch.tensor([index])).to(device)
    mask = None if region == "nothing" else hidden_region(tuple(x.shape[1:]), region).to(device)

    @st.cache_resource(max_entries=8, show_spinner="Running the chains on the posterior…")
    def posterior_run(run_dir, step, index, region, pair, s):
        return run_posterior(model, x, s, mask=mask, pair=pair)

    try:
        run = posterior_run(str(sel.choice.dir), sel.step, index, region, (a, b), settings)
    except AtlasError as err:
        st.error(str(err))
        st.stop()
    density = density_view(run, n=40 if hierarchical else 120)

path = run.path  # (chains, steps + 1, dim)
a, b = run.pair
n_steps = path.shape[1] - 1

# ---- the 2-D view -----------------------------------------------------------------------
st.subheader("The chains over the density")
xs, ys, logp = density
left, right = st.columns([3, 2])
with left:
    c1, c2 = st.columns([1, 2])
    shown = c1.slider("Chains drawn", 1, chains, min(chains, 4))
    view = c2.radio(
        "Draw", ["draws after warm-up", "the first 50 moves as paths", "every move as paths"], horizontal=True
    )
    animate = st.toggle("Animate the first 50 moves", value=False, help="Press ▶ under the chart.")
    fig = go.Figure()
    fig.add_trace(
        go.Contour(
            x=xs,
            y=ys,
            z=np.exp(logp),
            colorscale="Greys",
            showscale=False,
            contours=dict(start=0.02, end=1.0, size=0.07),
            contours_coloring="heatmap",
            line_width=0.6,
            hoverinfo="skip",
            opacity=0.55,
        )
    )
    if run.encoder_mean is not None:
        t = np.linspace(0, 2 * np.pi, 100)
        for k in (1, 2):
            fig.add_trace(
                go.Scatter(
                    x=run.encoder_mean[a] + k * run.encoder_std[a] * np.cos(t),
                    y=run.encoder_mean[b] + k * run.encoder_std[b] * np.sin(t),
                    mode="lines",
                    line=dict(color="gold", width=2, dash="dash" if k == 2 else "solid"),
                    name=f"encoder q(z|x), {k} sd",
                    hoverinfo="skip",
                )
            )
    divergent = run.stat("divergent") > 0  # (chains, steps), warm-up included
    first = warmup + 1 if view == "draws after warm-up" else 0
    last = {"the first 50 moves as paths": 51}.get(view, n_steps + 1)
    first_trace = len(fig.data)
    for c in range(shown):
        fig.add_trace(
            go.Scatter(
                x=path[c, first:last, a],
                y=path[c, first:last, b],
                name=f"chain {c}",
                mode="markers" if view == "draws after warm-up" else "lines+markers",
                line=dict(color=COLOURS[c % 8], width=1),
                marker=dict(size=4, opacity=0.7),
            )
        )
    div_points = path[:shown, 1:][:, max(first - 1, 0) : last - 1][divergent[:shown, max(first - 1, 0) : last - 1]]
    if len(div_points):
        fig.add_trace(
            go.Scatter(
                x=div_points[:, a],
                y=div_points[:, b],
                mode="markers",
                name="divergent",
                marker=dict(color="magenta", symbol="x", size=9),
            )
        )
    if animate:
        ticks = range(1, min(n_steps, 50) + 1)
        fig.frames = [
            go.Frame(
                data=[go.Scatter(x=path[c, : t + 1, a], y=path[c, : t + 1, b]) for c in range(shown)],
                traces=list(range(first_trace, first_trace + shown)),
                name=str(t),
            )
            for t in ticks
        ]
        fig.update_layout(
            updatemenus=[
                dict(
                    type="buttons",
                    x=0,
                    y=-0.12,
                    xanchor="left",
                    buttons=[
                        dict(
                            label="▶", method="animate", args=[None, dict(frame=dict(duration=150), fromcurrent=True)]
                        ),
                        dict(
                            label="❚❚", method="animate", args=[[None], dict(mode="immediate", frame=dict(duration=0))]
                        ),
                    ],
                )
            ]
        )
        for c in range(shown):  # the animation starts from the starting points
            fig.data[first_trace + c].update(x=path[c, :1, a], y=path[c, :1, b], mode="lines+markers")
    (x0, x1), (y0, y1) = run.box
    fig.update_layout(
        height=520,
        margin=dict(l=10, r=10, t=30, b=60),
        xaxis=dict(range=[x0, x1], title=run.labels[a]),
        yaxis=dict(range=[y0, y1], title=run.labels[b]),
        legend=dict(orientation="h", y=1.08),
    )
    show_figure(fig, "hmc-chains.html", key="paths")
with right:
    accept = run.result.mean_accept[0].cpu().numpy()
    n_div = int(divergent[:, warmup:].sum())
    n_div_warm = int(divergent[:, :warmup].sum())
    st.metric(
        "Acceptance after warm-up",
        f"{accept.mean():.2f}",
        delta=f"{accept.mean() - target_accept:+.2f} vs target",
        delta_color="off",
    )
    st.metric("Step size after warm-up", f"{float(run.result.final_step_size[0].mean()):.3g}")
    st.metric(
        "Divergent transitions after warm-up",
        f"{n_div}",
        help=f"{n_div_warm} more during warm-up, while the step size was still being tuned.",
    )
    explain(
        "Grey: the target density on a grid. For a toy or a model with a 2-D latent this is the exact "
        "(unnormalised) posterior; for more dimensions it is the slice through the encoder's mean, the other "
        "coordinates held there, so the chains (which move in every dimension) need not follow it. Gold: the "
        "encoder's Gaussian q(z|x) at 1 and 2 standard deviations, where the chains start. Coloured lines: "
        "each chain's draws after warm-up, or its path move by move from the start (warm-up included); magenta "
        "crosses: divergent transitions, where the simulated "
        "energy blew up (a sign of regions the step size cannot resolve, like the funnel's neck)."
        + (
            " For a hierarchical model the chains run in the prior-noise space ε (z = μ + σ·ε layer by layer): "
            "in z itself the scales change with the upper layers and HMC fails (seed002 §5.2.4)."
            if run.posterior is not None and run.posterior.space == "noise"
            else ""
        )
    )

# ---- traces and adaptation ----------------------------------------------------------------
st.subheader("Traces and adaptation")
dims_shown = st.multiselect(
    "Dimensions to trace", list(range(len(run.labels))), default=sorted({a, b}), format_func=lambda i: run.labels[i]
)
steps = np.arange(n_steps + 1)
if dims_shown:
    fig = make_subplots(
        rows=len(dims_shown),
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.04,
        subplot_titles=[run.labels[i] for i in dims_shown],
    )
    for r, i in enumerate(dims_shown, 1):
        for c in range(shown):
            fig.add_trace(
                go.Scatter(
                    x=steps,
                    y=path[c, :, i],
                    mode="lines",
                    line=dict(color=COLOURS[c % 8], width=1),
                    showlegend=False,
                    name=f"chain {c}",
                ),
                row=r,
                col=1,
            )
        fig.add_vline(x=warmup, line_dash="dot", line_color="grey", row=r, col=1)
    fig.update_layout(height=170 * len(dims_shown) + 60, margin=dict(l=10, r=10, t=30, b=10))
    show_figure(fig, "hmc-traces.html", key="traces")
fig = make_subplots(rows=1, cols=3, subplot_titles=["acceptance probability", "step size", "energy error |ΔH|"])
for col, name in enumerate(["accept_prob", "step_size", "energy_error"], 1):
    values = run.stat(name)
    if name == "energy_error":
        values = np.abs(values)
    fig.add_trace(
        go.Scatter(x=steps[1:], y=values.mean(0), mode="lines", line=dict(color="black"), showlegend=False),
        row=1,
        col=col,
    )
    fig.add_vline(x=warmup, line_dash="dot", line_color="grey", row=1, col=col)
fig.add_hline(y=target_accept, line_dash="dash", line_color="crimson", row=1, col=1)
fig.update_yaxes(type="log", row=1, col=3)
fig.update_layout(height=280, margin=dict(l=10, r=10, t=40, b=10))
show_figure(fig, "hmc-adaptation.html", key="adapt")
explain(
    "Traces: each chain's value per step; after the dotted line (end of warm-up) well-mixed chains look like "
    "overlapping noise around one level. Bottom, averaged over chains: during warm-up the step size is tuned by "
    "stochastic approximation (Kesten's rule) until the acceptance probability sits near the target (red), and a diagonal mass matrix "
    "is estimated; the energy error is how far the leapfrog simulation drifted from conserving the Hamiltonian."
)

# ---- convergence table ----------------------------------------------------------------------
st.subheader("Did the chains converge?")
table = pd.DataFrame(chain_summary(run))
st.dataframe(
    table.style.map(lambda v: "color: crimson" if v >= RHAT_OK else "", subset=["R-hat"])
    .map(lambda v: "color: crimson" if v < ESS_OK else "", subset=["bulk ESS", "tail ESS"])
    .format(precision=3),
    hide_index=True,
    width="stretch",
)
st.download_button("Download CSV", table.to_csv(index=False), "hmc-diagnostics.csv", "text/csv", on_click="ignore")
bad = int((~table["ok"]).sum())
(st.success if bad == 0 else st.warning)(
    f"{len(table) - bad} of {len(table)} dimensions meet R-hat < {RHAT_OK} and bulk and tail ESS ≥ {ESS_OK}."
)
explain(
    "R-hat compares the spread between chains with the spread within them (rank-normalised and split, "
    f"Vehtari et al. 2021): below {RHAT_OK} the chains agree. ESS is how many independent draws the correlated "
    f"chain is worth, for the centre (bulk) and the 5%/95% quantiles (tail); aim for at least {ESS_OK}. For toy "
    "densities the error column is the sample mean's distance from the true mean in Monte Carlo standard "
    "errors: within ±4 is what a correct sampler gives."
)

# ---- decoded states and inpainting ------------------------------------------------------------
if model is not None and data.kind == "image":
    st.subheader("What the chain sees")
    along = decoded_along_chain(model, run, chain=0, count=10)
    show_image(labelled_rows([along], ["chain 0"], value_range=data.value_range), "hmc-decoded.png", key="decoded")
    st.caption(
        "Ten evenly spaced states of chain 0 after warm-up, decoded: the variety of inputs the posterior allows."
    )
    if mask is not None:
        result = inpaint(model, x, mask, run)
        rows = [result.truth.cpu(), result.seen.cpu(), result.encoder.cpu(), result.hmc.cpu()]
        show_image(
            labelled_rows([torch.cat(rows)], ["inpainted"], value_range=data.value_range),
            "hmc-inpainting.png",
            key="inpaint",
            target_width=480,
            caption="Left to right: the truth, the visible part, the encoder's fill, HMC's fill.",
        )
        c1, c2 = st.columns(2)
        c1.metric("Encoder-only error (MSE, hidden pixels)", f"{result.encoder_error:.4f}")
        c2.metric(
            "HMC error (MSE, hidden pixels)",
            f"{result.hmc_error:.4f}",
            delta=f"{result.hmc_error - result.encoder_error:+.4f}",
            delta_color="inverse",
        )
        explain(
            "The encoder was trained on whole inputs; shown a partly hidden one, its Gaussian is only a guess. "
            "HMC samples the posterior given just the visible pixels, p(z | x_visible) ∝ p(x_visible | z) p(z), "
            "and the average of its decoded draws fills in the hidden part. The errors are the mean squared "
            "difference from the truth on the hidden pixels only."
        )

# ---- tables with missing values (HH-VAEM) -------------------------------------------------------
if model is not None and isinstance(model, HHVAEM) and "x_complete" in data.meta:
    st.subheader("Imputing the missing values of a row")
    names = [c[0] for c in model.config.columns]
    complete = data.meta["x_complete"]

    @st.cache_data(max_entries=16, show_spinner="Imputing with the encoder and with HMC…")
    def imputation(run_dir, step, index, samples):
        return impute(model, data.x[[index]], complete[[index]], samples=samples, seed=0)

    result = imputation(str(sel.choice.dir), sel.step, index, 200)
    row = pd.DataFrame(
        {
            "column": names,
            "true value": complete[index].numpy(),
            "observed": ~torch.isnan(result.x[0]).numpy(),
            "encoder": result.encoder[0].numpy(),
            "HMC": result.hmc[0].numpy(),
            "log-lik (encoder)": result.loglik_encoder[0].numpy(),
            "log-lik (HMC)": result.loglik_hmc[0].numpy(),
        }
    )
    row.loc[result.target, "column"] += " (target)"
    show_table(row, f"imputation-row{index}.csv", key="imputation")
    scored = row["log-lik (HMC)"].notna()
    c1, c2, c3 = st.columns(3)
    c1.metric("Held-out feature values in this row", int(scored.sum()))
    if scored.any():
        enc_ll, hmc_ll = row.loc[scored, "log-lik (encoder)"].mean(), row.loc[scored, "log-lik (HMC)"].mean()
        c2.metric("Mean log-lik, encoder", f"{enc_ll:.3f}")
        c3.metric("Mean log-lik, HMC", f"{hmc_ll:.3f}", delta=f"{hmc_ll - enc_ll:+.3f}")
    else:
        c2.caption("Only the target is missing in this row: pick another test input to see imputations scored.")
    explain(
        "The row as the model sees it: missing values (NaN) are hidden from the encoder, and the target column "
        "is always hidden (it is what the model predicts). Each missing value is imputed from 200 posterior samples, "
        "from the encoder's Gaussian or from the end points of the model's learned HMC chains (seed002 §5.2.3). "
        "The log-likelihood columns score the true held-out value under each (eq. 5.14); higher is better."
    )

    st.subheader("Which feature to ask for next? (SAIA)")

    @st.cache_data(max_entries=4, show_spinner="Acquiring features one by one for 40 test rows (several seconds)…")
    def acquisition(run_dir, step, rows):
        curves = acquire(model, complete[:rows], samples=40, seed=0)
        return curves.order.numpy(), curves.error.numpy(), curves.random_error.numpy(), curves.metric

    if st.toggle("Run the acquisition for 40 test rows", value=False):
        order, error, random_error, metric = acquisition(str(sel.choice.dir), sel.step, 40)
        fig = go.Figure()
        fig.add_trace(go.Scatter(x=np.arange(len(error)), y=error, mode="lines+markers", name="by mutual information"))
        fig.add_trace(
            go.Scatter(
                x=np.arange(len(random_error)),
                y=random_error,
                mode="lines+markers",
                name="random order",
                line=dict(dash="dash"),
            )
        )
        fig.update_layout(
            height=340,
            margin=dict(l=10, r=10, t=30, b=10),
            xaxis_title="features acquired",
            yaxis_title=f"target {metric}",
        )
        show_figure(fig, "saia.html", key="saia")
        first = pd.DataFrame(
            {
                "row": np.arange(len(order)),
                **{f"#{k + 1}": [names[c] for c in order[:, k]] for k in range(min(5, order.shape[1]))},
            }
        )
        show_table(first, "saia-order.csv", key="saia-order")
        explain(
            "Sequential active feature acquisition (seed002 §5.3): every row starts with no features; at each step "
            "the model acquires the feature whose value it expects to tell it most about the target (mutual "
            "information estimated from HMC samples), then predicts the target again. The curve is the prediction "
            "error over the rows after each acquisition, against acquiring in a random order."
        )
