"""app.widgets.show_image encodes a picture once per content, shared by every rerun and session."""

from __future__ import annotations

import io

import numpy as np
import streamlit as st
from PIL import Image

from app import widgets
from engine.images import display_scale, upscale


def test_a_picture_is_encoded_once_per_content_and_decodes_to_its_zoomed_pixels(monkeypatch):
    st.cache_data.clear()
    calls = []
    real = widgets.png_bytes
    monkeypatch.setattr(widgets, "png_bytes", lambda a: calls.append(a.shape) or real(a))
    shown = []
    monkeypatch.setattr(widgets.st, "image", lambda data, **kw: shown.append(data))
    monkeypatch.setattr(widgets.st, "download_button", lambda *a, **kw: None)
    rng = np.random.default_rng(0)
    picture = rng.integers(0, 256, (16, 40, 3), dtype=np.uint8)
    for _ in range(3):  # three reruns showing the same picture, a new array each time
        widgets.show_image(picture.copy(), "p.png")
    other = picture.copy()
    other[0, 0, 0] ^= 1  # one value differs
    widgets.show_image(other, "p.png")
    assert len(calls) == 2 and shown[0] == shown[1] == shown[2] != shown[3]
    scale = display_scale(40, 640)
    assert scale > 1
    decoded = np.asarray(Image.open(io.BytesIO(shown[0])))
    assert np.array_equal(decoded, upscale(picture, scale))
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(shown[3]))), upscale(other, scale))
