"""Small pieces of UI that every page uses: explanations, images and charts with
download buttons."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from engine.images import display_scale, png_bytes, upscale

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
    if array.shape[1] < target_width // 2:
        array = upscale(array, display_scale(array.shape[1], target_width))
    data = png_bytes(array)
    st.image(data, caption=caption, output_format="PNG")
    st.download_button(
        "Download PNG", data, file_name=file_name, mime="image/png", key=key or f"dl-{file_name}", on_click="ignore"
    )


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
    """Explain and stop the page unless the selected model is a `model_class`. `needs`
    says, in Markdown, what kind of model the page needs and why."""
    if not isinstance(loaded.model, model_class):
        st.info(
            f"This page needs {needs} The selected model is a `{loaded.spec.family}`. Train one with "
            f"`latent-atlas train --preset {preset}` (or pick the `{preset}` demo if it ships), then pick it "
            "in the sidebar."
        )
        st.stop()
