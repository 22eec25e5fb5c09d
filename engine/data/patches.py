"""`patches` and `textures`: whitened grey image patches, generated from a seed (seed003 §2.6).

`patches` are square grey patches cut from the two natural photographs that ship with
scikit-learn, `sklearn.datasets.load_sample_images()`: china.jpg and flower.jpg (427×640,
no download). scikit-image's data images are not used: scikit-image is not a dependency
of this project. Grey is the ITU-R 601 luma of the RGB pixels, in [0, 1]. Train and test
come from disjoint regions of each photograph: train patches lie in the left
(1 - test_fraction) of its width, test patches right of that with a gap of one patch side,
so no patch straddles both. Patch origins (photograph, row, column) are drawn uniformly in
their region from the seed; pixels are cut when `x[index]` is read. The dead-leaves
augmentation the issue allows is left out.

`textures` are five procedural families (label "family", chance 0.2), each drawn in its own
way rather than by its spectrum alone, so they still differ after whitening flattens the
spectra:
  0 gratings  a sinusoidal grating: random orientation, 0.08..0.2 cycles/pixel, random phase;
  1 sticks    16 short bright bars on dark (0.35 patch sides long, 0.8 px wide) sharing one
              random orientation (±8°), at random places;
  2 discs     dead leaves: 24 opaque discs of random grey, log-uniform radii from 1.5 px to
              0.4 patch sides, painted one over another;
  3 checks    a checkerboard (blocks) at a random orientation, period 0.25..0.5 patch sides,
              random phase, edges softened over about a pixel;
  4 bubbles   10 thin bright rings (circle outlines) of radius 0.1..0.35 patch sides.
Every parameter of texture i is a counter-based hash of (seed, i), so any number of
textures takes only its labels in memory. Families are balanced (a seeded permutation).

Preprocessing, the same for both (seed003 §2.6: whitened, then normalised to a standard
normal per patch):
  1. subtract each patch's mean;
  2. ZCA whitening W = U (Λ + εI)^(-1/2) Uᵀ, with U, Λ the eigenvectors and eigenvalues of the
     pixel covariance of 20,000 mean-free patches drawn (stream "patches/whitening") from the
     natural photographs' training regions, and ε = 1e-3 · mean(Λ). Textures are whitened
     with the same W as natural patches of their size and seed (test_fraction 0.2);
  3. normalise each patch to zero mean and unit variance (population sd).
A normalised patch of d = size² pixels has |value| ≤ sqrt(d - 1), the value range given.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch

from engine.data.base import Dataset, LabelColumn
from engine.data.checks import check_fraction, check_int, check_seed, check_split, row_index
from engine.data.split import generator, split_parts
from engine.errors import AtlasError

PHOTOGRAPHS = ("china", "flower")
FAMILIES = ("gratings", "sticks", "discs", "checks", "bubbles")
MIN_SIZE = 4
MAX_N = 1_000_000
WHITENING_SAMPLES = 20_000
WHITENING_EPS = 1e-3  # times the mean eigenvalue
_ROWS_PER_CHUNK = 4096


@lru_cache(maxsize=1)
def photographs() -> torch.Tensor:
    """The sample photographs as grey (2, 427, 640) float32 in [0, 1] (ITU-R 601 luma)."""
    import numpy as np
    from sklearn.datasets import load_sample_images

    rgb = torch.as_tensor(np.stack(load_sample_images().images), dtype=torch.float32) / 255.0  # (2, H, W, 3)
    return (rgb @ torch.tensor([0.299, 0.587, 0.114])).contiguous()


def regions(size: int, test_fraction: float) -> dict[str, tuple[int, int]]:
    """Part -> (first, last) allowed patch-origin column, inclusive: train patches lie in
    columns [0, cut), test patches in [cut + size, width)."""
    width = photographs().shape[2]
    cut = round(width * (1 - test_fraction))
    return {"train": (0, cut - size), "test": (cut + size, width - size)}


def check_size(size: object, test_fraction: float) -> int:
    """The patch side, which must fit in both regions of the photographs."""
    _, height, width = photographs().shape
    size = check_int("size", size, MIN_SIZE, height)
    spans = regions(size, test_fraction)
    if any(last < first for first, last in spans.values()):
        largest = max(
            s for s in range(MIN_SIZE, height + 1) if all(a <= b for a, b in regions(s, test_fraction).values())
        )
        raise AtlasError(
            f"option size={size} does not fit the photographs' {'test' if spans['test'][1] < spans['test'][0] else 'train'} "
            f"region ({width} px wide, test_fraction {test_fraction}); the largest patch side is {largest}."
        )
    return size


def origins(part: str, count: int, size: int, seed: int, test_fraction: float, stream: str) -> torch.Tensor:
    """(count, 3) int64 (photograph, row, column) of patch top-left corners in `part`'s region."""
    g = generator(seed, f"{stream}/{part}")
    n_photos, height, _ = photographs().shape
    first, last = regions(size, test_fraction)[part]
    photo = torch.randint(n_photos, (count,), generator=g)
    row = torch.randint(height - size + 1, (count,), generator=g)
    col = torch.randint(first, last + 1, (count,), generator=g)
    return torch.stack([photo, row, col], dim=1)


def cut(where: torch.Tensor, size: int) -> torch.Tensor:
    """Raw grey patches (n, size, size) at origins `where` (n, 3)."""
    steps = torch.arange(size)
    rows = (where[:, 1:2] + steps)[:, :, None]
    cols = (where[:, 2:3] + steps)[:, None, :]
    return photographs()[where[:, 0, None, None], rows, cols]


@lru_cache(maxsize=8)
def whitening(size: int, seed: int, test_fraction: float = 0.2) -> torch.Tensor:
    """The ZCA matrix (d, d), d = size², of mean-free natural training patches (step 2)."""
    where = origins("train", WHITENING_SAMPLES, size, seed, test_fraction, "patches/whitening")
    cov = torch.zeros(size * size, size * size, dtype=torch.float64)
    for start in range(0, len(where), 2000):  # bounded memory at large sizes
        x = cut(where[start : start + 2000], size).flatten(1).double()
        x = x - x.mean(1, keepdim=True)
        cov += x.T @ x
    cov /= len(where)
    eigvals, eigvecs = torch.linalg.eigh(cov)
    eigvals = eigvals.clamp(min=0)
    scale = (eigvals + WHITENING_EPS * eigvals.mean()).rsqrt()
    return ((eigvecs * scale) @ eigvecs.T).float()


def preprocess(raw: torch.Tensor, zca: torch.Tensor) -> torch.Tensor:
    """Raw patches (n, size, size) -> whitened, per-patch standardised (n, 1, size, size)."""
    n, size, _ = raw.shape
    x = raw.reshape(n, -1)
    x = (x - x.mean(1, keepdim=True)) @ zca  # zca is symmetric
    x = x - x.mean(1, keepdim=True)
    x = x / x.pow(2).mean(1, keepdim=True).sqrt().clamp(min=1e-8)
    return x.reshape(n, 1, size, size)


class GeneratedPatches:
    """Lazy (n, 1, size, size) float32 patches: x[index] makes just those patches.

    index: a 1-D integer tensor (or list/array), a slice, or an int; the same index
    always gives the same pixels (up to float rounding, which depends on the batch).
    """

    def __init__(self, n: int, size: int, make):
        self.n, self.size, self.make = n, size, make  # make: (k,) int64 indices -> (k, size, size) raw
        self.dtype = torch.float32

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (self.n, 1, self.size, self.size)

    def __len__(self) -> int:
        return self.n

    def __repr__(self) -> str:
        return f"GeneratedPatches(n={self.n}, size={self.size})"

    def __getitem__(self, index) -> torch.Tensor:
        index, single = row_index(index, self.n, "patches")
        parts = [self.make(index[i : i + _ROWS_PER_CHUNK]) for i in range(0, len(index), _ROWS_PER_CHUNK)]
        out = torch.cat(parts) if parts else torch.empty(0, 1, self.size, self.size)
        return out[0] if single else out


def _check(split, seed, n, size, test_fraction) -> tuple[str, int, int, int, float]:
    split, seed = check_split(split), check_seed(seed)
    n = check_int("n", n, 2, MAX_N)
    test_fraction = check_fraction("test_fraction", test_fraction)
    return split, seed, n, check_size(size, test_fraction), test_fraction


def _value_range(size: int) -> tuple[float, float]:
    bound = math.sqrt(size * size - 1)
    return (-bound, bound)


def load(
    split: str = "train", seed: int = 0, *, n: int = 10_000, size: int = 20, test_fraction: float = 0.2
) -> Dataset:
    """`n` natural patches over train + test (train first in "all"): x (n, 1, size, size),
    whitened and standardised; label column "photograph" (china or flower).
    meta["origins"]: (n, 3) int64 (photograph, row, column) of each patch's top-left pixel;
    meta["regions"]: part -> (first, last) allowed origin column."""
    split, seed, n, size, test_fraction = _check(split, seed, n, size, test_fraction)
    where = torch.cat(
        [
            origins(part, count, size, seed, test_fraction, "patches")
            for part, count in split_parts(split, n, test_fraction)
        ]
    )
    zca = whitening(size, seed, test_fraction)
    return Dataset(
        name="patches",
        split=split,
        x=GeneratedPatches(len(where), size, lambda i: preprocess(cut(where[i], size), zca)),
        labels={"photograph": LabelColumn("photograph", where[:, 0].clone(), list(PHOTOGRAPHS))},
        shape=(1, size, size),
        value_range=_value_range(size),
        meta={"origins": where, "regions": regions(size, test_fraction)},
    )


# ---- textures ---------------------------------------------------------------------------


def _hash(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer mixing hash, elementwise on int64 values in [0, 2^32)."""
    for _ in range(3):
        x = ((x ^ (x >> 16)) * 0x45D9F3B) & 0xFFFFFFFF
    return x ^ (x >> 16)


def uniforms(seed: int, part: str, index: torch.Tensor, count: int) -> torch.Tensor:
    """(len(index), count) uniforms in (0, 1), a fixed function of (seed, part, index, slot)."""
    key = _hash(torch.tensor((seed * 2654435761 + (part == "test") * 97531) & 0xFFFFFFFF))
    base = _hash((index[:, None] * 0x9E37 + key) & 0xFFFFFFFF)
    slots = _hash(base ^ torch.arange(count))
    return (slots.double() + 0.5).float() / 2**32


def _grid(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    c = torch.arange(size, dtype=torch.float32) + 0.5
    return c[None, None, :], c[None, :, None]  # x (1, 1, s), y (1, s, 1)


def _gratings(u: torch.Tensor, size: int) -> torch.Tensor:
    x, y = _grid(size)
    theta, freq, phase = (u[:, i, None, None] for i in range(3))
    theta, freq, phase = math.pi * theta, 0.08 + 0.12 * freq, 2 * math.pi * phase
    return 0.5 + 0.5 * torch.sin(2 * math.pi * freq * (x * torch.cos(theta) + y * torch.sin(theta)) + phase)


def _sticks(u: torch.Tensor, size: int, k: int = 16) -> torch.Tensor:
    x, y = _grid(size)
    theta = math.pi * u[:, :1] + math.radians(8) * (2 * u[:, 1 : 1 + k] - 1)  # (b, k)
    cx = size * (1.2 * u[:, 1 + k : 1 + 2 * k] - 0.1)
    cy = size * (1.2 * u[:, 1 + 2 * k : 1 + 3 * k] - 0.1)
    dx, dy = torch.cos(theta)[..., None, None], torch.sin(theta)[..., None, None]
    px, py = x[:, None] - cx[..., None, None], y[:, None] - cy[..., None, None]  # (b, k, s, s)
    half = 0.175 * size
    t = (px * dx + py * dy).clamp(-half, half)
    dist2 = (px - t * dx) ** 2 + (py - t * dy) ** 2
    return torch.exp(-dist2 / (2 * 0.8**2)).amax(1)


def _discs(u: torch.Tensor, size: int, k: int = 24) -> torch.Tensor:
    x, y = _grid(size)
    radius = 1.5 * (0.4 * size / 1.5) ** u[:, :k]
    cx = size * (1.4 * u[:, k : 2 * k] - 0.2)
    cy = size * (1.4 * u[:, 2 * k : 3 * k] - 0.2)
    grey = u[:, 3 * k : 4 * k + 1]  # (b, k + 1): background first
    inside = (x[:, None] - cx[..., None, None]) ** 2 + (y[:, None] - cy[..., None, None]) ** 2 <= radius[
        ..., None, None
    ] ** 2
    layer = (inside * torch.arange(1, k + 1)[:, None, None]).amax(1)  # (b, s, s): last disc on top, 0 none
    return torch.gather(grey, 1, layer.flatten(1)).reshape(-1, size, size)


def _checks(u: torch.Tensor, size: int) -> torch.Tensor:
    x, y = _grid(size)
    theta, period = math.pi * u[:, 0, None, None], size * (0.25 + 0.25 * u[:, 1, None, None])
    a = (x * torch.cos(theta) + y * torch.sin(theta)) / period + u[:, 2, None, None]
    b = (-x * torch.sin(theta) + y * torch.cos(theta)) / period + u[:, 3, None, None]
    return 0.5 + 0.5 * torch.tanh(3 * torch.sin(2 * math.pi * a) * torch.sin(2 * math.pi * b))


def _bubbles(u: torch.Tensor, size: int, k: int = 10) -> torch.Tensor:
    x, y = _grid(size)
    radius = size * (0.1 + 0.25 * u[:, :k])
    cx = size * (1.2 * u[:, k : 2 * k] - 0.1)
    cy = size * (1.2 * u[:, 2 * k : 3 * k] - 0.1)
    r = torch.sqrt((x[:, None] - cx[..., None, None]) ** 2 + (y[:, None] - cy[..., None, None]) ** 2)
    return torch.exp(-((r - radius[..., None, None]) ** 2) / (2 * 0.8**2)).amax(1)


_RENDER = (_gratings, _sticks, _discs, _checks, _bubbles)  # in FAMILIES order
_SLOTS = 4 * 24 + 1  # uniforms per texture, enough for every family


def render_textures(family: torch.Tensor, u: torch.Tensor, size: int) -> torch.Tensor:
    """Raw textures (b, size, size) in [0, 1]: family (b,) codes, u (b, _SLOTS) uniforms."""
    out = torch.empty(len(family), size, size)
    for code, draw in enumerate(_RENDER):
        chosen = family == code
        if chosen.any():
            out[chosen] = draw(u[chosen], size)
    return out


def load_textures(
    split: str = "train", seed: int = 0, *, n: int = 10_000, size: int = 20, test_fraction: float = 0.2
) -> Dataset:
    """`n` textures over train + test (train first in "all"), balanced over the five
    families: x (n, 1, size, size) whitened and standardised, label column "family"."""
    split, seed, n, size, test_fraction = _check(split, seed, n, size, test_fraction)
    zca = whitening(size, seed)
    parts = split_parts(split, n, test_fraction)
    family = torch.cat(
        [torch.randperm(count, generator=generator(seed, f"textures/{part}")) % len(FAMILIES) for part, count in parts]
    )
    part_of = torch.cat([torch.full((count,), part == "test") for part, count in parts])  # True: test
    index_in_part = torch.cat([torch.arange(count) for _, count in parts])

    def make(i: torch.Tensor) -> torch.Tensor:
        u = torch.empty(len(i), _SLOTS)
        for is_test, part in ((False, "train"), (True, "test")):
            mine = part_of[i] == is_test
            u[mine] = uniforms(seed, part, index_in_part[i[mine]], _SLOTS)
        return preprocess(render_textures(family[i], u, size), zca)

    return Dataset(
        name="textures",
        split=split,
        x=GeneratedPatches(len(family), size, make),
        labels={"family": LabelColumn("family", family, list(FAMILIES))},
        shape=(1, size, size),
        value_range=_value_range(size),
        meta={"families": list(FAMILIES)},
    )
