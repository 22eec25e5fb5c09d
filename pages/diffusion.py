"""Diffusion models: samples at a temperature and a resolution, the samples of each training
stage (seed000 Algorithm 1, Figs. 4.7 and C.6-C.8), the reverse trajectory, the forward
process against the denoiser's one-step guess, the bound split by step, and the U-Net's
block norms binned by diffusion time."""

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st
import torch

from app.runs import available_runs, checkpoint_steps, run_slug
from app.state import load_data, load_model
from app.widgets import explain, show_figure, show_image, show_table
from engine.diagnostics.diffusion import (
    at_full_size,
    block_norms_by_time,
    bound_by_steps,
    noised_and_denoised,
    reverse_trajectory,
    stage_ends,
    trajectory_steps,
)
from engine.images import labelled_rows
from engine.models.ddpm import DDPM

st.title("Diffusion models")
runs = [c for c in available_runs(kind="diffusion") if c.info.status != "broken"]
if not runs:
    st.info(
        "No diffusion model yet. Train one from the command line, for example "
        "`latent-atlas train --preset digits-ddpm` (a Residual U-Net on the 16x16 digits, about 10 minutes on a "
        "CPU), `digits-multiresnet`, `digits-multiresnet-v1` or `digits-ddpm-staged`; it appears here as it trains."
    )
    st.stop()
choice = st.selectbox("Diffusion run", runs, format_func=lambda c: f"{c.label}")
run_dir = str(choice.dir)
steps_saved = checkpoint_steps(choice)
if not steps_saved:
    st.info(f"`{run_slug(choice.info.id)}` has no checkpoint yet; it appears here once it has saved one.")
    st.stop()
loaded = load_model(run_dir, None)
model: DDPM = loaded.model.eval()
cfg = model.config
st.caption(f"{cfg.summary()}. Step {loaded.step:,}, {loaded.weights} weights.")
T = cfg.steps
side = cfg.input_shape[-1]


@st.cache_data(max_entries=32, show_spinner="Sampling…")
def samples(run_dir: str, step: int | None, n: int, temperature: float, level: int, seed: int) -> np.ndarray:
    m = load_model(run_dir, step).model.eval()
    with torch.no_grad():
        x = m.sample(n, temperature, level, torch.Generator().manual_seed(seed))
    return at_full_size(x, m.config.input_shape[-1]).cpu().numpy()


# ---- samples --------------------------------------------------------------------------------
st.subheader("Samples")
c1, c2, c3, c4 = st.columns(4)
temperatures = c1.multiselect("Temperatures (one row each)", [1.0, 0.8, 0.6, 0.4], default=[1.0, 0.8, 0.6, 0.4])
per_row = c2.slider("Samples per row", 4, 16, 10)
levels = {f"{side // 2**i}×{side // 2**i}": i for i in range(model.levels)}
level = levels[c3.selectbox("Resolution", list(levels), help="Coarser levels use their own head and tail.")]
seed = int(c4.number_input("Seed", 0, 2**31 - 1, 0))
if level and not (cfg.stage_steps and cfg.freeze):
    st.caption(
        "This model's coarser levels were "
        + (
            "trained first and then kept learning as part of the finer ones"
            if cfg.stage_steps
            else "never trained alone"
        )
        + ": their samples show what the shared parts give there, not a model of that resolution."
    )
if temperatures:
    temperatures = sorted(temperatures, reverse=True)
    rows = [torch.from_numpy(samples(run_dir, None, per_row, t, level, seed)) for t in temperatures]
    show_image(labelled_rows(rows, [f"temperature {t}" for t in temperatures]), "diffusion-samples.png")
explain(
    "Each row is drawn by ancestral sampling: x_T from N(0, τ²I), then T steps of x_{t−1} ~ N(μ(x_t), τ²σ_t²) "
    "down to x_0, the mean of the last step (seed004 App. C). The temperature τ scales the starting noise and "
    "every step's noise; the same seed gives the same noise in every row, so the rows differ only in scale. "
    "Lower temperatures give smoother, more typical and less varied images."
)

# ---- training stages ------------------------------------------------------------------------
if cfg.stage_steps:
    st.subheader("What each training stage learned")
    ends = stage_ends(model, sorted(steps_saved))
    if ends:
        n_stage = st.slider("Samples per stage", 4, 16, 10, key="stage-n")
        stage_rows = [torch.from_numpy(samples(run_dir, s, n_stage, 1.0, lvl, seed)) for s, lvl in ends]
        labels = [f"step {s:,}: {side // 2**lvl}x{side // 2**lvl} px" for s, lvl in ends]  # PIL's font: ASCII
        show_image(labelled_rows(stage_rows, labels, label_width=170), "diffusion-stages.png")
    else:
        st.info("No checkpoint of this run closes a training stage yet.")
    explain(
        "Algorithm 1 (seed000 §4.4) trains the U-Net one resolution at a time, coarsest first: the first stage "
        f"learns to denoise the images averaged down to {side // 2 ** (model.levels - 1)}×"
        f"{side // 2 ** (model.levels - 1)}, each next stage adds the level above, preconditioned on what was "
        "learned below it, with a head and a tail of its own. Each row samples the checkpoint that closed a stage "
        "at that stage's resolution (shown at full size, one block per pixel)"
        + (
            ". Freezing kept every trained level as it was, so the final model still samples all of them."
            if cfg.freeze
            else "."
        )
    )

# ---- trajectories ---------------------------------------------------------------------------
st.subheader("The reverse process, step by step")
c1, c2 = st.columns(2)
n_traj = c1.slider("Samples", 1, 8, 4)
traj_seed = int(c2.number_input("Seed", 0, 2**31 - 1, 1, key="traj-seed"))
shown = trajectory_steps(T)


@st.cache_data(max_entries=16, show_spinner="Running the reverse process…")
def trajectory_picture(run_dir: str, n: int, seed: int, level: int) -> np.ndarray:
    m = load_model(run_dir, None).model.eval()
    tr = reverse_trajectory(m, n, shown, level=level, seed=seed)
    rows, labels = [], []
    for i in range(n):
        rows += [torch.cat([x[i : i + 1] for x in tr.x]), torch.cat([x[i : i + 1] for x in tr.x0])]
        labels += [f"sample {i + 1}: x_t", "  its guess of x_0"]
    return labelled_rows([at_full_size(r, m.config.input_shape[-1]) for r in rows], labels)


show_image(trajectory_picture(run_dir, n_traj, traj_seed, level), "diffusion-trajectory.png")
st.caption("Columns: t = " + ", ".join(str(s) for s in shown))
explain(
    "Each pair of rows follows one sample from x_T (pure noise, left) to x_0 (right). The lower row is the "
    "denoiser's estimate of the final image at that step, x̂_0(x_t): coarse shape appears first and fine detail "
    "last, because the noise drowns high frequencies first (Theorem 4.2, on the Multi-resolution views page)."
)

# ---- forward process ------------------------------------------------------------------------
st.subheader("Noising test images, and what the denoiser recovers in one step")
data = load_data(run_dir, "test")
c1, c2 = st.columns(2)
first = int(c1.number_input("First test image", 0, max(len(data) - 4, 0), 0))
fwd_seed = int(c2.number_input("Noise seed", 0, 2**31 - 1, 0, key="fwd-seed"))
with torch.no_grad():
    x = data.batch(torch.arange(first, min(first + 4, len(data)))).to(model.step.device)
    tr = noised_and_denoised(model, x, shown[::-1], seed=fwd_seed)
rows, labels = [], []
for i in range(len(x)):
    rows += [torch.cat([v[i : i + 1] for v in tr.x]), torch.cat([v[i : i + 1] for v in tr.x0])]
    labels += [f"test {first + i}: x_t", "  its guess of x_0"]
show_image(labelled_rows(rows, labels), "diffusion-forward.png")
st.caption("Columns: t = " + ", ".join(str(s) for s in shown[::-1]))
explain(
    "The forward process q(x_t | x_0) = N(√ᾱ_t x_0, (1 − ᾱ_t) I) (seed004 eq. 11) noises a test image (upper "
    "rows); the denoiser, given only x_t and t, guesses the clean image in one step (lower rows). At small t it "
    "restores the image; at large t only the average digit remains, since x_t then says little about x_0."
)

# ---- the bound ------------------------------------------------------------------------------
st.subheader("Where the bits go: the bound split by step")
n_bound = st.select_slider("Test images", [8, 16, 32, 64], 16)


@st.cache_data(max_entries=8, show_spinner="Computing every step of the bound…")
def bound_table(run_dir: str, n: int) -> tuple[float, float, np.ndarray]:
    m = load_model(run_dir, None).model.eval()
    d = load_data(run_dir, "test")
    b = bound_by_steps(m, d.batch(torch.arange(min(n, len(d)))).to(m.step.device))
    return b.recon, b.prior, b.steps


recon, prior, per_step = bound_table(run_dir, n_bound)
total = recon + prior + per_step.sum()
c1, c2, c3 = st.columns(3)
c1.metric("Test bound", f"{total:.3f} bits/dim")
c2.metric("L_0 (discretised likelihood)", f"{recon:.3f} bits/dim")
c3.metric("L_T (prior)", f"{prior:.2e} bits/dim")
fig = go.Figure(go.Bar(x=np.arange(2, T + 1), y=per_step, marker_color="#4c78a8"))
fig.update_layout(
    xaxis_title="step t", yaxis_title="L_{t−1} (bits/dim)", yaxis_type="log", height=340, margin=dict(t=10, b=40)
)
show_figure(fig, "diffusion-bound-by-step.html")
show_table(
    pd.DataFrame({"t": np.arange(2, T + 1), "L_{t-1} bits/dim": per_step}),
    "diffusion-bound-by-step.csv",
    key="bound-csv",
)
explain(
    "The DDPM bound (seed004 eq. 13) is a sum of T + 1 terms: the prior term L_T, the KL between the forward "
    "process's posterior and the model's reverse step at every t ≥ 2, and the discretised likelihood L_0 of the "
    "8-bit data (eqs. 14-15). Each term is averaged over the test images with one noise draw each; most of the "
    "bits sit in the first few steps, where the fine detail is decided."
)

# ---- U-Net block norms ----------------------------------------------------------------------
st.subheader("U-Net block norms by diffusion time")
c1, c2 = st.columns(2)
n_bins = c1.select_slider("Time bins", [2, 4, 5, 10], 5)
n_norm = c2.select_slider("Test images", [16, 64, 256], 64, key="norm-n")


@st.cache_data(max_entries=8, show_spinner="Measuring block norms…")
def norms_table(run_dir: str, n: int, bins: int) -> tuple[list[str], list[int], np.ndarray, np.ndarray]:
    m = load_model(run_dir, None).model.eval()
    d = load_data(run_dir, "test")
    b = block_norms_by_time(m, d.batch(torch.arange(min(n, len(d)))).to(m.step.device), bins)
    return b.blocks, b.edges, b.mean, b.sd


blocks, edges, norm_mean, norm_sd = norms_table(run_dir, n_norm, n_bins)
fig = go.Figure()
for b in range(len(edges) - 1):
    fig.add_trace(
        go.Scatter(
            x=list(range(len(blocks))),
            y=norm_mean[b],
            error_y=dict(type="data", array=norm_sd[b], visible=True, thickness=1),
            mode="lines+markers",
            name=f"t in {edges[b] + 1}–{edges[b + 1]}",
        )
    )
changes = [i for i in range(1, len(blocks)) if blocks[i].split("#")[0] != blocks[i - 1].split("#")[0]]
for i in changes:
    fig.add_vline(x=i - 0.5, line_dash="dot", line_color="#999")
fig.update_layout(
    xaxis=dict(tickmode="array", tickvals=list(range(len(blocks))), ticktext=blocks, tickangle=-40),
    yaxis_title="‖block output‖₂ (mean ± sd)",
    height=420,
    margin=dict(t=10, b=120),
    legend_title="diffusion time",
)
show_figure(fig, "unet-block-norms.html")
explain(
    "The L2 norm of every residual block's output in the full-resolution U-Net, in the order the forward pass runs "
    "them (encoder from fine to coarse, the middle, decoder from coarse to fine; dotted lines where the block kind "
    "or resolution changes), for test images noised to a time t within each bin. The HVAE residual norms page "
    "shows the same kind of profile for a hierarchical VAE, where the norm grows block by block like a clock "
    "(seed000 §3); here the input's noise level sets the scale, so the profile moves with t."
)
