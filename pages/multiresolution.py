"""Multi-resolution views: an image's Haar projections (seed000 Fig. 3.1, B.2), Theorem 4.2
measured along a DDPM forward process, and the preconditioning toy (seed000 Fig. 4.2, C.12)."""

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st
import torch
import torch.nn.functional as F

from app.widgets import explain, plain, show_figure, show_image, show_table
from engine.data import load_dataset
from engine.data.files import decode_image
from engine.errors import AtlasError
from engine.haar import HaarNoise, haar_noise, haar_projections, to_power_of_two
from engine.images import image_grid
from engine.models.diffusion import beta_schedule
from engine.models.preconditioning import GOOD, PRECONDITIONERS, PreconditioningConfig, PreconditioningFit, fit

SIZES = {"digits": 32, "facet-digits": 32, "shapes": 32, "fashion-mnist": None}  # None: the dataset's own 28
IMAGES = 500  # test images per dataset: the pictures to pick from and the data of the signal variance
MAX_SIDE = 128  # an upload is shown at most this large
STEPS = 1000  # the forward process's T
TIMES = [1, 3, 10, 30, 100, 300, 600, 1000]
LEVEL_COLOURS = ["#1f1f1f", "#1f77b4", "#2ca02c", "#ff7f0e", "#d62728", "#9467bd", "#8c564b", "#17becf"]
FIT_COLOURS = {"target": "#1f1f1f", "preconditioner": "#2ca02c", "fit": "#1f77b4"}
LOSS_COLOURS = {"v": "#d62728", "|v|": "#9467bd"}
PRE = "R<sup>pre</sup>"  # in Plotly's text

st.title("Multi-resolution views")
st.markdown(
    "An image is a sum of Haar wavelets, from the mean over the whole picture down to differences between "
    "neighbouring pixels. Averaging 2×2 blocks drops the finest layer: that is all average pooling in a "
    "U-Net or an HVAE does. This page shows the layers of one image, how the noise of a diffusion model "
    "swamps the fine layers long before the coarse ones, and why starting a network from a good guess "
    "(preconditioning, the U-Net's trick) matters."
)


@st.cache_data(max_entries=8, show_spinner="Loading images…")
def dataset_images(name: str) -> torch.Tensor:
    """The first IMAGES test images of a dataset (N, C, S, S), padded to a side that is a power of two."""
    size = SIZES[name]
    data = load_dataset(name, split="test", **({"size": size} if size else {}))
    x = data.batch(torch.arange(min(IMAGES, len(data))))
    return to_power_of_two(x.float())


@st.cache_data(max_entries=4, show_spinner=False)
def fashion_mnist_found() -> bool:
    try:
        load_dataset("fashion-mnist", split="test")
    except AtlasError:
        return False
    return True


def uploaded_image(upload, how: str) -> torch.Tensor:
    """An uploaded PNG as (C, S, S), S a power of two at most MAX_SIDE."""
    array = decode_image(upload, upload.name, max_side=4096)
    x = torch.from_numpy(array)
    x = x[None] if x.ndim == 2 else x.permute(2, 0, 1)
    x = to_power_of_two(x, how)
    if x.shape[-1] > MAX_SIDE:
        x = F.interpolate(x[None], size=(MAX_SIDE, MAX_SIDE), mode="area")[0]
    return x


def projections_part() -> str:
    """The Haar projections of one image; returns the dataset whose images the next part uses."""
    st.subheader("Haar projections of an image")
    names = [n for n in SIZES if n != "fashion-mnist" or fashion_mnist_found()]
    c1, c2, c3, c4 = st.columns([1.2, 1.3, 1, 1])
    source = c1.radio("Image", ["from a dataset", "upload a PNG"], horizontal=True, key="haar_source")
    name = c2.selectbox("Dataset", names, key="haar_dataset", help="Also the data of the noise-per-level part.")
    images = dataset_images(name)
    how = c4.radio(
        "Not a power of two?",
        ["pad", "resize"],
        horizontal=True,
        help="The projections need a square side of 1, 2, 4, 8, …: repeat the border pixels out to the next "
        "one, or scale the image.",
    )
    if source == "from a dataset":
        index = c3.number_input("Index", 0, len(images) - 1, 0, key="haar_index")
        x = images[index]
        label = f"{name} test image {index}"
    else:
        upload = st.file_uploader("A PNG or JPEG", type=["png", "jpg", "jpeg"], key="haar_upload")
        if upload is None:
            st.info("Choose an image file above, or switch back to a dataset.")
            return name
        try:
            x = uploaded_image(upload, how)
        except AtlasError as err:
            st.error(plain(str(err)))
            return name
        label = plain(upload.name)
    levels = haar_projections(x)
    grid = image_grid(torch.stack(levels), nrow=len(levels), padding=2)
    side = x.shape[-1]
    show_image(
        grid,
        "haar-projections.png",
        caption=f"{label}, {side}×{side}. Left to right: its projection onto V₀ (1×1, the mean), "
        + ", ".join(f"V₋{j} ({2**j}×{2**j})" for j in range(1, len(levels)))
        + " (the image itself).",
        target_width=1200,
        key="dl-haar-projections",
    )
    explain(
        "**Haar projections** (seed000 Fig. 3.1, B.2). V₋ⱼ is the space of images that are constant on "
        "blocks of 2⁻ʲ of the side: 2ʲ × 2ʲ 'big pixels'. Projecting onto it replaces every block by its "
        "mean, which is 2×2 average pooling repeated until the image is 2ʲ wide, then each pooled pixel "
        "blown back up (nearest upsampling). The spaces are nested, V₀ ⊂ V₋₁ ⊂ … ⊂ V₋ᵢ, and each step "
        "adds one layer of Haar wavelets: the differences between the halves of every block.\n\n"
        "**Why it matters.** A U-Net's average pooling is exactly this projection (seed000 Thm 3.2), so its "
        "coarse levels see the image on the left of the row and its skip connections carry what each step "
        "to the right adds. An image whose side is not a power of two is padded (its border pixels "
        "repeated) or resized first; an upload is shown at most 128×128."
    )
    return name


@st.cache_data(max_entries=16, show_spinner="Drawing noise: 50,000 images per time step…")
def noise_per_level(name: str, schedule: str, transform: str) -> HaarNoise:
    alpha_bars = torch.cumprod(1 - beta_schedule(schedule, STEPS), 0)[torch.tensor(TIMES) - 1]
    return haar_noise(dataset_images(name), alpha_bars.tolist(), transform, seed=0)


def ratio_figure(result: HaarNoise) -> go.Figure:
    fig = go.Figure()
    levels = result.levels
    fig.add_trace(
        go.Scatter(
            x=levels,
            y=result.theory,
            mode="lines",
            name="Theorem 4.2: " + ("2^(j−1)" if result.transform == "rows" else "4^(j−1)"),
            line=dict(color="#d62728", width=3, dash="dash"),
        )
    )
    for k, t in enumerate(TIMES):
        fig.add_trace(
            go.Scatter(
                x=levels + (k - len(TIMES) / 2) * 0.03,
                y=result.ratio[k],
                error_y=dict(type="data", array=2 * result.ratio_se[k], visible=True, thickness=1),
                mode="markers",
                name=f"t = {t}",
                marker=dict(size=7, color=px_colour(k)),
                hovertemplate="level %{x:.0f}<br>ratio %{y:.4g}<extra>t = " + str(t) + "</extra>",
            )
        )
    fig.update_layout(
        height=420,
        margin=dict(l=10, r=10, t=40, b=10),
        title="Noise variance of each level ÷ the base level's",
        xaxis=dict(title="Haar level j (0: the mean; j: blocks of 2^(i−j+1) pixels a side)", dtick=1),
        yaxis=dict(
            title="variance ratio (log scale)",
            type="log",
            tickvals=sorted(set(result.theory)),
            ticktext=[f"{v:g}" for v in sorted(set(result.theory))],
        ),
        legend=dict(orientation="h", y=-0.25),
    )
    return fig


def px_colour(k: int) -> str:
    return f"hsl({int(240 * k / max(1, len(TIMES) - 1))}, 70%, 45%)"


def snr_figure(result: HaarNoise) -> go.Figure:
    fig = go.Figure()
    for j in result.levels:
        fig.add_trace(
            go.Scatter(
                x=TIMES,
                y=result.snr[:, j],
                mode="lines+markers",
                name=f"level {j}" + (" (the mean)" if j == 0 else ""),
                line=dict(color=LEVEL_COLOURS[j % len(LEVEL_COLOURS)], width=2.5, dash="dash" if j == 0 else "solid"),
            )
        )
    fig.add_hline(y=1, line=dict(color="grey", dash="dot"), annotation_text="signal = noise")
    fig.update_layout(
        height=420,
        margin=dict(l=10, r=10, t=40, b=10),
        title="Signal-to-noise ratio of each level along the forward process",
        xaxis=dict(title="diffusion step t (log scale)", type="log", dtick=1),
        yaxis=dict(title="signal variance ÷ noise variance (log scale)", type="log", dtick=2, exponentformat="power"),
        legend=dict(orientation="h", y=-0.25),
    )
    return fig


def theorem_part(name: str) -> None:
    st.subheader("Theorem 4.2: noise per Haar level along the forward process")
    c1, c2 = st.columns(2)
    schedule = c1.radio("β schedule (T = 1,000)", ["linear", "cosine"], horizontal=True, key="haar_schedule")
    transform = c2.radio(
        "Haar transform",
        ["square", "rows"],
        format_func={"square": "2-D (square blocks)", "rows": "1-D (along each row)"}.get,
        horizontal=True,
        key="haar_transform",
    )
    result = noise_per_level(name, schedule, transform)
    left, right = st.columns(2)
    with left:
        show_figure(ratio_figure(result), "haar-noise-ratio.html", key="haar-ratio")
    with right:
        show_figure(snr_figure(result), "haar-snr.html", key="haar-snr")
    deviation = result.ratio / result.theory - 1
    table = pd.DataFrame(
        {
            "level j": result.levels,
            "coefficients": [
                1 if j == 0 else (2 ** (j - 1) if transform == "rows" else 3 * 4 ** (j - 1)) for j in result.levels
            ],
            "theory": result.theory,
            "measured (mean over t)": result.ratio.mean(0).round(4),
            "largest deviation": [f"{d:+.1%}" for d in deviation[np.abs(deviation).argmax(0), result.levels]],
            f"SNR at t = {TIMES[4]}": result.snr[4].round(4),
        }
    )
    show_table(table, "haar-noise-ratio.csv", key="haar-table")
    st.caption(
        f"{result.draws:,} noise images of {name}'s shape drawn afresh at each t ({result.base_count:,} base "
        f"coefficients; error bars ± 2 standard errors); the signal is the variance over {IMAGES} test images. "
        "Coefficients per image and channel" + (", per row." if transform == "rows" else ".")
    )
    explain(
        "**What is measured.** The forward process of a diffusion model (DDPM) noises every pixel: "
        "x_t = √ᾱ_t x₀ + √(1 − ᾱ_t) ε. Write x_t − √ᾱ_t x₀ = √(1 − ᾱ_t) ε in Haar coefficients, scaled as in "
        "the proof of Theorem 4.2 (seed000 eq. C.13–C.15): the base coefficient is the mean, a level-j "
        "coefficient is half the difference between the means of the two halves of a block of 2^(i−j+1) "
        "pixels. The left chart is each level's noise variance divided by the base's, measured from the "
        "draws; the dashed line is the theorem.\n\n"
        "**Why 2^(j−1), and 4^(j−1) in 2-D.** A mean over n pixels of unit noise has variance 1/n. Along a "
        "row, a level-j coefficient is half a difference of two means over 2^(i−j) pixels: variance "
        "2^(−i+j−1), against 2^(−i) for the mean of the whole row, a ratio of 2^(j−1) (eq. C.21). The square "
        "transform uses blocks of 2^(i−j+1) × 2^(i−j+1) pixels and a quarter of the signed sum of their four "
        "quadrant means: variance 4^(−i+j−1) against 4^(−i), a ratio of 4^(j−1) = 2^(j−1) per axis.\n\n"
        "**What it means.** Noise piles up in the fine levels exponentially fast, while natural images keep "
        "most of their signal in the coarse ones. The right chart shows each level's signal variance "
        "(over the test images) against its noise variance: the finest levels cross 'signal = noise' at "
        "small t, the mean survives almost to the end. Average pooling in a U-Net discards exactly the levels "
        "that are noise first, which is why it suits denoising (seed000 §4.4)."
    )


@st.cache_data(max_entries=32, show_spinner="Fitting the toy ResNet…")
def toy_fit(target: str, preconditioner: str, depth: int, steps: int, seed: int) -> PreconditioningFit:
    return fit(PreconditioningConfig(target=target, preconditioner=preconditioner, depth=depth, steps=steps), seed)


def fit_figure(result: PreconditioningFit, target_label: str) -> go.Figure:
    fig = go.Figure()
    curves = [
        ("target", f"w(v) = {target_label} (target)", result.target, "solid"),
        (
            "preconditioner",
            f"{PRE}(v) = {result.config.preconditioner} (preconditioner)",
            result.preconditioner,
            "dashdot",
        ),
        ("fit", f"R<sup>res</sup>(v) = {PRE}(v) + R(v) (fitted)", result.fitted, "solid"),
    ]
    for key, name, y, dash in curves:
        fig.add_trace(
            go.Scatter(
                x=result.v,
                y=y,
                mode="lines+markers" if key == "fit" else "lines",
                name=name,
                line=dict(color=FIT_COLOURS[key], width=3 if key == "target" else 2, dash=dash),
                marker=dict(size=4),
            )
        )
    fig.update_layout(
        height=400,
        margin=dict(l=10, r=10, t=40, b=10),
        title=f"{PRE}(v) = {result.config.preconditioner}: MSE {result.mse:.2g}",
        xaxis=dict(title="v", range=[-1.02, 1.02]),
        yaxis=dict(title="w", range=[-1.1, 1.1]),
        legend=dict(orientation="h", y=-0.2),
    )
    return fig


def loss_figure(fits: dict[str, PreconditioningFit]) -> go.Figure:
    fig = go.Figure()
    for pre, result in fits.items():
        fig.add_trace(
            go.Scatter(y=result.losses, mode="lines", name=f"{PRE}(v) = {pre}", line=dict(color=LOSS_COLOURS[pre]))
        )
    fig.update_layout(
        height=300,
        margin=dict(l=10, r=10, t=40, b=10),
        title="Training loss",
        xaxis=dict(title="Adam step"),
        yaxis=dict(title="MSE (log scale)", type="log", exponentformat="power"),
    )
    return fig


def preconditioning_part() -> None:
    st.subheader("Preconditioning: a weak ResNet started from a good or a bad guess")
    labels = {"v^2": "v²", "v^3": "v³"}
    c1, c2, c3, c4 = st.columns(4)
    target = c1.radio("Target w(v)", list(labels), format_func=labels.get, horizontal=True, key="toy_target")
    depth = c2.select_slider("Steps D of R (shared weights)", [1, 10, 30, 100, 200], 100, key="toy_depth")
    steps = c3.select_slider("Adam steps", [100, 200, 300, 500, 1000], 300, key="toy_steps")
    seed = c4.number_input("Seed", 0, 10_000, 0, key="toy_seed")
    fits = {pre: toy_fit(target, pre, depth, steps, int(seed)) for pre in PRECONDITIONERS}
    columns = st.columns(2)
    for column, (pre, result) in zip(columns, fits.items()):
        with column:
            show_figure(fit_figure(result, labels[target]), f"preconditioning-{pre.strip('|')}.html", key=f"toy-{pre}")
    good = GOOD[target]
    bad = next(p for p in PRECONDITIONERS if p != good)
    m1, m2, m3 = st.columns(3)
    for column, pre in zip((m1, m2), PRECONDITIONERS):
        column.metric(f"MSE with Rᵖʳᵉ(v) = {pre}", f"{fits[pre].mse:.2e}")
    winner = min(fits, key=lambda p: fits[p].mse)
    factor = fits[bad if winner == good else good].mse / max(fits[winner].mse, 1e-30)
    m3.metric(
        "Better preconditioner",
        winner,
        f"{factor:,.0f}× smaller error" if factor >= 10 else f"{factor:.2f}× smaller error",
    )
    show_figure(loss_figure(fits), "preconditioning-loss.html", key="toy-loss")
    explain(
        "**The toy** (seed000 Fig. 4.2, C.12). A ResNet R^res(v) = R^pre(v) + R(v) learns w(v) = v² or v³ on "
        "50 points of [−1, 1]. It is made weak on purpose: R is one tiny network r with [1, 20, 1] neurons "
        "and a ReLU, its two weight matrices held at a Frobenius norm below 1, applied D times with the "
        "same weights as residual steps h ← h + r(h) that start from h = R^pre(v) ('100 steps of unit "
        "length', inspired by invertible ResNets). Each such step is increasing in h, so the whole network "
        "can only bend its starting guess monotonically: R^res(v) = φ(R^pre(v)).\n\n"
        "**What to look for.** For v², |v| is a good guess (φ(u) = u² on [0, 1]) and v a hopeless one: no "
        "increasing φ turns v into the valley v². For v³ the roles swap: v becomes v³, but the even |v| "
        "can never become the odd v³. The preconditioner, not the network, decides whether the fit "
        "succeeds; a U-Net's coarse level is the preconditioner of its next finer one (seed000 Prop. 4.1). "
        "Which reading of the thesis's 'apply R D times' this is, and what the other readings give, is "
        "in engine/models/preconditioning.py and the README."
    )


dataset = projections_part()
theorem_part(dataset)
preconditioning_part()
