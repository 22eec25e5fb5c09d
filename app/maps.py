"""The latent map's scatter: one WebGL trace per colour category (or one with a colour
scale), every point carrying its global id in `customdata`, since Plotly numbers the
points of a selection per trace (streamlit#8914). app.components.latent_scatter draws it
and reports selections as global ids."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

PALETTE = [
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
    "#393b79",
    "#637939",
    "#8c6d31",
    "#843c39",
    "#7b4173",
    "#3182bd",
    "#e6550d",
    "#31a354",
    "#756bb1",
    "#636363",
]


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
    size = 3 if len(coords) > 50_000 else 5
    fig = go.Figure()
    if values is not None:
        values = np.asarray(values, np.float32)
        ids = np.arange(len(coords), dtype=np.float32)  # exact below 2**24 points
        fig.add_trace(
            go.Scattergl(
                x=coords[:, 0],
                y=coords[:, 1],
                mode="markers",
                customdata=np.stack([ids, values], 1),
                name=label,
                marker=dict(
                    size=size, color=values, colorscale="Viridis", opacity=0.8, colorbar=dict(title=label[:18])
                ),
                hovertemplate=f"input #%{{customdata[0]:.0f}}<br>{label}: %{{customdata[1]:.4g}}<extra></extra>",
            )
        )
    else:
        if categories is None:
            categories, names = np.zeros(len(coords), int), {0: "all"}
        for i, c in enumerate(sorted(names)):
            idx = np.flatnonzero(categories == c)
            fig.add_trace(
                go.Scattergl(
                    x=coords[idx, 0],
                    y=coords[idx, 1],
                    mode="markers",
                    name=str(names[c]),
                    customdata=idx.astype(np.int32),
                    marker=dict(size=size, color=PALETTE[i % len(PALETTE)], opacity=0.7),
                    hovertemplate=f"input #%{{customdata}}<br>{label}: {names[c]}<extra></extra>",
                )
            )
    fig.update_layout(
        template="plotly_white",
        height=620,
        margin=dict(l=10, r=10, t=40, b=10),  # t: the toolbar
        xaxis_title=axis_titles[0],
        yaxis_title=axis_titles[1],
        dragmode="lasso",
        legend=dict(itemsizing="constant"),
    )
    return fig


def selected_ids(value, n: int) -> list[int]:
    """The global ids in a selection value from app.components.latent_scatter ({"ids":
    [...]}, or None before any selection), sorted, each once, only those below n."""
    ids = value.get("ids") if isinstance(value, dict) else None
    ids = np.asarray(ids if isinstance(ids, list) else [], dtype=np.float64).round().astype(np.int64)
    return np.unique(ids[(ids >= 0) & (ids < n)]).tolist()


def trace_positions(fig: go.Figure, ids: list[int]) -> list[list[int]]:
    """Per trace of a map figure, the positions (within the trace) of its points whose
    global id is in `ids`: the trace's `selectedpoints` for that selection."""
    return [
        np.flatnonzero(np.isin(np.asarray(t.customdata).reshape(len(t.x), -1)[:, 0], ids)).tolist() for t in fig.data
    ]
