"""Embedded datasets and the registry: shapes, ranges, determinism, splits, labels."""

import math
import time

import pytest
import torch

from engine.data import (
    Dataset,
    dataset_info,
    facet_digits,
    list_datasets,
    list_file_formats,
    load_dataset,
    missing_mask,
    shapes,
)
from engine.data import digits as digits_module
from engine.errors import AtlasError

# small options keep the whole file fast
SMALL = {
    "digits": {},
    "facet-digits": {"n": 600},
    "shapes": {"n": 1000},
    "wine": {},
    "diabetes": {},
    "mixed": {"n": 300},
    "exchangeable": {"n": 200, "length": 16},
    "digits-domains": {},
    "styled-digits": {"n": 400},
    "patches": {"n": 200, "size": 12},
    "textures": {"n": 200, "size": 12},
    "swatches": {"n": 90},
}


def materialise(data: Dataset) -> torch.Tensor:
    return data.x[torch.arange(len(data))] if data.is_lazy else data.x


def test_registry_lists_every_embedded_dataset():
    assert list_datasets() == [*SMALL, "fashion-mnist"]  # its files and official split: test_fashion_mnist.py
    assert list_file_formats() == ["idx", "npz", "csv", "image-folder"]
    for name in [*SMALL, *list_file_formats()]:
        info = dataset_info(name)
        assert info.description
        assert "test_fraction" in info.options
    assert [dataset_info(f).kind for f in list_file_formats()] == ["image", None, "tabular", "image"]  # npz: either


def test_swatches_are_uniform_images_of_their_labelled_colour():
    data = load_dataset("swatches", split="all", n=200, size=8)
    rgb = torch.tensor(list(data.meta["rgb"].values()))
    assert data.x.shape == (200, 3, 8, 8) and len(data.meta["rgb"]) == 9
    assert torch.equal(data.x, rgb[data.labels["colour"].values][:, :, None, None].expand(-1, 3, 8, 8))
    assert len(data.labels["colour"].values.unique()) == 9  # 200 draws of nine colours meet all nine


def test_dataset_info_gives_defaults_and_help():
    info = dataset_info("digits")
    assert info.options["size"][0] == 8
    assert info.options["test_fraction"][0] == 0.2
    assert "16" in info.options["size"][1]
    assert dataset_info("shapes").options["n"][0] == 25_000


@pytest.mark.parametrize("name", list(SMALL))
def test_splits_have_consistent_shapes_dtypes_and_labels(name):
    sizes = {}
    for split in ("train", "test", "all"):
        data = load_dataset(name, split=split, **SMALL[name])
        x = materialise(data)
        assert data.split == split and data.name == name
        assert x.dtype == torch.float32
        assert tuple(x.shape) == (len(data), *data.shape)
        low, high = data.value_range
        assert float(x.min()) >= low - 1e-6 and float(x.max()) <= high + 1e-6
        assert data.labels, "every embedded dataset has ground-truth labels"
        for label in data.labels.values():
            assert len(label.values) == len(data)
            if label.is_categorical:
                assert label.values.dtype == torch.int64
                assert 0 <= int(label.values.min()) and int(label.values.max()) < len(label.categories)
            else:
                assert label.values.dtype == torch.float32
        sizes[split] = len(data)
    assert sizes["train"] + sizes["test"] == sizes["all"]
    assert 0.15 < sizes["test"] / sizes["all"] < 0.25


@pytest.mark.parametrize("name", list(SMALL))
def test_same_seed_same_data_and_different_seed_different_data(name):
    a = load_dataset(name, seed=3, **SMALL[name])
    b = load_dataset(name, seed=3, **SMALL[name])
    c = load_dataset(name, seed=4, **SMALL[name])
    assert torch.equal(materialise(a), materialise(b))
    for key in a.labels:
        assert torch.equal(a.labels[key].values, b.labels[key].values)
    xa, xc = materialise(a), materialise(c)
    assert xa.shape != xc.shape or not torch.equal(xa, xc)


def test_registry_rejects_unknown_names_options_and_values():
    with pytest.raises(AtlasError, match="digits, facet-digits, shapes"):
        load_dataset("mnist-but-misspelt")
    with pytest.raises(AtlasError, match="no option 'sizes'.*size \\(default 8\\)"):
        load_dataset("digits", sizes=16)
    with pytest.raises(AtlasError, match="split must be one of train, test, all"):
        load_dataset("digits", split="validation")
    with pytest.raises(AtlasError, match="seed must be an integer"):
        load_dataset("digits", seed="one")
    with pytest.raises(AtlasError, match="size must be one of 8, 16, 28, 32; got 9"):
        load_dataset("digits", size=9)
    with pytest.raises(AtlasError, match="test_fraction"):
        load_dataset("wine", test_fraction=1.5)
    with pytest.raises(AtlasError, match="option n"):
        load_dataset("shapes", n=-5)
    with pytest.raises(AtlasError, match="unknown dataset"):
        dataset_info("nope")


# ---- digits -----------------------------------------------------------------------


def test_digits_are_the_real_digits_scaled_to_unit_range():
    data = load_dataset("digits", split="all")
    assert len(data) == 1797 and data.shape == (1, 8, 8)
    assert torch.equal(data.x * 16, torch.round(data.x * 16))  # the original 0..16 levels
    assert float(data.x.max()) == 1.0 and float(data.x.min()) == 0.0
    assert data.labels["digit"].categories == [str(d) for d in range(10)]
    assert torch.bincount(data.labels["digit"].values).min() > 170


@pytest.mark.parametrize("size", [16, 28, 32])
def test_digits_resize(size):
    data = load_dataset("digits", split="test", size=size)
    assert data.x.shape[1:] == (1, size, size)
    assert 0.0 <= float(data.x.min()) and float(data.x.max()) <= 1.0
    small = load_dataset("digits", split="test")
    # resizing keeps the picture: the mean intensity barely changes
    assert torch.allclose(data.x.mean((1, 2, 3)), small.x.mean((1, 2, 3)), atol=0.05)


def test_digits_split_is_disjoint_stratified_and_covers_everything():
    train = load_dataset("digits", split="train", seed=5)
    test = load_dataset("digits", split="test", seed=5)
    a, b = set(train.meta["source_index"].tolist()), set(test.meta["source_index"].tolist())
    assert not a & b and len(a | b) == 1797
    per_class = torch.bincount(test.labels["digit"].values, minlength=10).float()
    total = torch.bincount(load_dataset("digits", split="all").labels["digit"].values).float()
    assert torch.all((per_class / total - 0.2).abs() < 0.01)
    other = load_dataset("digits", split="test", seed=6)
    assert set(other.meta["source_index"].tolist()) != b


# ---- facet-digits ----------------------------------------------------------------------


def test_facet_digits_pixels_follow_the_colour_formula():
    data = load_dataset("facet-digits", split="train", n=500, size=8)
    intensity, digit = digits_module.digit_images(data.meta["source_index"], 8)
    stroke = torch.tensor(list(facet_digits.STROKES.values()))[data.labels["stroke"].values]
    background = torch.tensor(list(facet_digits.BACKGROUNDS.values()))[data.labels["background"].values]
    expected = intensity * stroke[:, :, None, None] + (1 - intensity) * background[:, :, None, None]
    assert torch.allclose(data.x, expected, atol=1e-6)
    assert torch.equal(digit, data.labels["digit"].values)


def test_facet_digits_background_and_stroke_pixels_have_the_named_colours():
    data = load_dataset("facet-digits", split="all", n=800, size=8)
    assert data.labels["stroke"].categories == list(facet_digits.STROKES)
    assert data.labels["background"].categories == list(facet_digits.BACKGROUNDS)
    assert not set(facet_digits.STROKES.values()) & set(facet_digits.BACKGROUNDS.values())
    intensity, _ = digits_module.digit_images(data.meta["source_index"], 8)  # (n, 1, 8, 8)
    pixels = data.x.permute(0, 2, 3, 1)  # (n, 8, 8, 3)
    for facet, colours, level in (("background", facet_digits.BACKGROUNDS, 0.0), ("stroke", facet_digits.STROKES, 1.0)):
        for code, name in enumerate(data.labels[facet].categories):
            rows = (data.labels[facet].values == code)[:, None, None] & (intensity[:, 0] == level)
            mean = pixels[rows].mean(0)
            assert torch.allclose(mean, torch.tensor(colours[name]), atol=1e-5), (facet, name)


def test_facet_digits_train_and_test_use_different_digit_images():
    train = load_dataset("facet-digits", split="train", n=1000)
    test = load_dataset("facet-digits", split="test", n=1000)
    assert (len(train), len(test)) == (800, 200)
    assert not set(train.meta["source_index"].tolist()) & set(test.meta["source_index"].tolist())
    every = load_dataset("facet-digits", split="all", n=1000)
    assert torch.equal(every.x, torch.cat([train.x, test.x]))
    for facet in ("digit", "stroke", "background"):
        counts = torch.bincount(every.labels[facet].values)
        assert len(counts) == len(every.labels[facet].categories) and counts.min() > 0


def test_facet_digits_colour_column_names_the_stroke_and_background_pair():
    data = load_dataset("facet-digits", split="test", n=1000)
    colour, stroke, background = (data.labels[k] for k in ("colour", "stroke", "background"))
    assert len(colour.categories) == len(stroke.categories) * len(background.categories) == 20
    for i in range(0, 200, 7):
        assert colour.categories[colour.values[i]] == (
            f"{stroke.categories[stroke.values[i]]} on {background.categories[background.values[i]]}"
        )


# ---- shapes --------------------------------------------------------------------------


def test_shapes_half_a_million_are_lazy_and_cheap():
    start = time.perf_counter()
    data = load_dataset("shapes", split="all", n=500_000)
    assert time.perf_counter() - start < 3.0
    assert len(data) == 500_000 and data.is_lazy
    assert data.x.shape == (500_000, 3, 32, 32)
    index = torch.randint(0, 500_000, (40,), generator=torch.Generator().manual_seed(0))
    batch = data.batch(index)
    one_by_one = torch.stack([data.x[torch.tensor([i])][0] for i in index.tolist()])
    assert batch.shape == (40, 3, 32, 32) and batch.dtype == torch.float32
    assert torch.equal(batch, one_by_one)
    assert torch.equal(data.x[int(index[0])], batch[0])
    assert torch.equal(data.x[10:20], data.x[torch.arange(10, 20)])


def test_shapes_train_and_test_are_the_two_ranges_of_all():
    every = load_dataset("shapes", split="all", n=1000)
    train = load_dataset("shapes", split="train", n=1000)
    test = load_dataset("shapes", split="test", n=1000)
    assert (len(train), len(test)) == (800, 200)
    for name in shapes.FACTORS:
        both = torch.cat([train.meta["factor_codes"][name], test.meta["factor_codes"][name]])
        assert torch.equal(every.meta["factor_codes"][name], both)
    assert torch.equal(every.x[torch.arange(800, 810)], test.x[torch.arange(10)])


@pytest.mark.parametrize("size", [32, 64])
def test_shapes_stay_inside_the_image_with_the_labelled_colour(size):
    data = load_dataset("shapes", split="train", n=600, size=size)
    x = data.x[torch.arange(len(data))]
    assert x.shape == (len(data), 3, size, size)
    border = torch.cat([x[:, :, 0], x[:, :, -1], x[:, :, :, 0], x[:, :, :, -1]], dim=2)
    assert float(border.max()) == 0.0
    rgb = torch.tensor(list(shapes.COLOURS.values()))[data.labels["colour"].values]
    assert torch.allclose(x.amax((2, 3)), rgb, atol=1e-6)  # fully covered pixels show the colour
    # anti-aliased edges: some pixels are partly covered
    assert ((x > 0.05) & (x < 0.95)).any()


def test_shapes_labels_are_factor_values_and_images_follow_them():
    data = load_dataset("shapes", split="train", n=2000)
    assert data.labels["shape"].categories == ["square", "ellipse", "heart", "triangle"]
    assert data.labels["colour"].categories == list(shapes.COLOURS)
    scale, rotation = data.labels["scale"].values, data.labels["rotation"].values
    assert set(scale.unique().tolist()) <= set(shapes.SCALES.tolist())
    assert 0.5 <= float(scale.min()) and float(scale.max()) <= 1.0
    assert 0.0 <= float(rotation.min()) and float(rotation.max()) < 2 * math.pi
    for axis in ("x", "y"):
        assert 0.0 <= float(data.labels[axis].values.min()) and float(data.labels[axis].values.max()) <= 1.0
    for name, count in zip(shapes.FACTORS, shapes.FACTOR_SIZES):
        assert len(data.meta["factor_codes"][name].unique()) == count  # every value occurs
    # bigger scale -> more lit pixels; the centre of mass follows x and y
    x = data.x[torch.arange(len(data))]
    mass = x.amax(1)  # (n, H, W)
    area = mass.sum((1, 2))
    same_shape = data.labels["shape"].values == 0
    small = area[same_shape & (scale == 0.5)].mean()
    big = area[same_shape & (scale == 1.0)].mean()
    assert big > 3 * small
    grid = torch.arange(32) + 0.5
    cx = (mass.sum(1) * grid).sum(1) / area
    cy = (mass.sum(2) * grid).sum(1) / area
    assert torch.corrcoef(torch.stack([cx, data.labels["x"].values]))[0, 1] > 0.95
    assert torch.corrcoef(torch.stack([cy, data.labels["y"].values]))[0, 1] > 0.95


def test_shapes_rotation_changes_the_image_and_shapes_differ():
    codes = torch.tensor([[s, 5, r, 16, 16, 0] for s in range(4) for r in (0, 3)], dtype=torch.int16)
    images = shapes.render(codes, 32).flatten(1)
    distances = torch.cdist(images, images)
    off_diagonal = distances[~torch.eye(len(codes), dtype=torch.bool)]
    assert float(off_diagonal.min()) > 0.5


def test_shapes_lazy_index_errors():
    data = load_dataset("shapes", n=100)
    with pytest.raises(IndexError):
        data.x[torch.tensor([0, 80])]
    with pytest.raises(IndexError):
        data.x[torch.tensor([0.5])]


# ---- tables --------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["wine", "diabetes", "mixed"])
def test_table_schema_matches_the_values(name):
    data = load_dataset(name, split="all", **SMALL[name])
    assert data.kind == "tabular" and data.shape == (len(data.schema),)
    assert data.meta["missing_mask"].shape == data.x.shape and not data.meta["missing_mask"].any()
    assert data.value_range == (float(data.x.min()), float(data.x.max()))
    for j, spec in enumerate(data.schema):
        col = data.x[:, j]
        if spec.kind == "binary":
            assert set(col.unique().tolist()) == {0.0, 1.0}, spec.name
        elif spec.kind == "positive":
            assert float(col.min()) > 0, spec.name
        elif spec.kind == "categorical":
            assert torch.equal(col, col.round()) and float(col.min()) >= 0
            assert int(col.max()) < len(spec.categories) and len(col.unique()) == len(spec.categories)
        else:
            assert spec.kind == "real" and torch.isfinite(col).all()


def test_table_labels_and_columns():
    wine = load_dataset("wine", split="all")
    assert wine.x.shape == (178, 13) and all(s.kind == "positive" for s in wine.schema)
    assert wine.labels["class"].categories == ["class_0", "class_1", "class_2"]
    diabetes = load_dataset("diabetes", split="all")
    assert diabetes.x.shape == (442, 10)
    assert {s.name: s.kind for s in diabetes.schema}["sex"] == "binary"
    assert diabetes.labels["target"].values.dtype == torch.float32
    mixed = load_dataset("mixed", split="all", n=500)
    assert list(mixed.labels) == ["z0", "z1", "z2"]
    kinds = [s.kind for s in mixed.schema]
    assert {"real", "positive", "binary", "categorical"} == set(kinds) and len(kinds) == 10
    assert all(3 <= len(s.categories) <= 5 for s in mixed.schema if s.kind == "categorical")
    # the columns carry information about the latent factors
    z = torch.stack([mixed.labels[f"z{i}"].values for i in range(3)], 1)
    real = mixed.x[:, [i for i, k in enumerate(kinds) if k == "real"]]
    fit = torch.linalg.lstsq(torch.cat([z, torch.ones(500, 1)], 1), real).solution
    residual = real - torch.cat([z, torch.ones(500, 1)], 1) @ fit
    assert float(residual.var() / real.var()) < 0.3


def test_table_splits_are_disjoint_rows():
    for name in ("wine", "mixed"):
        train = load_dataset(name, split="train", **SMALL[name])
        test = load_dataset(name, split="test", **SMALL[name])
        rows = {tuple(r) for r in train.x.tolist()}
        assert not any(tuple(r) in rows for r in test.x.tolist())


def test_missing_mask_rate_determinism_and_validation():
    mask = missing_mask((400, 50), 0.3, seed=1)
    assert mask.dtype == torch.bool and mask.shape == (400, 50)
    assert abs(float(mask.float().mean()) - 0.3) < 0.02
    assert torch.equal(mask, missing_mask((400, 50), 0.3, seed=1))
    assert not torch.equal(mask, missing_mask((400, 50), 0.3, seed=2))
    assert not missing_mask((10, 10), 0.0).any()
    for bad_rate in (1.0, -0.1, "0.2"):
        with pytest.raises(AtlasError, match="rate"):
            missing_mask((10, 10), bad_rate)
    with pytest.raises(AtlasError, match="mechanism"):
        missing_mask((10, 10), 0.1, mechanism="mnar")
    with pytest.raises(AtlasError, match="shape"):
        missing_mask((10,), 0.1)


def test_missing_rate_option_masks_values_and_keeps_the_truth():
    every = load_dataset("mixed", split="all", n=1000, missing_rate=0.25)
    mask = every.meta["missing_mask"]
    assert abs(float(mask.float().mean()) - 0.25) < 0.02
    assert float(every.x[mask].abs().max()) == 0.0
    truth = load_dataset("mixed", split="all", n=1000).x
    assert torch.equal(every.meta["x_complete"], truth)
    assert torch.equal(every.x[~mask], truth[~mask])
    train = load_dataset("mixed", split="train", n=1000, missing_rate=0.25)
    test = load_dataset("mixed", split="test", n=1000, missing_rate=0.25)
    assert train.meta["missing_mask"].sum() + test.meta["missing_mask"].sum() == mask.sum()


@pytest.mark.parametrize("name", list(SMALL))
def test_the_registry_says_what_kind_of_examples_a_dataset_holds(name):
    assert dataset_info(name).kind == load_dataset(name, split="test", **SMALL[name]).kind
