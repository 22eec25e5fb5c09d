"""What the page tests share about a page run under streamlit.testing's AppTest."""

from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

from app.links import RUN_KEY


def assert_clean(at: AppTest) -> None:
    """The run raised nothing and showed no error box."""
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def image_urls(at: AppTest) -> list[str]:
    """Media URLs of every image on the page; Streamlit names media by a content hash."""
    return [img.url for element in at.get("image") for img in element.proto.imgs]


PAGES = Path(__file__).resolve().parent.parent / "pages"


def open_run_page(file: str, root: Path, monkeypatch, run_key: str, **state) -> AppTest:
    """The page `file` on the runs under `root` only (no demos), with the run `run_key`
    ("runs/<id>") selected and the widget values in `state` set first."""
    monkeypatch.setenv("LATENT_ATLAS_RUNS_DIR", str(root))
    monkeypatch.setattr("app.runs.DEMO_ROOT", Path(str(root)) / "no-demos")
    at = AppTest.from_file(str(PAGES / file), default_timeout=300)
    at.session_state[RUN_KEY] = run_key
    for key, value in state.items():
        at.session_state[key] = value
    return at.run()


# Demos that differ from another demo of their family and data only in an option a few pages
# read (the HVAE's normalised state and shared weights; the VAE's β-TCVAE objective): they get
# those pages, not every page.
HVAE_VARIANT_PAGES = ("home.py", "sample_grids.py", "hvae_norms.py", "layer_diagnostics.py", "robustness.py")
VARIANT_DEMOS = {
    "digits-hvae-normalised": HVAE_VARIANT_PAGES,
    "digits-hvae-shared": HVAE_VARIANT_PAGES,
    "digits-tcvae": ("home.py", "traversals.py", "latent_activity.py", "robustness.py"),
    # a VAE on other data: the pages that read the data's labels and size (every page opens on it
    # without its files in test_fashion_mnist_demo.py)
    "fashion-vae": ("home.py", "sample_grids.py", "latent_map.py"),
    "facet-digits-vae": ("home.py", "latent_map.py", "latent_activity.py", "facet_clusters.py"),
    # the same classes as digits-ugvae and digits-gmdgm, trained on other groups or labels
    "digits-domains-ugvae": ("home.py", "sample_grids.py", "latent_map.py", "global_latents.py"),
    "digits-ssvae": ("home.py", "sample_grids.py", "latent_map.py", "classes_and_clusters.py"),
}
