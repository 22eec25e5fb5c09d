"""DCT-VAE context: the fixed top latent of a DCT-VAE (seed004 App. C, E, G): the context of
test images, a traversal of one of its values, the diffusion prior's reverse process over it,
samples with their contexts, ladder reconstructions and the compression comparison of App. G."""

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st
import torch
from plotly.subplots import make_subplots

from app.runs import available_runs, run_slug
from app.state import current_model, load_data, load_model
from app.widgets import explain, require_model, show_figure, show_image, show_table
from engine.diagnostics.compression import Reconstruction, groups_of, jpeg_at_psnr, ladder
from engine.diagnostics.dctvae import (
    SAMPLE_TEMPERATURES,
    context_levels,
    context_trajectory,
    context_view,
    samples_with_context,
    traverse_context,
)
from engine.images import display_scale, labelled_rows
from engine.inference.layer_attacks import decode_mean_path
from engine.models.base import model_device
from engine.models.dctvae import DCTVAE

COMPRESSION_T = 0.1  # App. G: every latent not kept is drawn from the prior at this temperature

st.title("DCT-VAE context")
sel, loaded = current_model()
require_model(
    loaded,
    DCTVAE,
    "a **DCT-VAE** (family `dctvae`): a hierarchical VAE whose top latent is a fixed function of the image, "
    "its quantised low-frequency DCT coefficients, with a diffusion prior over them.",
    "digits-dctvae",
)
model: DCTVAE = loaded.model
cfg = model.config
run_dir, step = str(sel.choice.dir), sel.step
data = load_data(run_dir, "test")
device = model_device(model)
C, S, _ = model.context_shape
levels = context_levels(cfg.context_bits)
what = "DCT coefficients" if cfg.context == "dct" else "average-pooled pixels"
st.markdown(
    f"This model's top latent is not learned: it is the image's {S}×{S} block of {what}"
    + (f" per channel ({C} channels)" if C > 1 else "")
    + ", each scaled to "
    f"[−1, 1] and rounded to one of {len(levels)} levels. The decoder adds the picture of this context at the "
    "start of every resolution, and a small diffusion model is its prior, so the lower latents only have to "
    "add what the context leaves out."
)
st.caption(f"{cfg.summary()}. Step {loaded.step:,}.")


def generator(seed: int) -> torch.Generator:
    return torch.Generator(device).manual_seed(int(seed))


def picture(rows: list[torch.Tensor], labels: list[str], label_width: int = 80, width: int = 820) -> np.ndarray:
    """labelled_rows zoomed so that the rows are about `width` pixels wide (16x16 images are tiny)."""
    n, _, _, w = rows[0].shape
    return labelled_rows(rows, labels, data.value_range, display_scale(n * (w + 1) + 1, width), label_width)


def rows_of(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """Row i of the picture: image i of every tensor, side by side."""
    return [torch.stack([t[i] for t in tensors]) for i in range(len(tensors[0]))]


# ---- the context of test images ---------------------------------------------------------------
def context_part() -> list[int]:
    st.subheader("The context of test images")
    chosen = st.multiselect("Test images", list(range(len(data))), default=list(range(8)), max_selections=12)
    if not chosen:
        st.info("Choose at least one test image.")
        st.stop()
    x = data.batch(torch.tensor(chosen)).to(device)
    view = context_view(model, x)
    with torch.no_grad():
        recon = decode_mean_path(model, x).cpu()
    show_image(
        picture([x.cpu(), view.image, recon], ["input", "context image", "reconstruction"], label_width=130),
        "dctvae-context.png",
        caption="Test images " + ", ".join(map(str, chosen)),
        key="dl-context",
    )
    c1, c2 = st.columns([1, 3])
    shown = c1.selectbox("Heat map of test image", chosen)
    channel = c1.selectbox("Channel", list(range(C))) if C > 1 else 0
    k = chosen.index(shown)
    scaled = view.scaled[k, channel].numpy()
    values = view.values[k, channel].numpy()
    level = view.levels[k, channel].numpy()
    fig = make_subplots(1, 2, subplot_titles=("scaled, before rounding", "quantised: level (value)"))
    for col, z, text in (
        (1, scaled, np.vectorize(lambda v: f"{v:+.2f}")(scaled)),
        (2, values, np.vectorize(lambda lv, v: f"{lv} ({v:+.2f})")(level, values)),
    ):
        fig.add_trace(
            go.Heatmap(
                z=z,
                text=text,
                texttemplate="%{text}",
                textfont=dict(size=14 if S <= 6 else 10),
                zmin=-1,
                zmax=1,
                colorscale="RdBu",
                coloraxis="coloraxis",
                hovertemplate="row %{y}, column %{x}<br>%{text}<extra></extra>",
            ),
            1,
            col,
        )
    fig.update_yaxes(autorange="reversed", dtick=1)
    fig.update_yaxes(title_text="vertical frequency" if cfg.context == "dct" else "row", col=1)
    fig.update_xaxes(title_text="horizontal frequency" if cfg.context == "dct" else "column", dtick=1)
    fig.update_layout(coloraxis=dict(colorscale="RdBu", cmin=-1, cmax=1), height=380, margin=dict(l=10, r=10, t=40))
    with c2:
        show_figure(fig, "dctvae-coefficients.html", key="coefficients")
    explain(
        "**The context** z_L = f(x) is computed, not inferred: the DCT of the image (a sum of cosine patterns; "
        "top left is the mean brightness; to the right, patterns that change faster from left to right; further "
        f"down, faster from top to bottom), of which only the top-left {S}×{S} block is kept. Each coefficient is "
        "divided by its largest absolute value over "
        f"the training set, so it lies in [−1, 1], and rounded to the centre of one of {len(levels)} equal bins "
        f"(levels 0 to {len(levels) - 1}: {', '.join(f'{v:+.2f}' for v in levels.tolist())}). The left map shows "
        "the value before rounding (a test image can pass ±1; it is clipped), the right one the level kept.\n\n"
        "**The context image** puts the kept block back (multiplied by the scale, every other coefficient "
        "zero) and inverts the DCT: a blurred version of the input, which is what the decoder is given at the "
        "start of every resolution. The reconstruction below it takes every other latent at its posterior mean."
        if cfg.context == "dct"
        else "**The context** z_L = f(x) is computed, not inferred: the image averaged over blocks down to "
        f"{S}×{S}, mapped to [−1, 1] and rounded to one of {len(levels)} levels (App. F's alternative to the "
        "DCT). The context image blows each block back up. The reconstruction takes every other latent at its "
        "posterior mean."
    )
    return chosen


chosen = context_part()
x_chosen = data.batch(torch.tensor(chosen)).to(device)


# ---- traversal ----------------------------------------------------------------------------------
st.subheader("Moving one value of the context")
c1, c2, c3, c4 = st.columns(4)
i = int(c1.selectbox("Row (vertical frequency)" if cfg.context == "dct" else "Row", list(range(S)), index=0))
j = int(c2.selectbox("Column (horizontal frequency)" if cfg.context == "dct" else "Column", list(range(S)), index=1))
ch = int(c3.selectbox("Channel", list(range(C)), key="walk-channel")) if C > 1 else 0
spread = c4.radio("Values", [f"its {len(levels)} levels", "9 values from −1 to 1"], key="walk-values")
c1, c2 = st.columns(2)
below = c1.radio(
    "The latents below the context",
    ["posterior means of the input", "prior at a low temperature"],
    horizontal=True,
    key="walk-below",
)
walk_t = c2.slider("Prior temperature", 0.0, 1.0, 0.1, 0.05, key="walk-t", disabled=below.startswith("posterior"))
values = levels if spread.startswith("its") else torch.linspace(-1, 1, 9)
walk = traverse_context(
    model,
    x_chosen[:4],
    (ch, i, j),
    values,
    below="posterior" if below.startswith("posterior") else "prior",
    temperature=walk_t,
    generator=generator(0),
)
value_labels = [f"{v:+.2f}" for v in walk.values.tolist()]
inputs_shown = ", ".join(map(str, chosen[:4]))
c1, c2 = st.columns(2)
with c1:
    show_image(
        picture(list(walk.context_images.unbind(0)), value_labels, label_width=60, width=420),
        "dctvae-traversal-context.png",
        caption=f"Context images. Rows: the value of entry ({i}, {j}); columns: test images {inputs_shown}",
        target_width=420,
        key="dl-walk-context",
    )
with c2:
    show_image(
        picture(list(walk.decoded.unbind(0)), value_labels, label_width=60, width=420),
        "dctvae-traversal-decoded.png",
        caption="Decoded under each context",
        target_width=420,
        key="dl-walk",
    )
explain(
    f"Entry ({i}, {j}) of the context of the first four chosen inputs is set to each value in turn (one row "
    "each), the rest of the context kept. On the left is the context image, on the right what the decoder makes "
    "of it: with **posterior means** the lower latents are inferred from the input again under the changed context "
    "(how much the decoder follows the context against the evidence of the image), with the **prior** they are "
    "drawn at the chosen temperature with one draw per input shared down its column (what the context alone "
    "decides). A DCT entry adds a cosine pattern: row 0, column 0 is brightness, (0, 1) moves mass left or right, "
    "(1, 0) up or down."
)


# ---- diffusion trajectory -----------------------------------------------------------------------
st.subheader("The prior's reverse process over the context")
c1, c2, c3 = st.columns(3)
n_traj = c1.slider("Draws", 1, 8, 4, key="traj-n")
traj_t = c2.slider("Temperature", 0.0, 1.0, 1.0, 0.1, key="traj-t")
traj_seed = int(c3.number_input("Seed", 0, 2**31 - 1, 0, key="traj-seed"))
path = context_trajectory(model, n_traj, traj_t, generator(traj_seed))
with torch.no_grad():
    below_params, _ = model.top_down(None, n_traj, mode="mean", context=path.sample_image.to(device))
decoded = model.likelihood.mean(below_params).cpu()
rows = rows_of([*path.images, path.sample_image, decoded])
show_image(
    picture(rows, [f"draw {k + 1}" for k in range(n_traj)]),
    "dctvae-trajectory.png",
    key="dl-traj",
)
st.caption(
    "Columns: the context image of y_t for t = "
    + ", ".join(map(str, path.steps))
    + "; then y_0 rounded to the levels; then decoded with every lower latent at its prior mean."
)
fig = go.Figure()
steps = np.array(path.steps)
values_along = torch.stack([y[0, ch].flatten() for y in path.y]).numpy()  # (steps, S*S) for draw 1
for e in range(values_along.shape[1]):
    fig.add_trace(
        go.Scatter(
            x=steps, y=values_along[:, e], mode="lines+markers", name=f"({e // S}, {e % S})", line=dict(width=1.5)
        )
    )
for v in levels.tolist():
    fig.add_hline(y=v, line=dict(color="#888", dash="dot", width=1))
fig.update_layout(
    height=340,
    xaxis=dict(title="step t (T on the left)", autorange="reversed", dtick=1),
    yaxis_title="y_t of draw 1",
    margin=dict(l=10, r=10, t=10, b=10),
    legend=dict(title="entry", font=dict(size=10)),
)
show_figure(fig, "dctvae-trajectory-values.html", key="traj-values")
explain(
    f"The prior p(z_L) is a {model.context_prior.steps}-step diffusion model over the {C}×{S}×{S} context (seed004 "
    "App. C): y_T starts as Gaussian noise scaled by the temperature and each step moves it towards the "
    "denoiser's guess, adding less noise as it goes. Each row shows the context image of y_t along the way (y_t "
    "clipped to [−1, 1]), the rounded y_0 that the model uses, and what the decoder draws from it. The chart "
    "follows every entry of the first draw: they settle near the dotted lines, the levels a context can take. "
    "At temperature 0 no noise is drawn and every draw is the same."
)


# ---- samples ------------------------------------------------------------------------------------
st.subheader("Samples at four temperatures, with their contexts")
c1, c2 = st.columns(2)
per_row = c1.slider("Samples per row", 4, 12, 8, key="samples-n")
sample_seed = int(c2.number_input("Seed", 0, 2**31 - 1, 0, key="samples-seed"))
drawn = samples_with_context(model, per_row, SAMPLE_TEMPERATURES, sample_seed)
pairs = zip(drawn.context_images, drawn.samples)
rows = [torch.stack([im for pair in zip(image, sample) for im in pair]) for image, sample in pairs]
show_image(
    picture(rows, [f"t = {t}" for t in drawn.temperatures]),
    "dctvae-samples.png",
    caption="In each pair: the context image, then the sample decoded from it",
    key="dl-samples",
)
explain(
    "Unconditional samples: a context from the diffusion prior, rounded to the levels, then every lower latent "
    "from its prior, all at the row's temperature (the repo's grids use 1.0, 0.8, 0.6 and 0.4). Each sample "
    "sits to the right of the context image it was decoded from, so you can see what the context fixed (the rough shape "
    "and where the ink is) and what the lower layers added. Every row uses the same seed."
)


# ---- ladder -------------------------------------------------------------------------------------
st.subheader("Ladder reconstructions")
groups = groups_of(model)
c1, c2 = st.columns(2)
ladder_t = c1.slider("Temperature of the latents not kept", 0.0, 1.0, 0.1, 0.05, key="ladder-t")
ladder_seed = int(c2.number_input("Seed", 0, 2**31 - 1, 0, key="ladder-seed"))
x_ladder = x_chosen[:8]
results = [ladder(model, x_ladder, k, ladder_t, generator(ladder_seed)) for k in range(len(groups) + 1)]
show_image(
    picture(rows_of([x_ladder.cpu(), *[r.images.float() for r in results]]), [f"test {k}" for k in chosen[:8]]),
    "dctvae-ladder.png",
    caption=f"Columns: the input, then top 0, 1, ..., {len(groups)}",
    key="dl-ladder",
)
fig = make_subplots(specs=[[{"secondary_y": True}]])
tops = np.arange(len(groups) + 1)
fig.add_trace(
    go.Scatter(x=tops, y=[r.psnr.mean() for r in results], name="PSNR (dB)", mode="lines+markers", line_color="#1f77b4")
)
fig.add_trace(
    go.Scatter(
        x=tops,
        y=[r.bits_per_pixel.mean() for r in results],
        name="bits per pixel",
        mode="lines+markers",
        line=dict(color="#ff7f0e", dash="dash"),
    ),
    secondary_y=True,
)
fig.update_xaxes(title_text="latent groups kept from the posterior (1 = the context)", dtick=1)
fig.update_yaxes(title_text="PSNR (dB)", secondary_y=False)
fig.update_yaxes(title_text="bits per pixel", secondary_y=True, showgrid=False, rangemode="tozero")
fig.update_layout(height=320, margin=dict(l=10, r=10, t=10, b=10), legend=dict(orientation="h", y=1.12))
show_figure(fig, "dctvae-ladder.html", key="ladder-fig")
explain(
    "Column **top k** decodes the input with the first k latent groups taken from the posterior and the rest "
    f"drawn from the prior at the chosen temperature. The groups from the top are: {', '.join(groups)}. Top 0 "
    "keeps nothing (a sample), top 1 keeps only the context, and each further column adds one layer. The chart "
    "gives the mean PSNR and the rate of what was kept: the context's code length under the diffusion prior "
    "(−L_DDGM, a bound) plus each kept layer's KL to its prior, in bits per pixel."
)


# ---- App. G -------------------------------------------------------------------------------------
st.subheader("Compression with the top of the hierarchy (App. G)")


def same_data(choice) -> bool:
    info = sel.choice.info
    return choice.info.dataset == info.dataset and choice.info.input_shape == info.input_shape


hvaes = [c for c in available_runs() if c.info.family == "hvae" and c.info.status != "broken" and same_data(c)]
c1, c2 = st.columns([2, 1])
default = next(
    (k for k, c in enumerate(hvaes) if c.key.startswith("demo/") and run_slug(c.info.id) == "digits-hvae"), 0
)
other = c1.selectbox("Plain HVAE to compare", hvaes, index=default, format_func=lambda c: c.label) if hvaes else None
n_comp = c2.slider("Test images", 2, 12, 6, key="comp-n")
x_comp = x_chosen[:n_comp] if len(chosen) >= n_comp else data.batch(torch.arange(n_comp)).to(device)


@st.cache_data(max_entries=16, show_spinner="Matching JPEG's quality to the DCT-VAE's PSNR…")
def jpeg_matched(x: np.ndarray, target: np.ndarray) -> tuple[Reconstruction, np.ndarray]:
    return jpeg_at_psnr(torch.from_numpy(x), target)


methods: list[tuple[str, Reconstruction]] = []
dct = ladder(model, x_comp, 1, COMPRESSION_T, generator(0))
methods.append(("DCT-VAE, context only", dct))
if other is not None:
    hvae = load_model(str(other.dir), None).model
    methods.append(("HVAE, top 2 layers", ladder(hvae, x_comp.to(model_device(hvae)), 2, COMPRESSION_T, generator(0))))
else:
    st.info(
        "No plain HVAE trained on the same data is listed; train one with `latent-atlas train --preset digits-hvae`."
    )
jpg, qualities = jpeg_matched(x_comp.cpu().double().numpy(), dct.psnr)
methods.append(("JPEG at the DCT-VAE's PSNR", jpg))
show_image(
    picture(
        [x_comp.cpu(), *[r.images.float() for _, r in methods]],
        ["input", "DCT-VAE: context", *(["HVAE: top 2"] if other is not None else []), "JPEG"],
        label_width=130,
        width=600,
    ),
    "dctvae-compression.png",
    key="dl-comp",
)
st.caption(
    "JPEG qualities per image: "
    + ", ".join(map(str, qualities.tolist()))
    + ("; at quality 1, JPEG's lowest, its PSNR can be above the target" if (qualities == 1).any() else "")
)
show_table(
    pd.DataFrame(
        {
            "method": [name for name, _ in methods],
            "kept": [r.what for _, r in methods],
            "PSNR (dB)": [round(float(r.psnr.mean()), 2) for _, r in methods],
            "MS-SSIM": [round(float(r.ms_ssim.mean()), 3) for _, r in methods],
            "bits per pixel": [round(float(r.bits_per_pixel.mean()), 4) for _, r in methods],
        }
    ),
    "dctvae-compression.csv",
    key="comp-table",
)
explain(
    "seed004 App. G asks how much of an image the top of a hierarchy holds. The DCT-VAE keeps only its context "
    "(one latent); a plain HVAE keeps its top two layers; every other latent is drawn from the prior at "
    f"temperature {COMPRESSION_T}. JPEG (Pillow, no chroma subsampling) is set, image by image, to the lowest "
    "quality that reaches the DCT-VAE's PSNR. The table gives means over the images: PSNR and MS-SSIM against "
    "the input and the rate in bits per pixel. For the models the rate is what the kept latents cost under "
    "their priors (the context's diffusion bound, a layer's KL), a code length that an entropy coder would "
    "approach; for JPEG it is the entropy-coded data of the file, without the headers (their tables are fixed for "
    "a quality). The paper's images are 32×32 patches of KODAK photographs, far larger than these digits."
)
