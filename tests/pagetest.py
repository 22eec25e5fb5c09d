"""What the page tests share about a page run under streamlit.testing's AppTest."""

from __future__ import annotations

from streamlit.testing.v1 import AppTest


def assert_clean(at: AppTest) -> None:
    """The run raised nothing and showed no error box."""
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def image_urls(at: AppTest) -> list[str]:
    """Media URLs of every image on the page; Streamlit names media by a content hash."""
    return [img.url for element in at.get("image") for img in element.proto.imgs]
