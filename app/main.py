"""Latent Atlas dashboard entry point: `latent-atlas app` (or `./dev app`)."""

from pathlib import Path

import streamlit as st

PAGES = Path(__file__).resolve().parent.parent / "pages"

st.set_page_config(page_title="Latent Atlas", layout="wide")
navigation = st.navigation(
    {
        "Explore": [st.Page(PAGES / "home.py", title="Home", default=True)],
    }
)
navigation.run()
