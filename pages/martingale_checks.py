"""Martingale checks: does a sequence model's in-context learning behave like a Bayesian's?
(seed000 ch. 5: the statistics T1, T2, T3 against bootstrap bands of the conjugate model.)"""

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st
import torch
from plotly.subplots import make_subplots

from app.runs import available_runs, run_slug
from app.state import load_model
from app.training_jobs import start_training, training_panel
from app.widgets import explain, show_figure, show_table
from engine.diagnostics.martingale import check_across, fan, martingale_check, martingale_posterior, t3_scaling
from engine.errors import AtlasError
from engine.sequence import BernoulliData, GaussianData, sample_paths
from engine.sequence.choices import CHOICES, make_predictor

NEURAL = "neural"
THETAS = {"bernoulli": (0.3, 0.5, 0.7), "gaussian": (-1.0, 0.0, 1.0)}

st.title("Martingale checks")
st.markdown(
    "A Bayesian learner that has seen z₁…zₙ predicts the next observation by averaging over its posterior. "
    "If it then imagines a future (samples zₙ₊₁ from its own prediction, adds it to the context, and "
    "repeats), its predictions must not drift *on average*: they form a **martingale**. A sequence model "
    "whose in-context learning is Bayesian passes these checks; one that is biased, over-confident or "
    "forgetful fails them in telling ways."
)
explain(
    "**Why a martingale?** For a Bayesian, p(zₙ₊₁ | z₁…ₙ) = E[θ | z₁…ₙ] (Bernoulli). Averaging the "
    "next prediction over the model's own forecast of zₙ₊₁ gives back today's prediction: "
    "E[ E[θ | z₁…ₙ₊₁] | z₁…ₙ ] = E[θ | z₁…ₙ] (the tower rule). So along imagined paths the "
    "predictive mean is a martingale, the imagined observations are exchangeable, and their spread "
    "shrinks like a posterior's (seed000 §5.2).\n\n"
    "- **T1** compares the mean of g(z) over the first and the second half of each imagined path: "
    "zero for a martingale (drift shows as a non-zero T1).\n"
    "- **T2** compares autocorrelations at different lags: equal for exchangeable paths.\n"
    "- **T3** is the spread (IQR) over paths of each path's own estimate of θ: the width of the "
    "*martingale posterior*, which for a Bayesian matches its posterior.\n\n"
    "Each statistic is compared with a **95% band** from K replicates of the same computation under "
    "the exact conjugate Bayesian model (a parametric bootstrap), widened by a tolerance of ±0.1/n.",
    title="What is a martingale, and why must a Bayesian's predictions be one?",
)

FAMILY_KEY = "martingale_family"


def use_family(family: str) -> None:
    """Switch the data model (a button's on_click, before the radio is drawn again)."""
    st.session_state[FAMILY_KEY] = family


def train_learner(family: str) -> None:
    """The form that starts training a learner (its recipe: `family` data), and the run it started."""
    st.subheader("Train a neural in-context learner")
    st.markdown(
        "A small causal transformer trained by next-token likelihood on exchangeable sequences (θ drawn from "
        "the prior, then i.i.d. observations) should learn to predict like the Bayesian posterior. Train one "
        "here; it runs as a separate process, so you can close the page and come back. When it has finished, "
        "pick *Neural in-context learner* above."
    )
    recipes = ["bernoulli-icl", "gaussian-icl"]
    preset = st.selectbox("Recipe", recipes, index=recipes.index(f"{family}-icl"))
    steps = int(st.number_input("Steps", 100, 20000, 1200, step=100))
    if st.button("Start training", type="primary"):
        try:
            st.session_state["icl_job"] = str(start_training(preset, {"train.steps": steps}))
        except AtlasError as err:
            st.error(str(err))
    training_panel(st.session_state.get("icl_job"), ["train/loss", "test/nll", "test/bayes_nll"])


# ---- the predictor and the data ---------------------------------------------------------
sequence_runs = [c for c in available_runs(kind="sequence") if c.info.status != "broken"]
c1, c2, c3 = st.columns(3)
family = c1.radio(
    "Data model",
    ["bernoulli", "gaussian"],
    horizontal=True,
    key=FAMILY_KEY,
    format_func={"bernoulli": "Bernoulli θ*", "gaussian": "Gaussian N(θ*, 1)"}.get,
)
kinds = [*CHOICES, NEURAL]
kind = c2.selectbox(
    "Predictor",
    kinds,
    format_func=lambda k: CHOICES[k].title if k in CHOICES else "Neural in-context learner (a trained run)",
)
run_dir = None
value = None
if kind == NEURAL:
    runs = [c for c in sequence_runs if c.info.model == "icl"]
    learns = {c.key: load_model(str(c.dir), None).model.family for c in runs}  # bernoulli or gaussian
    matching = [c for c in runs if learns[c.key] == family]
    if not matching:
        demos = [c for c in runs if c.key.startswith("demo/")]
        listed = ", ".join(f"`{run_slug(c.info.id)}` ({learns[c.key]})" for c in demos)
        c3.warning(
            f"No trained {family} in-context learner yet: train one below"
            + (f". The demo learners: {listed}." if demos else ".")
        )
        if demos:
            c3.button(
                f"Open the {run_slug(demos[0].info.id)} demo ({learns[demos[0].key]} data)",
                type="primary",
                icon=":material/swap_horiz:",
                on_click=use_family,
                args=(learns[demos[0].key],),
            )
        train_learner(family)
        st.stop()
    choice = c3.selectbox("Run", matching, format_func=lambda c: c.label)
    run_dir = str(choice.dir)
else:
    spec = CHOICES[kind]
    if spec.parameter:
        value = c3.slider(spec.parameter, spec.low, spec.high, spec.default, step=(spec.high - spec.low) / 100)
    c3.caption(spec.about)

c1, c2, c3, c4, c5, c6 = st.columns(6)
theta_default = 0.5 if family == "bernoulli" else 0.0
theta = c1.number_input(
    "θ*",
    value=theta_default,
    min_value=0.0 if family == "bernoulli" else -5.0,
    max_value=1.0 if family == "bernoulli" else 5.0,
    step=0.05,
)
n = int(c2.number_input("n (observed)", 10, 400, 50, step=10))
m_mode = c3.selectbox("m (imagined)", ["n/2", "2n", "a number"])
m = {"n/2": max(2, n // 2), "2n": 2 * n}.get(m_mode)
if m is None:
    m = int(c3.number_input("m", 2, 2000, 100, step=10))
paths = int(c4.number_input("J paths", 20, 1000, 200, step=20))
replicates = int(c5.number_input("K replicates", 50, 1000, 300, step=50))
seed = int(c6.number_input("Seed", 0, 2**31 - 1, 0))


def predictor():
    return load_model(run_dir, None).model if kind == NEURAL else make_predictor(kind, family, value)


def data_model():
    return BernoulliData(theta) if family == "bernoulli" else GaussianData(theta)


@st.cache_data(max_entries=32, show_spinner="Imagining paths and bootstrapping the reference…")
def run_check(kind, value, run_dir, family, theta, n, m, paths, replicates, seed):
    gen = torch.Generator().manual_seed(seed)
    observed = data_model().sample(n, gen)
    with torch.no_grad():
        p = sample_paths(predictor(), observed, m, paths, generator=gen)
    check = martingale_check(p, replicates, generator=gen)
    return p, check, fan(p, show=30), martingale_posterior(p, generator=gen)


try:
    p, check, fan_data, mp = run_check(kind, value, run_dir, family, theta, n, m, paths, replicates, seed)
except AtlasError as err:
    st.error(str(err))
    st.stop()

# ---- verdicts ---------------------------------------------------------------------------
st.subheader("Verdicts")
table = pd.DataFrame(check.table())
table["verdict"] = np.where(table["violation"], "violation", "consistent with Bayes")
show_table(table.drop(columns="violation"), f"martingale-verdicts-{kind}-n{n}-m{m}.csv", key="verdicts")
flagged = [v.statistic for v in check.verdicts.values() if v.flagged]
if flagged:
    st.error(
        f"Outside the 95% band (+ tolerance): {', '.join(flagged)}. These predictions are not those of the "
        "Bayesian reference."
    )
else:
    st.success("Every statistic lies inside its band: these paths look like a Bayesian's.")
st.caption(
    f"{check.kept} of {check.paths} paths kept by the 1.5·IQR outlier rule; n = {n}, m = {m}, "
    f"K = {replicates} bootstrap replicates."
)

# ---- Fig. 5.1 ---------------------------------------------------------------------------
st.subheader("The Doob fan and the martingale posterior")
left, right = st.columns(2)
with left:
    steps = np.arange(m + 1)
    fig = go.Figure()
    for i, traj in enumerate(fan_data.trajectories.numpy()):
        fig.add_trace(
            go.Scatter(
                x=steps,
                y=traj,
                mode="lines",
                line=dict(width=1, color="rgba(70,110,180,0.35)"),
                showlegend=i == 0,
                name="predictive mean along a path",
            )
        )
    fig.add_trace(
        go.Scatter(
            x=steps,
            y=fan_data.mean.numpy(),
            mode="lines",
            line=dict(width=3, color="black"),
            name=f"mean over all {paths} paths",
        )
    )
    fig.add_hrect(
        y0=fan_data.posterior_low,
        y1=fan_data.posterior_high,
        fillcolor="grey",
        opacity=0.15,
        line_width=0,
        annotation_text="reference posterior 95%",
        annotation_position="top left",
    )
    fig.add_hline(y=fan_data.posterior_mean, line_dash="dash", line_color="grey")
    fig.update_layout(
        height=380,
        margin=dict(l=10, r=10, t=40, b=10),
        title="Predictions along imagined paths",
        xaxis_title="imagined step i (after the n observed)",
        yaxis_title="predictive mean",
        legend=dict(orientation="h", y=-0.25),
    )
    show_figure(fig, "martingale-fan.html", key="fan")
with right:
    fig = go.Figure()
    for name, values, colour in (
        ("model: path means", mp.model, "rgba(70,110,180,0.6)"),
        ("Bayes reference", mp.reference, "rgba(120,120,120,0.45)"),
    ):
        fig.add_trace(
            go.Histogram(
                x=values.numpy(), histnorm="probability density", name=name, opacity=0.7, marker_color=colour, nbinsx=40
            )
        )
    fig.update_layout(
        barmode="overlay",
        height=380,
        margin=dict(l=10, r=10, t=40, b=10),
        title=f"Martingale posterior: IQR {mp.iqr['model']:.3f} (model) vs {mp.iqr['reference']:.3f} (Bayes)",
        xaxis_title="θ̂ = mean of a path's m imagined observations",
        yaxis_title="density",
        legend=dict(orientation="h", y=-0.25),
    )
    show_figure(fig, "martingale-posterior.html", key="mp")
explain(
    "Left (seed000 Fig. 5.1): thin lines are the model's predictive mean along single imagined paths; the "
    "thick line is their average over all paths. For a martingale the average stays flat at the start "
    "value; a tilt is drift. The grey band is the reference posterior's 95% interval for θ given "
    "z₁…ₙ.\n\nRight: each path's own estimate of θ (the mean of its imagined observations) is a draw from "
    "the model's *martingale posterior*. For a Bayesian it has the spread of the reference (grey, the same "
    "transform of θ drawn from the posterior); a wider histogram means the model forgets, a narrower one "
    "that it is over-confident. T3 is its interquartile range."
)

# ---- Fig. 5.3 ---------------------------------------------------------------------------
st.subheader("T1 and T2 across θ* and path length")


@st.cache_data(max_entries=16, show_spinner="Checking every θ* at m = n/2 and m = 2n…")
def grid(kind, value, run_dir, family, n, paths, replicates, seed):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        return pd.DataFrame(
            check_across(predictor(), THETAS[family], n, (max(2, n // 2), 2 * n), paths, replicates, generator=gen)
        )


rows = grid(kind, value, run_dir, family, n, paths, replicates, seed)
stats = list(dict.fromkeys(rows["statistic"]))
ms = sorted(set(rows["m"]))
fig = make_subplots(
    rows=len(stats),
    cols=len(ms),
    shared_xaxes=True,
    vertical_spacing=0.12,
    horizontal_spacing=0.08,
    subplot_titles=[f"{s}, m = {mm} ({'n/2' if mm < n else '2n'})" for s in stats for mm in ms],
)
for i, s in enumerate(stats, 1):
    for j, mm in enumerate(ms, 1):
        part = rows[(rows["statistic"] == s) & (rows["m"] == mm)].sort_values("theta")
        x = part["theta"].to_numpy()
        for lo, hi, colour in (
            (part["low"] - part["tolerance"], part["high"] + part["tolerance"], "rgba(0,0,0,0.08)"),
            (part["low"], part["high"], "rgba(0,0,0,0.22)"),
        ):
            fig.add_trace(
                go.Scatter(
                    x=np.r_[x, x[::-1]],
                    y=np.r_[hi.to_numpy(), lo.to_numpy()[::-1]],
                    fill="toself",
                    mode="lines",
                    fillcolor=colour,
                    line=dict(width=0),
                    hoverinfo="skip",
                    showlegend=False,
                ),
                row=i,
                col=j,
            )
        fig.add_trace(
            go.Scatter(
                x=x,
                y=part["value"],
                mode="markers",
                marker=dict(size=11, color=np.where(part["flagged"], "crimson", "royalblue")),
                showlegend=False,
                hovertemplate="θ* = %{x}<br>value %{y:.4f}<extra></extra>",
            ),
            row=i,
            col=j,
        )
fig.update_xaxes(title_text="θ*", row=len(stats))
fig.update_layout(height=300 * len(stats), margin=dict(l=10, r=10, t=50, b=10))
show_figure(fig, "martingale-t1-t2.html", key="grid")
explain(
    "As seed000 Fig. 5.3: one observed sequence per θ*, then J imagined paths at m = n/2 and at m = 2n. "
    "Dark grey: the 95% band of the statistic under the exact Bayesian model; light grey: that band "
    "widened by the ±0.1/n tolerance. Blue points lie inside, red ones outside. T2 here is the "
    "autocorrelation difference ACF₂ − ACF₁ that the authors' code plots (the printed formula D.2 is in "
    "the verdict table above). Short paths test the local property; long paths make drift visible."
)

# ---- Fig. 5.6 ---------------------------------------------------------------------------
st.subheader("How fast does the martingale posterior shrink? (T3 against n)")


@st.cache_data(max_entries=8, show_spinner="Imagining paths for n = 20 … 400 (several seconds)…")
def scaling(kind, value, run_dir, family, theta, paths, seed):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        s = t3_scaling(predictor(), data_model(), runs=9, paths=paths, replicates=300, generator=gen)
    curves = {"model": s.curve("model")} | {name: s.curve(name) for name in s.references}
    low, high = s.band("Bayes")
    return s.ns, {k: v.numpy() for k, v in curves.items()}, s.model.numpy(), low.numpy(), high.numpy()


if st.toggle(
    "Compute T3 for n = 20, 50, 100, 200, 400",
    value=kind != NEURAL,
    help="Nine fresh sequences per n, m = n/2, in the observed order (seed000 Algorithm C).",
):
    ns, curves, per_run, low, high = scaling(kind, value, run_dir, family, theta, paths, seed)
    fig = go.Figure()
    styles = {"model": dict(color="royalblue", width=3), "Bayes": dict(color="black", dash="dash")}
    for name, y in curves.items():
        fig.add_trace(
            go.Scatter(
                x=ns, y=y, mode="lines+markers", name=name, line=styles.get(name, dict(color="grey", dash="dot"))
            )
        )
    xs = np.repeat(ns, per_run.shape[1])
    fig.add_trace(
        go.Scatter(
            x=xs,
            y=per_run.ravel(),
            mode="markers",
            name="model, single runs",
            marker=dict(size=5, color="rgba(70,110,180,0.4)"),
        )
    )
    fig.add_trace(
        go.Scatter(
            x=np.r_[ns, ns[::-1]],
            y=np.r_[np.median(high, 1), np.median(low, 1)[::-1]],
            fill="toself",
            mode="lines",
            fillcolor="rgba(0,0,0,0.1)",
            line=dict(width=0),
            name="Bayes 95% band",
        )
    )
    fig.update_xaxes(type="log", title="n")
    fig.update_yaxes(type="log", title="T3 = IQR of path means")
    fig.update_layout(height=420, margin=dict(l=10, r=10, t=30, b=10))
    show_figure(fig, "martingale-t3.html", key="t3")
    show_table(
        pd.DataFrame({"n": ns, **{f"median T3 ({k})": np.round(v, 4) for k, v in curves.items()}}),
        "martingale-t3.csv",
        key="t3-table",
    )
    explain(
        "A Bayesian's posterior narrows like 1/√n, so on log–log axes its T3 falls on a line of slope −½ "
        "(black). The fractional-Bayes curves (α = 0.5: the data counted half; α = 2: twice) show what an "
        "under- or over-confident learner would look like. A model whose curve is flatter than Bayes "
        "learns more slowly from its context than a Bayesian would (seed000 Fig. 5.6)."
    )

# ---- training the neural learner ----------------------------------------------------------
train_learner(family)
