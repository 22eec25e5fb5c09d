"""The Multi-resolution views page under Streamlit's AppTest: the measured noise ratios it shows
are Theorem 4.2's, and the preconditioning toy's winner follows the target."""

import numpy as np
import pytest
from test_pages import open_page


@pytest.fixture(scope="module")
def page():
    at = open_page("multiresolution.py")
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    return at


def ratio_table(at):
    return next(df.value for df in at.dataframe if "theory" in df.value.columns)


def winner(at) -> str:
    return next(m.value for m in at.metric if m.label == "Better preconditioner")


def test_the_page_shows_an_image_row_and_theorem_4_2_in_2d(page):
    assert page.title[0].value == "Multi-resolution views"
    assert len(page.get("image")) >= 1
    table = ratio_table(page)
    assert list(table["theory"]) == [1, 1, 4, 16, 64, 256]  # 32×32 digits: levels 0 … 5
    assert np.allclose(table["measured (mean over t)"], table["theory"], rtol=0.05)
    assert all(abs(float(d.rstrip("%"))) < 5 for d in table["largest deviation"])


def test_the_rows_transform_shows_2_to_the_j_minus_1(page):
    page.radio(key="haar_transform").set_value("rows").run()
    assert not page.exception, [e.value for e in page.exception]
    table = ratio_table(page)
    assert list(table["theory"]) == [1, 1, 2, 4, 8, 16]
    assert np.allclose(table["measured (mean over t)"], table["theory"], rtol=0.05)


def test_changing_the_target_swaps_the_better_preconditioner(page):
    page.select_slider(key="toy_steps").set_value(100).run()
    assert winner(page) == "|v|"  # for v²
    page.radio(key="toy_target").set_value("v^3").run()
    assert not page.exception, [e.value for e in page.exception]
    assert winner(page) == "v"
    mse = {m.label: float(m.value) for m in page.metric if m.label.startswith("MSE")}
    assert mse["MSE with Rᵖʳᵉ(v) = v"] < 0.1 * mse["MSE with Rᵖʳᵉ(v) = |v|"]


def test_a_colour_dataset_opens(page):
    page.selectbox(key="haar_dataset").set_value("shapes").run()
    assert not page.exception, [e.value for e in page.exception]
    assert "shapes test image 0" in page.get("image")[0].proto.imgs[0].caption
