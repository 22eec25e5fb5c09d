"""Robustness: adversarial attacks on the encoder (seed001 ch. 5) and the r-robustness
margin of an input with its bound (ch. 6), for the sidebar's model and, on the same
input-target pairs, for the models it is compared with."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st
import torch
from plotly.subplots import make_subplots

from app import links
from app.runs import available_runs, run_slug, trained_on_images
from app.state import current_model, disentanglement_scores, load_data, load_model
from app.widgets import explain, offer_demos, show_figure, show_image, show_table
from engine.diagnostics.robustness import robustness_curve, robustness_report
from engine.errors import AtlasError
from engine.images import labelled_rows
from engine.inference.attacks import AttackResult, amplify, attack, random_pairs, seed_lambdas
from engine.inference.layer_attacks import attack_top_layers
from engine.models.base import reconstruct
from engine.models.hvae import HVAE
from engine.models.likelihoods import Bernoulli, Gaussian
from engine.models.posteriors import DiagonalGaussian

MODES = {"latent, KL": ("latent", "kl"), "latent, 2-Wasserstein": ("latent", "w2"), "output (ELBO)": ("output", "kl")}
OPTIMIZERS = {"L-BFGS-B (the seed's)": "lbfgsb", "Adam (batched)": "adam"}
COMPARE_DEFAULT = ("digits-vae", "digits-tcvae", "digits-seatbelt")
SWEEP_COLUMNS = 9
AUTO_LATENTS = 64  # models with more latent values wait for a click: attacks and Jacobians grow with them

st.title("Robustness")
sel, loaded = current_model()
model, run_dir = loaded.model, str(sel.choice.dir)
data = load_data(run_dir, "test")
if data.kind != "image":
    offer_demos(
        "The attacks and margins here are defined on images (a distortion of the pixels, kept in the "
        "data range); the selected model was trained on a table.",
        trained_on_images,
    )


@st.cache_data(max_entries=64, show_spinner=False)
def posterior_kind(run_dir: str) -> str:
    """The class of a run's q(z|x) (the attacks need DiagonalGaussian), from one test input."""
    m = load_model(run_dir, None).model
    x = load_data(run_dir, "test").batch(torch.arange(1)).to(next(m.parameters()).device)
    return type(next(iter(m.encode(x).values()))).__name__


if posterior_kind(run_dir) != DiagonalGaussian.__name__:
    offer_demos(
        "The attacks and margins here compare Gaussian posteriors in closed form (their KL and W2 "
        f"distances); the selected model's q(z|x) is a {posterior_kind(run_dir)}.",
        lambda info: trained_on_images(info) and info.family != loaded.spec.family,
    )
if not isinstance(getattr(model, "likelihood", None), Bernoulli | Gaussian):
    offer_demos(
        "The attacks score the target image under the model's observation model, which needs the `WithLikelihood` "
        "ability with a Bernoulli or Gaussian likelihood (engine.models.likelihoods); the selected "
        f"{type(model).__name__} declares none.",
        lambda info: trained_on_images(info) and info.family != loaded.spec.family,
    )
labels = next((col.values.numpy() for col in data.labels.values() if col.is_categorical), None)
latent_size = sum(g.size for g in model.latent_groups)


def wanted(what: str, key: str) -> bool:
    """Whether to compute `what` now: at once for small models, on a toggle for large ones."""
    if latent_size <= AUTO_LATENTS:
        return True
    return st.toggle(f"{what} (this model has {latent_size:,} latent values: it takes minutes on a CPU)", key=key)


@st.cache_data(max_entries=32, show_spinner="Attacking…")
def run_attack(
    run_dir: str,
    step: int | None,
    pairs: tuple,
    lambdas: tuple,
    mode: str,
    divergence: str,
    optimizer: str,
    steps: int,
    seed: int,
) -> AttackResult:
    model = load_model(run_dir, step).model
    test = load_data(run_dir, "test")
    idx = np.asarray(pairs)
    x, t = test.batch(torch.as_tensor(idx[:, 0])), test.batch(torch.as_tensor(idx[:, 1]))
    return attack(
        model,
        x,
        t,
        np.asarray(lambdas),
        mode=mode,
        divergence=divergence,
        optimizer=optimizer,
        steps=steps,
        bounds=test.value_range,
        seed=seed,
    )


@st.cache_data(max_entries=32, show_spinner="Estimating the r-robustness margin…")
def margin_report(run_dir: str, step: int | None, index: int, p_target: float, n_samples: int, r_max: float) -> dict:
    model = load_model(run_dir, step).model
    x = load_data(run_dir, "test").batch(torch.tensor([index]))
    return robustness_report(model, x, p_target=p_target, n_samples=n_samples, r_max=r_max, bisections=8)[0].__dict__


def beta_of(config: dict) -> float | str:
    """A run's β as a number, or as text where it has one per facet (an MFCVAE's list)."""
    beta = config.get("model", {}).get("beta", 1.0)
    if isinstance(beta, (int, float)) and not isinstance(beta, bool):
        return float(beta)
    return ", ".join(map(str, beta)) if isinstance(beta, list) else str(beta)


def factor_scores(run_dir: str) -> dict:
    """MIG and (with two factors or more) the FactorVAE score of a run's latents against its data's
    known factors, for the comparison table; empty where the data has none or the latents are too
    many to score."""
    model = load_model(run_dir, None).model
    if sum(g.size for g in model.latent_groups) > 256:
        return {}
    try:
        scores = disentanglement_scores(run_dir, None, None, False, with_factor_vae=True)
    except AtlasError:
        return {}
    several = (
        len(scores["factors"]) > 1
    )  # with one factor every FactorVAE vote names it: a score of 1 that says nothing
    return {"MIG": scores["mig"], "FactorVAE score": scores["factor_vae"].score if several else None}


def disentanglement_sweep(table: pd.DataFrame) -> go.Figure:
    """MIG and the FactorVAE score against β, a line per family and score, and MIG against the
    mean adversarial loss Δ, a colour per family (seed001 Fig. D.4)."""
    scored = table[table["MIG"].notna()]
    figure = make_subplots(
        rows=1, cols=2, subplot_titles=("scores against β", "MIG against the attack cost (Fig. D.4)")
    )
    numeric = scored[scored["β"].map(lambda b: isinstance(b, float))].sort_values("β")
    palette = dict(zip(scored["family"].unique(), ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e") * 9))
    for family, colour in palette.items():
        for score, dash in (("MIG", "solid"), ("FactorVAE score", "dot")):
            part = numeric[(numeric["family"] == family) & numeric[score].notna()]
            if len(part):
                figure.add_trace(
                    go.Scatter(
                        x=part["β"],
                        y=part[score],
                        mode="lines+markers",
                        name=f"{family}: {score}",
                        line=dict(dash=dash, color=colour),
                        text=part["model"],
                        hovertemplate="%{text}: β = %{x}, %{y:.3f}",
                    ),
                    row=1,
                    col=1,
                )
        part = scored[scored["family"] == family]
        figure.add_trace(
            go.Scatter(
                x=part["mean Δ"],
                y=part["MIG"],
                mode="markers",
                marker=dict(color=colour, size=9),
                text=part["model"],
                name=family,
                showlegend=False,
                hovertemplate="%{text}: Δ = %{x:.3g}, MIG = %{y:.3f}",
            ),
            row=1,
            col=2,
        )
    figure.update_xaxes(title_text="β", row=1, col=1)
    figure.update_xaxes(title_text="mean adversarial loss Δ", type="log", row=1, col=2)
    figure.update_yaxes(title_text="score", range=[0, 1.02], row=1, col=1)
    figure.update_yaxes(title_text="MIG", rangemode="tozero", row=1, col=2)
    figure.update_layout(height=340, margin=dict(l=10, r=10, t=30, b=10))
    return figure


@st.cache_data(max_entries=32, show_spinner="Attacking at each ‖δ‖…")
def margin_curve(run_dir: str, step: int | None, index: int, r: float, radii: tuple, n_samples: int) -> list[float]:
    model = load_model(run_dir, step).model
    x = load_data(run_dir, "test").batch(torch.tensor([index]))
    curve = robustness_curve(model, x, r, radii, n_samples, generator=torch.Generator().manual_seed(0))
    return curve[:, 0].tolist()


def same_inputs(choice) -> bool:
    """Whether a run was trained on the same data set and input shape as the sidebar's model."""
    mine = sel.choice.info
    return choice.info.dataset == mine.dataset and choice.info.input_shape == mine.input_shape


# -- the attack -------------------------------------------------------------------------------------
st.subheader("Attack one input towards a target")
c1, c2, c3 = st.columns(3)
links.follow("input", "attack-input", range(len(data)), 0)
index = int(c1.number_input("Input (test example)", 0, len(data) - 1, key="attack-input"))
default_target = int(random_pairs(labels, 1, len(data), seed=index)[0, 1]) if len(data) > 1 else 0
target = int(
    c2.number_input(
        "Target (test example)", 0, len(data) - 1, default_target, help="By default a test example of another class."
    )
)
mode_name = c3.selectbox(
    "Attack",
    list(MODES),
    help="latent: make q(z|x+d) like q(z|x_target); output: make the "
    "model's ELBO of the target high at x+d (Kos et al. 2018).",
)
c1, c2, c3 = st.columns(3)
n_lambda = c1.select_slider(
    "λ values in [2⁻²⁰, 2²⁰]",
    [5, 9, 17, 25, 50],
    9,
    help="The seed sweeps 50 values geometrically spaced over [2^-20, 2^20].",
)
optimizer = OPTIMIZERS[c2.selectbox("Optimiser", list(OPTIMIZERS))]
steps = c3.select_slider(
    "Iterations per λ" if optimizer == "lbfgsb" else "Adam steps",
    [25, 50, 100, 200, 400],
    50 if optimizer == "lbfgsb" else 200,
)
if index == target:
    st.warning("The input and the target are the same example; pick another target.")
    st.stop()
lambdas = tuple(float(v) for v in seed_lambdas(n_lambda))
mode, divergence = MODES[mode_name]


def show_attack() -> None:
    """The attack panel, the sweep and the curves for the chosen pair."""
    result = run_attack(run_dir, sel.step, ((index, target),), lambdas, mode, divergence, optimizer, steps, 0)
    best = int(result.best[0])
    lam_i = st.select_slider(
        "λ shown",
        list(range(len(lambdas))),
        best,
        format_func=lambda i: f"2^{np.log2(lambdas[i]):.1f}" + (" (best)" if i == best else ""),
    )

    with torch.no_grad():
        x, t = data.batch(torch.tensor([index])), data.batch(torch.tensor([target]))
        d = torch.from_numpy(result.delta[0]).to(x.dtype)  # (L, *shape)
        attacked = x + d

        def recon(batch):
            return reconstruct(model, batch).cpu().clamp(*data.value_range)

        one = attacked[lam_i : lam_i + 1]
        row = [x, recon(x), t, recon(t), one, torch.from_numpy(amplify(d[lam_i : lam_i + 1].numpy())), recon(one)]
    panel = labelled_rows([torch.cat(row)], [""], value_range=data.value_range, label_width=4)
    st.caption(
        "input · its reconstruction · target · target's reconstruction · attacked input · distortion (rescaled "
        "to [0, 1]) · attacked input's reconstruction"
    )
    show_image(panel, f"attack-{index}-to-{target}.png", key="panel")
    c1, c2, c3, c4 = st.columns(4)
    c1.metric("Adversarial loss Δ", f"{result.loss[0, lam_i]:.3g}")
    c2.metric("Distortion ‖d‖₂", f"{result.distortion[0, lam_i]:.3f}")
    c3.metric(
        "−log p(target | z*)",
        f"{result.target_nll[0, lam_i]:.1f}",
        f"{result.target_nll[0, lam_i] - result.target_nll_clean[0]:+.1f} vs no attack",
        delta_color="inverse",
    )
    c4.metric(
        "MS-SSIM of the reconstructions",
        f"{result.ms_ssim[0, lam_i]:.3f}",
        f"{result.ms_ssim[0, lam_i] - result.ms_ssim_clean[0]:+.3f} vs no attack",
    )

    cols = np.unique(np.linspace(0, len(lambdas) - 1, min(SWEEP_COLUMNS, len(lambdas))).round().astype(int))
    sweep = labelled_rows(
        [attacked[cols], torch.from_numpy(amplify(d[cols].numpy())), recon(attacked[cols])],
        ["attacked input", "distortion", "reconstruction"],
        value_range=data.value_range,
    )
    st.caption("Along the sweep, left to right: λ = " + ", ".join(f"2^{np.log2(lambdas[i]):.0f}" for i in cols))
    show_image(sweep, f"attack-sweep-{index}-to-{target}.png", key="sweep")

    curves = make_subplots(
        rows=1, cols=3, subplot_titles=("adversarial loss Δ", "distortion ‖d‖₂", "−log p(target | z*)")
    )
    for c, (values, ref) in enumerate(
        [(result.loss[0], None), (result.distortion[0], None), (result.target_nll[0], result.target_nll_own[0])],
        start=1,
    ):
        curves.add_trace(go.Scatter(x=lambdas, y=values, mode="lines+markers", showlegend=False), row=1, col=c)
        if ref is not None:
            curves.add_hline(y=ref, line_dash="dot", row=1, col=c, annotation_text="target's own reconstruction")
    curves.update_xaxes(type="log", title_text="λ")
    curves.update_yaxes(type="log", dtick=1, exponentformat="power", row=1, col=1)
    curves.update_layout(height=300, margin=dict(l=10, r=10, t=30, b=10))
    show_figure(curves, f"attack-curves-{index}-to-{target}.html", key="curves")
    explain(
        "The attacker looks for a distortion d that makes the model read x + d as the target x^t. The **latent** "
        "attack minimises r(q(z|x+d), q(z|x^t)) + λ‖d‖₂ with r the KL divergence or the 2-Wasserstein distance "
        "between the encoder's Gaussians, summed over the latent groups (all layers of a hierarchical model at "
        "once, seed001 eq. 5.10). The **output** attack maximises the ELBO of the target at x + d instead. Small λ "
        "lets the distortion grow; large λ forbids it. Δ is the attacker's objective at its optimum: higher means "
        "the model was costlier to attack. −log p(x^t|z*) scores the target under codes z* ~ q(z|x+d): the dotted "
        "line is what the target's own codes achieve. The seed (Willetts, 2021) picks random pairs, 50 values of "
        "λ and L-BFGS-B; the best distortion over the sweep is the one with the lowest Δ. Attacked inputs stay in "
        "the data range."
    )


if wanted("Run the attack", "attack-go"):
    show_attack()

# -- comparison on the same pairs ----------------------------------------------------------------
st.subheader("Compare models on the same pairs")
candidates = [
    c
    for c in available_runs()
    if c.info.status != "broken" and same_inputs(c) and posterior_kind(str(c.dir)) == DiagonalGaussian.__name__
]
defaults = [c.key for c in candidates if run_slug(c.info.id) in COMPARE_DEFAULT] or [sel.choice.key]
chosen = st.multiselect(
    "Models", [c.key for c in candidates], defaults, format_func={c.key: c.label for c in candidates}.get
)
c1, c2 = st.columns(2)
n_pairs = c1.select_slider("Random pairs (input and target of different classes)", [3, 5, 10, 20], 5)
pair_seed = int(c2.number_input("Pair seed", 0, 2**31 - 1, 0))
pairs = tuple(map(tuple, random_pairs(labels, n_pairs, len(data), seed=pair_seed).tolist()))
rows = []
by_key = {c.key: c for c in candidates}
for key in chosen if wanted("Compare the models", "compare-go") else []:
    choice = by_key[key]
    res = run_attack(str(choice.dir), None, pairs, lambdas, mode, divergence, optimizer, steps, 0)
    summary = res.summary()
    config = load_model(str(choice.dir), None).run.config
    rows.append(
        {
            "model": run_slug(choice.info.id),
            "family": choice.info.family,
            "β": beta_of(config),
            "mean Δ": summary["loss_mean"],
            "mean log₁₀ Δ": summary["log10_loss_mean"],
            "mean −log p(xᵗ|z*)": summary["target_nll_mean"],
            "mean ‖d‖₂": summary["distortion_mean"],
            "divergence lowered on every pair": bool((res.divergence.min(1) < res.divergence_clean).all()),
            **factor_scores(str(choice.dir)),
        }
    )
if rows:
    table = pd.DataFrame(rows)
    bars = make_subplots(rows=1, cols=2, subplot_titles=("mean adversarial loss Δ", "mean −log p(target | z*)"))
    bars.add_trace(go.Bar(x=table["model"], y=table["mean Δ"], showlegend=False), row=1, col=1)
    bars.add_trace(go.Bar(x=table["model"], y=table["mean −log p(xᵗ|z*)"], showlegend=False), row=1, col=2)
    bars.update_layout(height=320, margin=dict(l=10, r=10, t=30, b=10))
    show_figure(bars, "attack-comparison.html", key="bars")
    numeric = table[table["β"].map(lambda b: isinstance(b, float))]
    if numeric["β"].nunique() > 1:  # a β sweep among the chosen models: the cost against β, a line per family
        sweep = go.Figure()
        for family, part in numeric.sort_values("β").groupby("family", sort=False):
            sweep.add_trace(
                go.Scatter(
                    x=part["β"],
                    y=part["mean Δ"],
                    mode="lines+markers",
                    name=family,
                    text=part["model"],
                    hovertemplate="%{text}: β = %{x}, Δ = %{y:.3g}",
                )
            )
        sweep.update_layout(
            height=300, xaxis_title="β", yaxis_title="mean adversarial loss Δ", margin=dict(l=10, r=10, t=10, b=10)
        )
        show_figure(sweep, "attack-cost-vs-beta.html", key="sweep-beta")
    if "MIG" in table and table["MIG"].notna().any():
        show_figure(disentanglement_sweep(table), "disentanglement-vs-beta-and-cost.html", key="sweep-mig")
    show_table(table, "attack-comparison.csv", key="comparison")
explain(
    f"Every model is attacked on the same {n_pairs} pairs with the settings above; the averages run over all "
    "pairs and values of λ, as in the seed's figures. The seed's finding (seed001 §5.4, Figs 5.4, 5.6, D.2): a "
    "total-correlation penalty (β-TCVAE, β > 1) and depth with a TC penalty on the top layer (Seatbelt-VAE) make "
    "attacks costlier, Δ growing and the target's likelihood falling. Where the data has known factors, each "
    "model's MIG and FactorVAE score (as on the Latent activity page) are set against β and against Δ: the "
    "seed's Fig. D.4 found no simple correspondence between disentanglement and the cost of an attack (§D.4.1). "
    "The README reports what this project measured over β sweeps on the digits (scripts/attack_sweep.py) and on "
    "the shapes (scripts/disentanglement_sweep.py)."
)

# -- r-robustness ------------------------------------------------------------------------------
st.subheader("The r-robustness margin of the input")
c1, c2, c3 = st.columns(3)
p_target = c1.select_slider("r chosen so that p(‖Δ(x)‖ ≤ r) =", [0.6, 0.75, 0.9, 0.95, 0.99], 0.9)
n_samples = c2.select_slider("Monte Carlo draws", [200, 500, 1000, 2000], 500)
r_max = float(c3.number_input("Largest ‖δ‖ searched", 0.5, 100.0, 10.0, step=0.5))


def show_margin() -> None:
    """The r-robustness numbers of the input."""
    report = margin_report(run_dir, sel.step, index, float(p_target), int(n_samples), r_max)
    c1, c2, c3, c4, c5 = st.columns(5)
    c1.metric("r", f"{report['r']:.3f}", help="The decoded distortion radius: p(‖Δ(x)‖ ≤ r) = the level chosen.")
    c2.metric("Margin bound (Thm 6.1)", f"{report['bound']:.4f}")
    c3.metric(
        "Empirical margin (Alg. E.2)", ("≥ " if report["margin_censored"] else "") + f"{report['empirical_margin']:.4f}"
    )
    c4.metric("Minimum r (median ‖Δ(x)‖)", f"{report['minimum_r']:.3f}")
    c5.metric("√(2 Tr Σ) (Prop. E.1)", f"{report['markov_r']:.3f}")
    top = min(r_max, 2.5 * report["empirical_margin"]) if report["empirical_margin"] > 0 else r_max
    radii = tuple(float(v) for v in np.linspace(0, top, 11))
    within = margin_curve(run_dir, sel.step, index, report["r"], radii, int(n_samples))
    curve = go.Figure(go.Scatter(x=radii, y=within, mode="lines+markers", name="p(‖Δ(x, δ*)‖ ≤ r)"))
    curve.add_hline(y=0.5, line_dash="dot", line_color="grey")
    curve.add_vline(x=report["bound"], line_dash="dot", line_color="#9467bd", annotation_text="bound")
    curve.add_vline(x=report["empirical_margin"], line_dash="dash", line_color="#1f77b4", annotation_text="margin")
    curve.update_layout(
        height=300,
        xaxis_title="‖δ‖₂ of the most damaging perturbation",
        yaxis_title="p(‖Δ(x, δ*)‖ ≤ r)",
        yaxis_range=[0, 1.02],
        margin=dict(l=10, r=10, t=10, b=10),
    )
    show_figure(curve, f"margin-curve-{index}.html", key="margin-curve")
    # the same input under the compared models that are small enough to run at once
    reports = {run_slug(sel.choice.info.id): report}
    for key in chosen:
        choice = by_key[key]
        slug = run_slug(choice.info.id)
        if (
            slug not in reports
            and sum(g.size for g in load_model(str(choice.dir), None).model.latent_groups) <= AUTO_LATENTS
        ):
            reports[slug] = margin_report(str(choice.dir), None, index, float(p_target), int(n_samples), r_max)
    names = list(reports)
    margin_fig = go.Figure(
        [
            go.Bar(x=names, y=[reports[m]["bound"] for m in names], name="bound (Thm 6.1)", marker_color="#9467bd"),
            go.Bar(
                x=names,
                y=[reports[m]["empirical_margin"] for m in names],
                name="empirical margin",
                marker_color="#1f77b4",
            ),
        ]
    )
    margin_fig.update_layout(height=300, yaxis_title="‖δ‖₂", barmode="group", margin=dict(l=10, r=10, t=10, b=10))
    show_figure(margin_fig, f"margin-{index}.html", key="margin")
    show_table(pd.DataFrame([{"model": m, **reports[m]} for m in names]), f"margin-{index}.csv", key="margin-table")
    explain(
        "A VAE is **r-robust** at x to a perturbation δ when its reconstruction of x + δ, with the encoder's noise, "
        "stays within r of its reconstruction of x more often than not (seed001 Def 6.1). The **margin** R is the "
        "largest ‖δ‖₂ for which that holds against the most damaging δ (found by projected gradient ascent with "
        "restarts, bisecting on ‖δ‖); the curve shows that probability against ‖δ‖ under the attack of each norm "
        "(seed001 Fig. 6.5, there along a fixed direction), crossing 0.5 at the margin. Theorem 6.1 bounds the "
        "margin from below by min_i σ_i(x) · Φ⁻¹(p) / ‖J_μ(x)‖_F, "
        "with p = p(‖Δ(x)‖ ≤ r) and the encoder Jacobian from autograd: wider encoder noise and a flatter encoder "
        "make the model harder to move. The bound must sit below the empirical margin; '≥' marks a margin still "
        f"robust at the largest ‖δ‖ searched. min σ = {report['min_std']:.4f}, ‖J_μ‖_F = {report['jacobian_norm']:.3f}. "
        "√(2 Tr Σ) (Prop. E.1) is, for a linear decoder, an upper bound on the smallest r at which the model is "
        "r-robust to its own noise."
    )


if wanted("Estimate the margin", "margin-go"):
    show_margin()

# -- attacks on the top layers of a hierarchy (seed004 App. H) ---------------------------------
LAYER_COMPARE_DEFAULT = ("digits-hvae", "digits-dctvae")


@st.cache_data(max_entries=16, show_spinner="Attacking the top layers…")
def layer_attack_curve(
    run_dir: str,
    step: int | None,
    inputs: int,
    counts: tuple,
    epsilon: float,
    steps: int,
    restarts: int,
    stand_in: bool = True,
) -> dict:
    """MS-SSIM(clean, attacked reconstruction) per attacked-group count over the first
    `inputs` test images x `restarts` random starts, and the images of the last count."""
    m = load_model(run_dir, step).model
    device = next(m.parameters()).device
    x = load_data(run_dir, "test").batch(torch.arange(inputs)).to(device)
    out = {}
    for n in counts:
        g = torch.Generator(device=device).manual_seed(n)
        result = attack_top_layers(m, x, n, epsilon, steps, restarts, g, context_stand_in=stand_in)
        out[n] = {"ms_ssim": result.ms_ssim, "result": result}
    return out


if isinstance(model, HVAE):
    st.subheader("Attack the top latent layers (seed004 App. H)")
    explain(
        "An unsupervised attack on a hierarchy: a distortion of at most ε per pixel (L∞) that moves the posteriors "
        "of the top n latent groups as far as it can (their symmetric KL, each along its posterior-mean path), "
        "from several random starts. What counts is the damage: the MS-SSIM between the reconstruction of the "
        "input and of the attacked input (1: untouched). A DCT-VAE's context is its first group; it is quantised "
        "and has no gradient, so by default the attacker pushes its coefficients before quantisation instead; "
        "untick that to attack as plain gradients would. The seed reports the DCT-VAE above a plain VDVAE at "
        "every count, most clearly at two (App. H). On the digits (README, scripts/dctvae_comparison.py) that "
        "holds from three groups on against the blind attacker, and not against the one that sees through "
        "the rounding."
    )
    groups = len(model.latent_groups)
    c1, c2, c3, c4 = st.columns(4)
    top = c1.slider("Attacked groups, up to", 1, min(10, groups), min(6, groups))
    n_inputs = c2.select_slider("Test inputs", [4, 8, 16, 32, 50], 8)
    restarts = c3.select_slider("Random starts", [1, 3, 5], 5 if n_inputs <= 16 else 3)
    epsilon = c4.select_slider("ε (L∞)", [0.02, 0.05, 0.1, 0.2, 0.3], 0.1)
    hierarchies = [
        c
        for c in available_runs()
        if c.info.status != "broken"
        and same_inputs(c)
        and c.info.family in ("hvae", "dctvae")
        and c.key != sel.choice.key
    ]
    others = st.multiselect(
        "Beside it",
        [c.key for c in hierarchies],
        [c.key for c in hierarchies if run_slug(c.info.id) in LAYER_COMPARE_DEFAULT],
        format_func={c.key: c.label for c in hierarchies}.get,
    )
    stand_in = st.checkbox(
        "The attacker pushes a DCT-VAE's context through its values before rounding",
        value=True,
        help="Off: the context adds nothing to the attack's objective (plain gradients do not pass the rounding), "
        "so it changes only where the distortion aimed at the layers below happens to move it.",
    )
    counts = tuple(range(1, top + 1))
    if wanted("Attack the top layers", "layer-attack-go"):
        by_key = {c.key: c for c in hierarchies}
        curves = {
            run_slug(sel.choice.info.id): layer_attack_curve(
                run_dir, sel.step, n_inputs, counts, epsilon, 20, restarts, stand_in
            )
        }
        for key in others:
            curves[run_slug(by_key[key].info.id)] = layer_attack_curve(
                str(by_key[key].dir), None, n_inputs, counts, epsilon, 20, restarts, stand_in
            )
        fig = go.Figure()
        rows = []
        for name, curve in curves.items():
            means = [float(curve[n]["ms_ssim"].mean()) for n in counts]
            sds = [float(curve[n]["ms_ssim"].std()) for n in counts]
            fig.add_trace(
                go.Scatter(
                    x=list(counts), y=means, error_y=dict(type="data", array=sds), mode="lines+markers", name=name
                )
            )
            rows += [
                {"model": name, "attacked groups": n, "MS-SSIM mean": m, "MS-SSIM sd": s}
                for n, m, s in zip(counts, means, sds)
            ]
        fig.update_layout(
            height=340,
            xaxis_title="top latent groups attacked",
            yaxis_title="MS-SSIM(reconstruction, attacked reconstruction)",
            margin=dict(l=10, r=10, t=10, b=10),
            legend=dict(orientation="h", y=1.1),
        )
        show_figure(fig, "top-layer-attack.html", key="layer-attack")
        show_table(pd.DataFrame(rows), "top-layer-attack.csv", key="layer-attack-table")
        shown = st.select_slider("Show the attack on", counts, min(2, top), key="layer-attack-shown")
        for name, curve in curves.items():
            result = curve[shown]["result"]
            best = result.ms_ssim.argmin(0)  # per input, the most damaging start
            pick = torch.as_tensor(best)
            k = min(8, result.reconstruction.shape[0])
            idx = torch.arange(k)
            x_clean = data.batch(idx)  # every model beside it was trained on the same data
            attacked_input = (x_clean + result.distortion[pick[:k], idx]).clamp(0, 1)
            picture = labelled_rows(
                [x_clean, result.reconstruction[:k], attacked_input, result.attacked[pick[:k], idx]],
                ["input", "reconstruction", "attacked input", "attacked recon."],
            )
            show_image(
                picture,
                f"top-layer-attack-{name}.png",
                caption=f"{name}: {shown} groups attacked, the worst start per input",
                key=f"img-{name}",
            )
