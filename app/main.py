"""Latent Atlas dashboard entry point: `latent-atlas app` (or `./dev app`)."""

import streamlit as st

from app.navigation import navigation
from app.state import sidebar

st.set_page_config(page_title="Latent Atlas", page_icon=":material/explore:", layout="wide")
current = navigation()
sidebar()
current.run()
