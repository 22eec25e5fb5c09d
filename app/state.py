"""The selected run and checkpoint, and the cached objects every page shares.

The sidebar (drawn by app/main.py) writes the choice into st.session_state, so it is
remembered per browser session across pages; a link sets it when the tab first loads and
the URL follows it (app/links.py). Models load once per (run, checkpoint) with
st.cache_resource and are shared, read-only, by every session.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import streamlit as st
import torch

from app import links
from app.links import RUN_KEY, STEP_KEY
from app.runs import RunChoice, available_runs, checkpoint_steps
from engine.data.base import Dataset
from engine.device import describe_device, pick_device
from engine.diagnostics.activity import elbo_kl_per_group, latent_activity
from engine.diagnostics.facets import FacetEncoding, encode_facets, facet_probes
from engine.diagnostics.hvae import LayerStatistics, NormProfile, layer_statistics, residual_norms
from engine.errors import AtlasError
from engine.inference.importance import log_importance_weights
from engine.loading import LoadedModel, evaluate_bounds, load_run_model
from engine.randomness import random_stream
from engine.store import Run
from engine.threads import server_threads

# Test inputs picked on the latent map, {run directory: [test indices]}, for the pages it sends them to;
# HMC_INPUT_KEY is the HMC page's test-input widget, which the map sets directly.
MAP_SELECTION_KEY, HMC_INPUT_KEY = "map_selection", "hmc_input"

# Decoding a grid is small work; leaving half the cores to other processes (a training
# run on the same machine) avoids the many-fold slowdown of oversubscribed threads.
torch.set_num_threads(server_threads())


@dataclass
class Selection:
    choice: RunChoice
    step: int | None  # None: latest


@st.cache_resource(max_entries=16, show_spinner="Loading model…")
def load_model(run_dir: str, step: int | None) -> LoadedModel:
    run = Run.from_dir(run_dir, readonly=True)
    return load_run_model(run, "latest" if step is None else step, device=str(pick_device("auto")))


@st.cache_resource(max_entries=16, show_spinner="Loading data…")
def load_data(run_dir: str, split: str) -> Dataset:
    from engine.training import RunSpec

    return RunSpec.from_dict(Run.from_dir(run_dir, readonly=True).config).load_data(split)


@st.cache_data(max_entries=32, show_spinner="Measuring latent activity…")
def activity_table(run_dir: str, step: int | None, n: int = 1000) -> dict[str, dict[str, np.ndarray]]:
    loaded = load_model(run_dir, step)
    stats = latent_activity(loaded.model, load_data(run_dir, "test"), n=n)
    return {name: {field: getattr(s, field).numpy() for field in s.__dataclass_fields__} for name, s in stats.items()}


@st.cache_data(max_entries=32, show_spinner=False)
def samples_per_second(run_dir: str, step: int | None) -> float:
    """How many (example, latent draw) pairs per second the model scores: one timed ELBO
    over 32 test examples. Pages size their default importance-sampling budgets with it,
    so that a deep hierarchical model on a CPU opens as quickly as a small VAE."""
    import time

    model = load_model(run_dir, step).model
    data = load_data(run_dir, "test")
    x = data.batch(torch.arange(min(32, len(data)))).to(next(model.parameters()).device)
    with torch.no_grad():
        model.elbo(x[:2])  # warm-up
        start = time.perf_counter()
        model.elbo(x)
        elapsed = time.perf_counter() - start
    return len(x) / max(elapsed, 1e-6)


def affordable(run_dir: str, step: int | None, seconds: float, choices: list[int], per_choice: int) -> int:
    """The largest of `choices` whose cost (choice x per_choice scored samples) fits in
    `seconds` for this model; the smallest if none does."""
    budget = samples_per_second(run_dir, step) * seconds
    fitting = [c for c in sorted(choices) if c * per_choice <= budget]
    return fitting[-1] if fitting else min(choices)


@st.cache_data(max_entries=32, show_spinner="Computing the test ELBO and IWAE bound…")
def bounds(run_dir: str, step: int | None, k: int = 100, n: int = 200) -> dict[str, float]:
    loaded = load_model(run_dir, step)
    return evaluate_bounds(loaded.model, load_data(run_dir, "test"), k=k, n=n)


@st.cache_data(max_entries=16, show_spinner="Drawing importance samples…")
def importance_pool(run_dir: str, step: int | None, n: int, pool: int, seed: int) -> np.ndarray:
    """log importance weights (pool, n) for the first n test examples."""
    model = load_model(run_dir, step).model
    data = load_data(run_dir, "test")
    x = data.batch(torch.arange(min(n, len(data)))).to(next(model.parameters()).device)
    with torch.no_grad(), random_stream(seed, x.device):
        return log_importance_weights(model, x, pool).cpu().numpy()


@st.cache_data(max_entries=32, show_spinner="Measuring every layer's KL…")
def elbo_kls(run_dir: str, step: int | None, n: int = 1000) -> dict[str, float]:
    """Each latent group's mean KL term of the ELBO (a hierarchy's layers: to their conditional priors)."""
    return elbo_kl_per_group(load_model(run_dir, step).model, load_data(run_dir, "test"), n=n)


@st.cache_data(max_entries=64, show_spinner="Measuring residual-state norms…")
def norm_profile(run_dir: str, step: int | None, n_batches: int = 10, batch_size: int = 100) -> NormProfile:
    """An HVAE's residual-state norms (App. B.7.2), once per (run, checkpoint, budget)."""
    return residual_norms(load_model(run_dir, step).model, load_data(run_dir, "test"), n_batches, batch_size)


@st.cache_data(max_entries=32, show_spinner="Measuring every layer's KL and activity…")
def hvae_layer_statistics(run_dir: str, step: int | None, n: int = 1000) -> LayerStatistics:
    return layer_statistics(load_model(run_dir, step).model, load_data(run_dir, "test"), n=n)


def sidebar() -> None:
    """Run and checkpoint pickers, and the device in use."""
    choices = available_runs()
    links.open_linked_run(choices)  # before the sidebar, so that a bad link's warning shows on the page
    with st.sidebar:
        if not choices:
            st.warning("No runs found. Train one with `latent-atlas train --preset digits-vae`.")
            return
        keys = [c.key for c in choices]
        if st.session_state.get(RUN_KEY) not in keys:
            st.session_state[RUN_KEY] = keys[0]
        labels = {c.key: c.label for c in choices}
        st.selectbox(
            "Model",
            keys,
            format_func=labels.get,
            key=RUN_KEY,
            help="Demo models ship with the app; every run in the runs root is listed too.",
        )
        choice = choices[keys.index(st.session_state[RUN_KEY])]
        steps = [None, *checkpoint_steps(choice)]
        if st.session_state.get(STEP_KEY) not in steps:  # a step of the model chosen before: the latest
            del st.session_state[STEP_KEY]  # (set to None, the picker would show nothing chosen)
        st.selectbox("Checkpoint", steps, key=STEP_KEY, format_func=lambda s: "latest" if s is None else f"step {s:,}")
        links.show_run(choice, st.session_state.get(STEP_KEY), choices)
        st.caption(f"Device: **{describe_device(pick_device('auto'))}** · torch {torch.__version__}")


def selection() -> Selection | None:
    choices = available_runs()
    if not choices:
        return None
    links.open_linked_run(choices)  # a page run on its own (tests) has no sidebar to do it
    by_key = {c.key: c for c in choices}
    choice = by_key.get(st.session_state.get(RUN_KEY), choices[0])
    links.show_run(choice, st.session_state.get(STEP_KEY), choices)
    return Selection(choice, st.session_state.get(STEP_KEY))


def current_model() -> tuple[Selection, LoadedModel]:
    """The selected model, or an error on the page (st.stop) if it cannot be loaded."""
    sel = selection()
    if sel is None:
        st.info("No models yet: train one with `latent-atlas train --preset digits-vae`, then reload.")
        st.stop()
    if sel.choice.info.status == "broken":
        st.error(f"Run {sel.choice.info.id} cannot be read: {sel.choice.info.reason}")
        st.stop()
    try:
        return sel, load_model(str(sel.choice.dir), sel.step)
    except AtlasError as err:
        st.error(f"Run {sel.choice.info.id} cannot be loaded: {err}")
        st.stop()


@st.cache_data(max_entries=16, show_spinner="Encoding the test set…")
def facet_encoding(run_dir: str, step: int | None) -> FacetEncoding:
    """An MFCVAE's whole test set encoded once per (run, checkpoint): per-facet posterior
    means and cluster probabilities."""
    return encode_facets(load_model(run_dir, step).model, load_data(run_dir, "test"))


@st.cache_data(max_entries=16, show_spinner="Training the probes (a few seconds)…")
def facet_probe_table(run_dir: str, step: int | None, n_train: int = 2000) -> dict[str, dict[str, float]]:
    """Probe accuracy of every facet (and all together) for every categorical label,
    trained on a subsample of at most n_train training examples."""
    model = load_model(run_dir, step).model
    return facet_probes(model, load_data(run_dir, "train"), load_data(run_dir, "test"), n_train=n_train)


@st.cache_data(max_entries=16, show_spinner="Measuring every unit's posterior location and scale…")
def unit_statistics_table(run_dir: str, step: int | None, n: int = 2000) -> dict:
    """Per-unit location and scale statistics of every group (engine.diagnostics.sparse_codes)."""
    from engine.diagnostics.sparse_codes import unit_statistics

    return unit_statistics(load_model(run_dir, step).model, load_data(run_dir, "test"), n)


@st.cache_data(max_entries=16, show_spinner="Fitting a Gabor to every active unit's projective field…")
def field_census_cached(run_dir: str, step: int | None):
    from engine.diagnostics.sparse_codes import field_census

    stats = unit_statistics_table(run_dir, step)["z1"]
    return field_census(load_model(run_dir, step).model, load_data(run_dir, "test"), stats=stats)


@st.cache_resource(max_entries=4, show_spinner="Loading the texture patches…")
def texture_data(run_dir: str, split: str) -> Dataset:
    """The textures of the run's patch size and seed (whitened as its natural patches)."""
    from engine.data import load_dataset

    config = Run.from_dir(run_dir, readonly=True).config
    size = config["data"]["options"].get("size", 20)
    return load_dataset("textures", split=split, seed=config["train"].get("seed", 0), size=size, n=10_000)


@st.cache_data(max_entries=16, show_spinner="Fitting the texture decoders (5 fits each)…")
def texture_decoding_cached(run_dir: str, step: int | None, seed: int = 0):
    from engine.diagnostics.sparse_codes import texture_decoding

    model = load_model(run_dir, step).model
    return texture_decoding(model, texture_data(run_dir, "train"), texture_data(run_dir, "test"), seed=seed)


@st.cache_data(max_entries=16, show_spinner="Drawing posterior samples for the z1 correlations…")
def correlation_study_cached(run_dir: str, step: int | None, n_patches: int, n_samples: int, proposals: int):
    from engine.diagnostics.sparse_codes import correlation_study

    model = load_model(run_dir, step).model
    return correlation_study(
        model, load_data(run_dir, "test"), n_patches=n_patches, n_samples=n_samples, proposals=proposals
    )


@st.cache_data(max_entries=32, show_spinner="Scoring the run on the test patches…")
def td_bound_terms(run_dir: str, step: int | None, data_run_dir: str, n: int = 200) -> dict[str, float]:
    """A TD-VAE's or TD-IWAE's -IWAE (k = 100) and ELBO terms on the test data of `data_run_dir`."""
    from engine.diagnostics.sparse_codes import bound_terms

    model = load_model(run_dir, step).model
    return bound_terms(model, load_data(data_run_dir, "test"), n_bound=n, k=100, n_terms=n, draws=5)


def training_k(run_dir: str) -> int:
    """The k a TD-IWAE run trained with; 0 for a TD-VAE (analytic KLs)."""
    config = Run.from_dir(run_dir, readonly=True).config
    return int(config["model"].get("k", 1)) if config["family"] == "tdiwae" else 0


@st.cache_data(max_entries=16, show_spinner="Passing the test set through the flow…")
def ica_embedding(run_dir: str, step: int | None, n: int = 2000):
    """A Bijecta's z = f^-1(x) and q(s | z) of the first n test examples (engine.diagnostics.ica.embed)."""
    from engine.diagnostics.ica import embed

    return embed(load_model(run_dir, step).model, load_data(run_dir, "test"), n)


@st.cache_data(max_entries=16, show_spinner="Running FastICA on f⁻¹(X)…")
def ica_columns(run_dir: str, step: int | None, n: int = 2000, seed: int = 0) -> dict[str, np.ndarray]:
    """A Bijecta's mixing columns (d_s, D), FastICA's columns on its embedding of the test set and,
    for each column of A, the index of its FastICA match and their |cos| (seed001 Fig. 4.4)."""
    from engine.diagnostics.ica import fastica_columns, match_columns, mixing_columns

    mixing = mixing_columns(load_model(run_dir, step).model)
    fastica = fastica_columns(ica_embedding(run_dir, step, n).z, len(mixing), seed=seed)
    match, cos = match_columns(mixing, fastica)
    return {"mixing": mixing, "fastica": fastica, "match": match, "cos": cos}


@st.cache_data(max_entries=16, show_spinner="Measuring the explained variance of f⁻¹(X)…")
def ica_explained_variance(run_dir: str, step: int | None, n: int = 2000) -> dict[str, np.ndarray]:
    """Cumulative explained variance of Cov(f^-1(X)) and, for comparison, of the data X itself (Fig. 4.8)."""
    from engine.diagnostics.ica import explained_variance

    data = load_data(run_dir, "test")
    x = data.batch(torch.arange(min(n, len(data)))).flatten(1).double().numpy()
    return {"z": explained_variance(ica_embedding(run_dir, step, n).z), "x": explained_variance(x)}


@st.cache_data(max_entries=16, show_spinner="Counting the codes every test image uses…")
def code_usage_table(run_dir: str, step: int | None, n: int = 1000) -> dict:
    """Every layer's CodeUsage over the first n test images (engine.diagnostics.codes)."""
    from engine.diagnostics.codes import code_usage

    data = load_data(run_dir, "test")
    model = load_model(run_dir, step).model
    x = data.batch(torch.arange(min(n, len(data)))).to(next(model.parameters()).device)
    return code_usage(model, x)


@st.cache_data(max_entries=8, show_spinner="Counting the codes at every checkpoint…")
def code_usage_along_training(run_dir: str, n: int = 500) -> list[dict]:
    """Perplexity and dead codes of every layer at each kept checkpoint of the run, on the first
    n test images: rows {step, layer, perplexity, dead}."""
    rows = []
    for step in sorted(c.step for c in Run.from_dir(run_dir, readonly=True).checkpoints()):
        for layer, usage in code_usage_table(run_dir, step, n).items():
            rows.append({"step": step, "layer": layer, "perplexity": usage.perplexity, "dead": usage.dead})
    return rows


@st.cache_data(max_entries=32, show_spinner="Scoring the latents against the known factors…")
def disentanglement_scores(
    run_dir: str,
    step: int | None,
    group: str | None,
    with_dci: bool,
    n: int = 2000,
    with_factor_vae: bool = False,
) -> dict:
    """MIG, SAP, and when asked DCI (a boosted classifier per factor) and the FactorVAE score
    of one latent group's posterior means (None: all groups) against the known factors of the
    first n test inputs (engine.projection.factors; the test split is there wherever a page
    opens, the training split may not be, as for a Fashion-MNIST demo without its files)."""
    from engine.projection.factors import disentanglement_report

    model = load_model(run_dir, step).model
    return disentanglement_report(
        model, load_data(run_dir, "test"), group, n, with_dci=with_dci, with_factor_vae=with_factor_vae
    )
