"""styled-digits: each style is the transformation it names, checked against an
independent construction (torch.rot90, a hand-made stroke, the stripe formula)."""

import pytest
import torch

from engine.data import digits as digits_module
from engine.data import load_dataset, styled_digits
from engine.errors import AtlasError


def source_images(data, size=16):
    return digits_module.digit_images(data.meta["source_index"], size)


@pytest.mark.parametrize("style", list(styled_digits.STYLES))
def test_every_style_value_and_digit_occurs_and_train_and_test_share_no_digit_image(style):
    train = load_dataset("styled-digits", "train", seed=3, style=style, n=1000)
    test = load_dataset("styled-digits", "test", seed=3, style=style, n=1000)
    assert (len(train), len(test)) == (800, 200)
    assert train.x.shape[1:] == (1, 16, 16) and 0 <= float(train.x.min()) and float(train.x.max()) <= 1
    assert not set(train.meta["source_index"].tolist()) & set(test.meta["source_index"].tolist())
    assert list(train.labels) == ["digit", style]
    assert train.labels[style].categories == styled_digits.STYLES[style]
    counts = torch.bincount(train.labels[style].values, minlength=len(styled_digits.STYLES[style]))
    assert counts.min() > 800 / len(counts) / 2  # drawn uniformly
    assert torch.equal(train.labels["digit"].values, source_images(train)[1])
    again = load_dataset("styled-digits", "train", seed=3, style=style, n=1000)
    assert torch.equal(again.x, train.x)
    assert not torch.equal(load_dataset("styled-digits", "train", seed=4, style=style, n=1000).x, train.x)


def test_a_quarter_turn_is_rot90_of_the_upright_digit_and_angles_differ_by_less_than_a_half_turn():
    data = load_dataset("styled-digits", "train", style="rotation", n=600)
    intensity, _ = source_images(data)
    upright = styled_digits.rotated(intensity, torch.zeros(len(data)))
    quarter = data.labels["rotation"].values == styled_digits.ANGLES.index(90.0)
    assert quarter.any()
    # a quarter turn maps pixel centres onto pixel centres, so bilinear sampling is exact
    assert torch.allclose(data.x[quarter], torch.rot90(upright[quarter], 1, dims=(2, 3)), atol=1e-5)
    level = data.labels["rotation"].values == styled_digits.ANGLES.index(0.0)
    assert torch.allclose(data.x[level], upright[level], atol=1e-6)
    # shrunk so that even a 45-degree turn keeps the ink: total intensity hardly changes
    ink = data.x.sum((1, 2, 3)) / upright.sum((1, 2, 3))
    assert float((ink - 1).abs().max()) < 0.05
    assert max(styled_digits.ANGLES) - min(styled_digits.ANGLES) < 180


def test_thickness_erodes_keeps_or_dilates_a_hand_made_stroke():
    stroke = torch.zeros(3, 1, 16, 16)
    stroke[:, :, 4:12, 6:9] = 1.0  # a bar three pixels wide
    thin, medium, thick = styled_digits.thickened(stroke, torch.tensor([0, 1, 2]))
    assert torch.equal(medium, stroke[1])
    expected_thin = torch.zeros(1, 16, 16)
    expected_thin[:, 5:11, 7:8] = 1.0  # one pixel off every side
    assert torch.equal(thin, expected_thin)
    expected_thick = torch.zeros(1, 16, 16)
    expected_thick[:, 3:13, 5:10] = 1.0
    assert torch.equal(thick, expected_thick)


def test_thickness_levels_are_ordered_pixel_by_pixel_on_the_data():
    data = load_dataset("styled-digits", "train", style="thickness", n=300)
    intensity, _ = source_images(data)
    level = data.labels["thickness"].values
    for code in range(3):
        alike = styled_digits.thickened(intensity, torch.full((len(data),), code))
        assert torch.equal(data.x[level == code], alike[level == code])
    ordered = [styled_digits.thickened(intensity, torch.full((len(data),), c)) for c in range(3)]
    assert torch.all(ordered[0] <= ordered[1]) and torch.all(ordered[1] <= ordered[2])


def test_texture_is_the_stroke_over_stripes_of_the_named_direction():
    data = load_dataset("styled-digits", "train", style="texture", n=400)
    intensity, _ = source_images(data)
    pattern = data.labels["texture"].values
    names = data.labels["texture"].categories
    background = data.x - intensity  # the stripes where they show: max(stroke, level * stripe) - stroke
    plain = pattern == names.index("plain")
    assert torch.equal(data.x[plain], intensity[plain])
    stripes = (data.x >= styled_digits.TEXTURE_LEVEL - 1e-6) & (intensity < 1e-6)  # stripe pixels off the stroke
    for name, shift in (("horizontal", (1, 0)), ("vertical", (0, 1)), ("diagonal", (1, -1))):
        rows = pattern == names.index(name)
        s = stripes[rows, 0].float()
        free = (intensity[rows, 0] < 1e-6).float()  # compare only pixels the stroke leaves alone
        along = torch.roll(s, shifts=(shift[1], shift[0]), dims=(1, 2))  # move along the stripe
        both = free * torch.roll(free, shifts=(shift[1], shift[0]), dims=(1, 2))
        both[:, 0, :] = both[:, -1, :] = 0  # wrap-around edges
        both[:, :, 0] = both[:, :, -1] = 0
        assert torch.equal(s * both, along * both), name
        # stripes of period 4: half of the free pixels are lit
        share = (s * free).sum() / free.sum()
        assert 0.4 < float(share) < 0.6, name
    assert float(background.min()) >= -1e-6


def test_bad_style_names_the_choices():
    with pytest.raises(AtlasError, match="rotation, thickness, texture"):
        load_dataset("styled-digits", "train", style="colour")
