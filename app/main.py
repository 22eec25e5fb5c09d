"""Latent Atlas dashboard entry point: `latent-atlas app` (or `./dev app`)."""

import streamlit as st

from app.navigation import navigation
from app.state import sidebar
from app.timings import timed_rerun

with timed_rerun() as rerun:  # LATENT_ATLAS_TIMINGS=<file>: one JSON line per rerun (app/timings.py)
    st.set_page_config(page_title="Latent Atlas", page_icon=":material/explore:", layout="wide")
    current = navigation()
    rerun.page = current.title
    sidebar()
    current.run()
