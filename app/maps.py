"""The latent map's scatter: one WebGL trace per colour category (or one with a colour
scale), every point carrying its global id in `customdata`, since Plotly numbers the
points of a selection per trace (streamlit#8914)."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd", "#e6550d", "#31a354",
           "#756bb1", "#636363"]  # fmt: skip


def map_figure(
    coords: np.ndarray,
    label: str,
    categories: np.ndarray | None = None,
    names: dict[int, str] | None = None,
    values: np.ndarray | None = None,
    axis_titles: tuple[str, str] = ("", ""),
) -> go.Figure:
    """A scatter of coords (N, 2): coloured by `categories` (N,) ints named by `names`, or
    by continuous `values` (N,), or in one colour. Point i has customdata i (first column)."""
    ids = np.arange(len(coords))
    size = 3 if len(coords) > 50_000 else 5
    fig = go.Figure()
    if values is not None:
        fig.add_trace(go.Scattergl(
            x=coords[:, 0], y=coords[:, 1], mode="markers", customdata=np.stack([ids, values], 1), name=label,
            marker=dict(size=size, color=values, colorscale="Viridis", opacity=0.8, colorbar=dict(title=label[:18])),
            hovertemplate=f"input #%{{customdata[0]:.0f}}<br>{label}: %{{customdata[1]:.4g}}<extra></extra>",
        ))  # fmt: skip
    else:
        if categories is None:
            categories, names = np.zeros(len(coords), int), {0: "all"}
        for i, c in enumerate(sorted(names)):
            idx = np.flatnonzero(categories == c)
            fig.add_trace(go.Scattergl(
                x=coords[idx, 0], y=coords[idx, 1], mode="markers", name=str(names[c]), customdata=idx,
                marker=dict(size=size, color=PALETTE[i % len(PALETTE)], opacity=0.7),
                hovertemplate=f"input #%{{customdata}}<br>{label}: {names[c]}<extra></extra>",
            ))  # fmt: skip
    fig.update_layout(height=620, margin=dict(l=10, r=10, t=10, b=10), xaxis_title=axis_titles[0],
                      yaxis_title=axis_titles[1], dragmode="lasso", legend=dict(itemsizing="constant"))  # fmt: skip
    return fig


def selected_ids(event) -> list[int]:
    """The global ids of the points in a chart's selection event, sorted, each once."""
    points = event.selection.points if event is not None and "selection" in event else []
    return sorted({int(np.ravel(p["customdata"])[0]) for p in points if "customdata" in p})
