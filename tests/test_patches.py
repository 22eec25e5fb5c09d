"""`patches` and `textures`: shapes, determinism, disjoint regions, whitening, separable families."""

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from engine.data import dataset_info, load_dataset
from engine.data import patches as patches_module
from engine.errors import AtlasError
from engine.training import RunSpec


def test_the_sample_photographs_load_offline():
    grey = patches_module.photographs()
    assert grey.shape == (2, 427, 640) and grey.dtype == torch.float32
    assert 0.0 <= float(grey.min()) and float(grey.max()) <= 1.0 and float(grey.std()) > 0.1


@pytest.mark.parametrize("name", ["patches", "textures"])
@pytest.mark.parametrize("size", [12, 20])
def test_shapes_dtype_and_split_sizes(name, size):
    train = load_dataset(name, split="train", n=250, size=size)
    test = load_dataset(name, split="test", n=250, size=size)
    assert (len(train), len(test)) == (200, 50)
    for data in (train, test):
        x = data.x[:]
        assert x.shape == (len(data), 1, size, size) and x.dtype == torch.float32
        assert data.shape == (1, size, size) and data.is_lazy
        low, high = data.value_range
        assert low <= float(x.min()) and float(x.max()) <= high
        assert torch.allclose(data.x[torch.tensor([3, 7])], x[[3, 7]], atol=1e-5)  # up to float rounding
    assert dataset_info(name).options["size"][0] == 20


@pytest.mark.parametrize("name", ["patches", "textures"])
def test_same_seed_same_patches_other_seed_other_patches(name):
    a, b, c = (load_dataset(name, seed=s, n=100, size=12) for s in (5, 5, 6))
    assert torch.equal(a.x[:], b.x[:])
    assert not torch.equal(a.x[:], c.x[:])
    label = next(iter(a.labels))
    assert torch.equal(a.labels[label].values, b.labels[label].values)


@pytest.mark.parametrize("name", ["patches", "textures"])
def test_all_is_train_then_test(name):
    full = load_dataset(name, split="all", n=100, size=12, seed=2)
    train, test = (load_dataset(name, split=s, n=100, size=12, seed=2) for s in ("train", "test"))
    assert torch.equal(full.x[:], torch.cat([train.x[:], test.x[:]]))


def test_train_and_test_patches_come_from_disjoint_regions():
    size = 20
    train = load_dataset("patches", split="train", n=5000, size=size)
    test = load_dataset("patches", split="test", n=5000, size=size)
    train_cols, test_cols = train.meta["origins"][:, 2], test.meta["origins"][:, 2]
    (first, last), (test_first, test_last) = train.meta["regions"]["train"], train.meta["regions"]["test"]
    assert int(train_cols.min()) >= first and int(train_cols.max()) <= last
    assert int(test_cols.min()) >= test_first and int(test_cols.max()) <= test_last and test_last + size == 640
    # the rightmost column any train patch covers lies a patch side left of any test patch
    assert int(train_cols.max()) + size - 1 + size < int(test_cols.min())
    # both photographs and the whole height are used
    assert set(train.meta["origins"][:, 0].tolist()) == {0, 1}
    assert int(train.meta["origins"][:, 1].max()) > 300
    # the cut pixels are the photograph's
    i, row, col = train.meta["origins"][0].tolist()
    assert torch.equal(
        patches_module.cut(train.meta["origins"][:1], size)[0],
        patches_module.photographs()[i, row : row + size, col : col + size],
    )


@pytest.mark.parametrize("name", ["patches", "textures"])
def test_every_patch_is_standardised(name):
    x = load_dataset(name, n=300, size=20).x[:].flatten(1)
    assert torch.allclose(x.mean(1), torch.zeros(len(x)), atol=1e-5)
    assert torch.allclose(x.std(1, unbiased=False), torch.ones(len(x)), atol=1e-4)


def spectrum_slope(x: np.ndarray) -> float:
    """Slope of log mean power against log radial frequency, (n, s, s) patches."""
    power = (np.abs(np.fft.fft2(x)) ** 2).mean(0)
    k = np.fft.fftfreq(x.shape[-1])
    radius = np.hypot(k[:, None], k[None, :])
    keep = (radius > 0) & (radius <= 0.5)
    return float(np.polyfit(np.log(radius[keep]), np.log(power[keep]), 1)[0])


def test_whitening_flattens_the_power_spectrum_of_natural_patches():
    data = load_dataset("patches", n=3000, size=20)
    raw = patches_module.cut(data.meta["origins"], 20).numpy()
    raw = raw - raw.mean((1, 2), keepdims=True)
    before, after = spectrum_slope(raw), spectrum_slope(data.x[:].numpy()[:, 0])
    assert -2.6 < before < -1.4  # natural images: power ~ 1/f^2
    assert abs(after) < 0.7 and abs(after) < abs(before) / 3


def features(x: np.ndarray) -> np.ndarray:
    """Rotation-invariant features of (n, s, s) patches: log radial power in bands, log kurtosis."""
    power = np.abs(np.fft.fft2(x)) ** 2
    k = np.fft.fftfreq(x.shape[-1])
    band = np.digitize(np.hypot(k[:, None], k[None, :]), np.linspace(0, 0.71, 9))
    radial = np.stack([power[:, band == b].mean(1) for b in np.unique(band)], 1)
    return np.column_stack([np.log(radial), np.log((x**4).mean((1, 2)))])


def test_textures_are_five_balanced_families_a_simple_classifier_separates():
    train = load_dataset("textures", split="train", n=1250, size=20, seed=1)
    test = load_dataset("textures", split="test", n=1250, size=20, seed=1)
    y, y_test = train.labels["family"].values, test.labels["family"].values
    assert train.labels["family"].categories == ["gratings", "sticks", "discs", "checks", "bubbles"]
    assert torch.bincount(y).tolist() == [200] * 5
    assert torch.bincount(y_test).tolist() == [50] * 5
    clf = LogisticRegression(max_iter=2000).fit(features(train.x[:].numpy()[:, 0]), y.numpy())
    accuracy = clf.score(features(test.x[:].numpy()[:, 0]), y_test.numpy())
    assert accuracy > 0.6  # chance 0.2; measured about 0.95


def test_textures_of_a_family_differ_and_are_whitened_like_patches():
    data = load_dataset("textures", n=200, size=12)
    x, family = data.x[:], data.labels["family"].values
    for code in range(5):
        members = x[family == code]
        assert not torch.allclose(members[0], members[1])
    assert torch.equal(patches_module.whitening(12, 0), patches_module.whitening(12, 0, 0.2))


@pytest.mark.parametrize("name", ["patches", "textures"])
def test_bad_options_raise_atlas_errors(name):
    with pytest.raises(AtlasError, match="option size must be an integer from 4"):
        load_dataset(name, size=3)
    with pytest.raises(AtlasError, match="size=65 does not fit .* the largest patch side is 64"):
        load_dataset(name, size=65)
    with pytest.raises(AtlasError, match="option size must be an integer from 4 to 427"):
        load_dataset(name, size=500)
    with pytest.raises(AtlasError, match="option n must be an integer"):
        load_dataset(name, n=0)
    with pytest.raises(AtlasError, match="option n must be an integer"):
        load_dataset(name, n=-3)
    with pytest.raises(AtlasError, match="no option 'sizes'"):
        load_dataset(name, sizes=12)


@pytest.mark.parametrize(("family", "likelihood"), [("vae", "bernoulli"), ("hvae", "dmol")])
def test_a_likelihood_for_values_in_0_1_refuses_whitened_patches(family, likelihood):
    """Whitened patches run over about ±sqrt(size² − 1): a Bernoulli or discretised-logistic
    likelihood of them is not a likelihood, so the run is refused before it starts."""
    model = (
        {"likelihood": likelihood} if family == "hvae" else {"arch": "mlp", "latent_dim": 2, "likelihood": likelihood}
    )
    spec = RunSpec.from_dict(
        {"family": family, "data": {"name": "patches", "options": {"size": 16, "n": 50}}, "model": model, "train": {}}
    )
    with pytest.raises(AtlasError, match="models values in \\[0, 1\\].*choose likelihood 'gaussian'"):
        spec.model_config(spec.load_data("train"))
    spec.model["likelihood"] = "gaussian"
    assert spec.model_config(spec.load_data("train"))["likelihood"] == "gaussian"
