"""The latent map's scatter as a custom component: hovering a point shows its input's
thumbnail beside the cursor, and a box, lasso or click selection comes back to Python as
the selected points' global ids.

st.plotly_chart cannot do this (a Plotly hover label holds no image, and the chart runs
none of our code), so the figure that app.maps.map_figure builds is drawn by our own page
in an iframe: static HTML and JavaScript (frontend/), no build step, no network. Streamlit
serves the component from a folder made at import: the frontend files, plotly.js from the
installed plotly package (never a CDN), and the large payloads (the figure's JSON, the
sprite sheets and their manifest), each written once under a name made from its content.
A rerun then sends the frame a few URLs, and the browser fetches only what changed.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import shutil
import tempfile
import threading
from pathlib import Path

import plotly
import plotly.graph_objects as go
import streamlit as st
import streamlit.components.v1 as components

from app.maps import selected_ids, trace_positions
from engine.projection.sprites import SpriteAtlas

FRONTEND = Path(__file__).parent / "frontend"
PLOTLY_JS = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
MAX_SERVED_BYTES = 1 << 30  # published payloads kept; the least recently used go first

# Copied, not linked: Streamlit refuses files whose real path leaves the component's folder.
SERVED = Path(tempfile.mkdtemp(prefix="latent-atlas-scatter-"))
atexit.register(shutil.rmtree, SERVED, ignore_errors=True)
for source in [*FRONTEND.iterdir(), PLOTLY_JS]:
    shutil.copy(source, SERVED)
(SERVED / "assets").mkdir()
_PUBLISHING = threading.Lock()
_component = components.declare_component("latent_scatter", path=str(SERVED))


def latent_scatter(fig: go.Figure, atlas: SpriteAtlas | None, key: str) -> list[int]:
    """Draw a map figure (app.maps.map_figure) with hover thumbnails from `atlas` (or
    none); returns the sorted global ids of the selected points. A new figure (other
    colours, group or method) keeps showing the selection."""
    n = sum(len(t.x) for t in fig.data)
    picked = selected_ids(st.session_state.get(key), n)
    value = _component(
        figure=publish(fig.to_json().encode(), ".json"),
        sprites=None if atlas is None else publish(json.dumps(manifest(atlas)).encode(), ".json"),
        selection=trace_positions(fig, picked),
        height=int(fig.layout.height or 620),
        key=key,
        default=None,
    )
    return selected_ids(value, n)


def manifest(atlas: SpriteAtlas) -> dict:
    """What the frame needs to find a point's tile: the sheets (URL, size) and the layout;
    the ids in tile order only when they are a subsample (else tile k is point k)."""
    layout, sheets = atlas.layout, []
    for s, png in enumerate(atlas.sheets):
        width, height = layout.sheet_size(s)
        sheets.append({"url": publish(png, ".png"), "width": width, "height": height})
    return {
        "sheets": sheets,
        "count": layout.count,
        "tile_h": layout.tile_h,
        "tile_w": layout.tile_w,
        "cols": layout.cols,
        "per_sheet": layout.per_sheet,
        "ids": atlas.ids.tolist() if atlas.subsampled else None,
    }


def publish(content: bytes, suffix: str) -> str:
    """Serve `content` from the component's folder; returns its URL relative to the frame."""
    name = f"assets/{hashlib.sha256(content).hexdigest()[:32]}{suffix}"
    path = SERVED / name
    with _PUBLISHING:  # sessions run in threads of one process
        if path.exists():
            path.touch()  # recently used
        else:
            fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
            with os.fdopen(fd, "wb") as f:
                f.write(content)
            os.replace(tmp, path)  # a reader sees all of it or nothing
            _prune(keep=path)
    return name


def _prune(keep: Path) -> None:
    """Delete the least recently used payloads while they take more than MAX_SERVED_BYTES."""
    files = sorted((SERVED / "assets").iterdir(), key=lambda p: p.stat().st_mtime)
    total = sum(p.stat().st_size for p in files)
    for path in files:
        if total <= MAX_SERVED_BYTES:
            break
        if path != keep:
            total -= path.stat().st_size
            path.unlink(missing_ok=True)
