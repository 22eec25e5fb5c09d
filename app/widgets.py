"""Small pieces of UI that every page uses: explanations, images and charts with
download buttons."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from app.links import open_run
from app.runs import builds, demos, run_slug
from engine.images import display_scale, png_bytes, upscale
from engine.store import RunInfo

MARKDOWN_PUNCTUATION = re.compile(r"([\\`*_{}\[\]()<>#+\-.!|~$:])")


def plain(text: str) -> str:
    """`text` (a file name, a message quoting one) escaped for st.markdown, st.error and
    the like, so that it shows as typed: no links, images, formatting or maths."""
    return MARKDOWN_PUNCTUATION.sub(r"\\\1", text)


def explain(text: str, title: str = "What am I looking at?") -> None:
    with st.expander(title):
        st.markdown(text)


def show_image(
    array: np.ndarray, file_name: str, caption: str | None = None, target_width: int = 640, key: str | None = None
) -> None:
    """A uint8 picture, zoomed to a readable size, with a PNG download."""
    data = display_png(hashlib.blake2b(array.tobytes(), digest_size=16).hexdigest(), array.shape, array, target_width)
    st.image(data, caption=caption, output_format="PNG")
    st.download_button(
        "Download PNG", data, file_name=file_name, mime="image/png", key=key or f"dl-{file_name}", on_click="ignore"
    )


@st.cache_data(max_entries=128, show_spinner=False)
def display_png(digest: str, shape: tuple[int, ...], _array: np.ndarray, target_width: int) -> bytes:
    """The PNG of a picture zoomed to a readable size, encoded once per content (its hash and
    shape) and shared by every session: most reruns show the same pictures again, and a zoomed
    grid takes tens of milliseconds to encode, holding the server's GIL."""
    array = _array
    if array.shape[1] < target_width // 2:
        array = upscale(array, display_scale(array.shape[1], target_width))
    return png_bytes(array)


def show_figure(fig: go.Figure, file_name: str, key: str | None = None, on_select: str = "ignore"):
    """A Plotly chart (its toolbar saves PNG) and a standalone HTML download that works
    offline. With on_select="rerun" (and a key) it returns the chart's selection event."""
    event = st.plotly_chart(fig, width="stretch", key=key, on_select=on_select)
    download_figure(fig, file_name, key)
    return event


def download_figure(fig: go.Figure, file_name: str, key: str | None = None) -> None:
    """A button that downloads the figure as a standalone HTML page that works offline;
    the HTML is built only when the button is pressed."""
    st.download_button(
        "Download HTML",
        lambda: fig.to_html(include_plotlyjs=True, full_html=True),
        file_name=file_name,
        mime="text/html",
        key=f"dl-{key or file_name}",
        on_click="ignore",
    )


def show_table(df: pd.DataFrame, file_name: str, key: str | None = None) -> None:
    st.dataframe(df, hide_index=True, width="stretch")
    st.download_button(
        "Download CSV",
        df.to_csv(index=False),
        file_name=file_name,
        mime="text/csv",
        key=f"dl-{key or file_name}",
        on_click="ignore",
    )


def require_model(loaded, model_class: type, needs: str, preset: str) -> None:
    """Stop the page, offering the demos it works on, unless the selected model is a
    `model_class`. `needs` says, in Markdown, what kind of model the page needs and why."""
    if not isinstance(loaded.model, model_class):
        offer_demos(
            f"This page needs {needs} The selected model is a `{loaded.spec.family}`.", builds(model_class), preset
        )


def offer_demos(message: str, fits: Callable[[RunInfo], bool], preset: str | None = None) -> None:
    """Stop the page with `message` (Markdown: what it needs), the demo models it works on
    (those whose RunInfo `fits`) and a button that opens the first of them."""
    found = demos(fits)
    names = ", ".join(f"`{run_slug(c.info.id)}`" for c in found)
    listed = f" It works on the demo models {names}, or on any run of that kind in the sidebar." if found else ""
    train = f" To train one: `latent-atlas train --preset {preset}`." if preset else ""
    st.info(message + listed + train)
    if found:
        first = found[0]
        st.button(
            f"Open the {run_slug(first.info.id)} demo",
            type="primary",
            icon=":material/swap_horiz:",
            on_click=open_run,
            args=(first.key,),
            key="open-demo",
        )
    st.stop()
