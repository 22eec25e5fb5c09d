"""The dashboard's pages, in one list: the navigation and the home page's links both
read it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import streamlit as st

PAGES_DIR = Path(__file__).resolve().parent.parent / "pages"


@dataclass(frozen=True)
class PageSpec:
    section: str
    file: str
    title: str
    icon: str
    question: str  # the one question the page answers, for the home page
    uses_sidebar_model: bool = True  # False: its first view does not depend on the sidebar's model

    def page(self, default: bool = False) -> st.Page:
        return st.Page(PAGES_DIR / self.file, title=self.title, icon=self.icon, default=default)


PAGES = [
    PageSpec("Explore", "home.py", "Home", ":material/home:", "What is this model, and how good is it?"),
    PageSpec(
        "Explore",
        "sample_grids.py",
        "Sample grids",
        ":material/grid_view:",
        "What does the model generate, and how well does it reconstruct test inputs?",
    ),
    PageSpec(
        "Explore",
        "traversals.py",
        "Latent traversals",
        ":material/linear_scale:",
        "What does each latent dimension control, and which ones are used at all?",
    ),
    PageSpec(
        "Explore",
        "latent_map.py",
        "Latent map",
        ":material/bubble_chart:",
        "Where does every input land in latent space, and what lies near what?",
    ),
    PageSpec(
        "Explore",
        "compare.py",
        "Compare models",
        ":material/compare:",
        "How do two to four models of the same data differ, side by side?",
        uses_sidebar_model=False,
    ),
    PageSpec(
        "Models",
        "facet_clusters.py",
        "Facet clusters",
        ":material/hub:",
        "What has each facet of a multi-facet clustering model grouped together?",
    ),
    PageSpec(
        "Models",
        "classes_and_clusters.py",
        "Classes and clusters",
        ":material/category:",
        "Which classes did a model learn from few labels, and which did it find with none?",
    ),
    PageSpec(
        "Models",
        "global_latents.py",
        "Global and local latents",
        ":material/public:",
        "What does a latent shared by a whole group hold, and can it tell structured groups apart?",
    ),
    PageSpec(
        "Models",
        "hvae_norms.py",
        "HVAE residual norms",
        ":material/stacked_line_chart:",
        "Does the residual state of a hierarchical VAE grow like a clock, block by block?",
    ),
    PageSpec(
        "Models",
        "multiresolution.py",
        "Multi-resolution views",
        ":material/filter_center_focus:",
        "What does each Haar level of an image hold, and why do U-Nets build from coarse to fine?",
        uses_sidebar_model=False,
    ),
    PageSpec(
        "Models",
        "diffusion.py",
        "Diffusion models",
        ":material/blur_on:",
        "What does a diffusion model draw at each temperature, resolution and training stage, and where do its bits go?",
        uses_sidebar_model=False,
    ),
    PageSpec(
        "Models",
        "dctvae.py",
        "DCT-VAE context",
        ":material/grid_on:",
        "What does a DCT-VAE's fixed context hold, what does its diffusion prior draw, and how much of an image does it keep?",
    ),
    PageSpec(
        "Models",
        "receptive_fields.py",
        "Receptive fields",
        ":material/texture:",
        "What did a sparse two-layer VAE learn from natural patches: Gabor-like fields, texture families, correlations?",
    ),
    PageSpec(
        "Models",
        "ica_sources.py",
        "ICA sources",
        ":material/call_split:",
        "Which independent sources did linear ICA on a normalising flow find, and do they move the image along straight axes?",
    ),
    PageSpec(
        "Models",
        "discrete_codes.py",
        "Discrete codes",
        ":material/apps:",
        "Which codes does each layer of a hierarchy of codes use, and what does each layer decide?",
    ),
    PageSpec(
        "Models",
        "layer_diagnostics.py",
        "Layer diagnostics",
        ":material/layers:",
        "Which latent layers of a hierarchical VAE carry information, and which collapsed?",
    ),
    PageSpec("Models", "runs.py", "Runs", ":material/table:", "How do all the trained runs compare?"),
    PageSpec(
        "Diagnostics",
        "latent_activity.py",
        "Latent activity",
        ":material/monitoring:",
        "Which latent dimensions carry information, and how many nats does each group spend?",
    ),
    PageSpec(
        "Diagnostics",
        "importance_weights.py",
        "Importance weights",
        ":material/balance:",
        "How far is the encoder from the true posterior, and what does the posterior look like?",
    ),
    PageSpec(
        "Diagnostics",
        "robustness.py",
        "Robustness",
        ":material/shield:",
        "How hard is the model to fool with a small change to its input, and how far can an input move?",
    ),
    PageSpec(
        "Diagnostics",
        "hmc_chains.py",
        "HMC chains",
        ":material/scatter_plot:",
        "Where does Hamiltonian Monte Carlo wander in a posterior, and did its chains mix?",
        uses_sidebar_model=False,
    ),
    PageSpec(
        "Diagnostics",
        "martingale_checks.py",
        "Martingale checks",
        ":material/timeline:",
        "Does a sequence model's in-context learning behave like a Bayesian's?",
        uses_sidebar_model=False,
    ),
    PageSpec(
        "Train",
        "training.py",
        "Train",
        ":material/model_training:",
        "How is a run training right now, and how does it compare with the others?",
        uses_sidebar_model=False,
    ),
    PageSpec(
        "Train",
        "import_data.py",
        "Import",
        ":material/upload_file:",
        "How do I train on my own data, or explore a model trained elsewhere?",
        uses_sidebar_model=False,
    ),
]


def navigation() -> st.navigation:
    sections: dict[str, list[st.Page]] = {}
    for i, spec in enumerate(PAGES):
        sections.setdefault(spec.section, []).append(spec.page(default=i == 0))
    return st.navigation(sections, expanded=True)  # all pages listed (Streamlit folds a menu of more than 12)
