"""`shapes`: dSprites-like images drawn on demand from six known factors.

Factors (independent, uniform): shape (square, ellipse, heart, triangle), scale (6 values
0.5..1), rotation (40 angles in [0, 2π)), x and y (32 positions each) and colour (6 named
RGB colours), drawn on black. The factor codes of every image are sampled up front (a few
bytes each); pixels are rendered only when `x[index]` is read, vectorised over the batch:
each pixel centre is mapped into the unit frame of its image's shape (inverse translate,
rotate and scale) and a signed distance to the unit shape gives an anti-aliased coverage.
Every unit shape fits in the unit circle and positions keep that circle one pixel away
from the border, so shapes never touch the outer ring of pixels.

Options narrow the factors: `fix` holds factors at one value, `shape` keeps one shape kind,
and `grey` gives one channel, the shape's coverage (white on black) instead of its colour.
`load(shape="heart", fix="scale,rotation,colour", grey=True)` is seed001's affine-heart data
(Figs 4.1, 4.6): one heart, translated, the position its only free factor.
"""

from __future__ import annotations

import math

import torch

from engine.data.base import Dataset, LabelColumn
from engine.data.checks import check_choice, check_fraction, check_int, check_seed, check_split, row_index
from engine.data.split import generator, split_parts
from engine.errors import AtlasError

SIZES = (32, 64)
SHAPES = ("square", "ellipse", "heart", "triangle")
SCALES = torch.linspace(0.5, 1.0, 6)
ROTATIONS = torch.arange(40) * (2 * math.pi / 40)
POSITIONS = torch.linspace(0.0, 1.0, 32)  # x: left -> right, y: top -> bottom
COLOURS = {
    "red": (1.0, 0.0, 0.0),
    "green": (0.0, 1.0, 0.0),
    "blue": (0.25, 0.45, 1.0),
    "yellow": (1.0, 1.0, 0.0),
    "magenta": (1.0, 0.0, 1.0),
    "cyan": (0.0, 1.0, 1.0),
}
FACTORS = ("shape", "scale", "rotation", "x", "y", "colour")
FACTOR_SIZES = (len(SHAPES), len(SCALES), len(ROTATIONS), len(POSITIONS), len(POSITIONS), len(COLOURS))
# The value a factor takes when it is fixed (option `fix`): centred, upright, full size.
FIXED_CODES = {
    "shape": 0,
    "scale": len(SCALES) - 1,
    "rotation": 0,
    "x": len(POSITIONS) // 2,
    "y": len(POSITIONS) // 2,
    "colour": 0,
}
MAX_RADIUS = 0.2  # radius of the unit circle at scale 1, as a fraction of the image side
MAX_N = 10_000_000
_PIXELS_PER_CHUNK = 2**20  # bounds the memory of one rendering pass


# Signed distances of the unit shapes (negative inside) at points (u, v), v pointing up.
# Formulas after Inigo Quilez, "2D distance functions".


def _sd_square(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    half = 1 / math.sqrt(2)  # corners on the unit circle
    du, dv = u.abs() - half, v.abs() - half
    outside = torch.hypot(du.clamp(min=0), dv.clamp(min=0))
    return outside + torch.maximum(du, dv).clamp(max=0)


def _sd_ellipse(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    ru, rv = 1.0, 0.5  # radii
    k0 = torch.hypot(u / ru, v / rv)
    k1 = torch.hypot(u / ru**2, v / rv**2)
    ratio = torch.where(k1 > 1e-6, k0 / k1.clamp(min=1e-6), torch.full_like(k0, rv))
    return (k0 - 1) * ratio  # first-order approximation, exact on the boundary


def _sd_triangle(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    k, r = math.sqrt(3), math.sqrt(3) / 2  # equilateral, vertices on the unit circle
    px, py = u.abs() - r, v + r / k
    fold = px + k * py > 0
    px, py = torch.where(fold, (px - k * py) / 2, px), torch.where(fold, (-k * px - py) / 2, py)
    px = px - px.clamp(-2 * r, 0)
    return -torch.hypot(px, py) * torch.sign(py)


_HEART_C = 0.6306019  # the heart's tip and lobes lie on a circle of this radius about (0, c)


def _sd_heart(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    c = _HEART_C
    x, y = (u * c).abs(), v * c + c  # unit circle -> Quilez's heart frame (tip at 0, 0)
    lobe = torch.hypot(x - 0.25, y - 0.75) - math.sqrt(2) / 4
    m = (x + y).clamp(min=0) * 0.5
    body = torch.sqrt(torch.minimum(x**2 + (y - 1) ** 2, (x - m) ** 2 + (y - m) ** 2))
    body = body * torch.sign(x - y)
    return torch.where(x + y > 1, lobe, body) / c


_DISTANCES = (_sd_square, _sd_ellipse, _sd_heart, _sd_triangle)  # in SHAPES order


def render(codes: torch.Tensor, size: int, grey: bool = False) -> torch.Tensor:
    """codes (n, 6) factor codes in FACTORS order -> images (n, 3, size, size) in [0, 1], or
    with `grey` the coverage alone, (n, 1, size, size), whatever the colour code.

    Distances are computed only in a window of side `w` around each shape (about a fifth
    of the image), with the images grouped by shape kind so each group is one slice.
    """
    order = torch.argsort(codes[:, 0], stable=True)
    codes = codes[order].long()  # grouped by shape kind
    n = len(codes)
    max_radius = MAX_RADIUS * size
    margin = max_radius + 1.0  # centres keep the unit circle one pixel inside the image
    radius = SCALES[codes[:, 1]] * max_radius  # (n,) in pixels
    cx = margin + POSITIONS[codes[:, 3]] * (size - 2 * margin)
    cy = margin + POSITIONS[codes[:, 4]] * (size - 2 * margin)
    angle = ROTATIONS[codes[:, 2]]
    cos, sin = torch.cos(angle)[:, None, None], torch.sin(angle)[:, None, None]

    # window: w pixels from (top, left), covering every pixel within radius + 0.5 of the centre
    w = math.ceil(2 * max_radius + 3)
    left = (cx - max_radius - 1).floor().long().clamp(0, size - w)
    top = (cy - max_radius - 1).floor().long().clamp(0, size - w)
    steps = torch.arange(w)
    px = (left[:, None] + steps + 0.5).float()  # (n, w) pixel centres
    py = (top[:, None] + steps + 0.5).float()
    r = radius[:, None, None]
    dx = (px[:, None, :] - cx[:, None, None]) / r  # (n, 1, w)
    dv = (cy[:, None, None] - py[:, :, None]) / r  # (n, w, 1), pointing up
    u = cos * dx + sin * dv  # (n, w, w), rotated back by -angle
    v = cos * dv - sin * dx

    coverage = torch.empty(n, w, w)
    bounds = torch.cumsum(torch.bincount(codes[:, 0], minlength=len(SHAPES)), 0).tolist()
    for kind, distance in enumerate(_DISTANCES):  # one pass per shape kind, not per image
        a, b = (bounds[kind - 1] if kind else 0), bounds[kind]
        if b > a:
            d_px = distance(u[a:b], v[a:b]) * r[a:b]
            coverage[a:b] = (0.5 - d_px).clamp_(0.0, 1.0)

    canvas = torch.zeros(n, size, size)
    rows = (top[:, None] + steps)[:, :, None]  # (n, w, 1)
    cols = (left[:, None] + steps)[:, None, :]  # (n, 1, w)
    canvas[order[:, None, None], rows, cols] = coverage
    if grey:
        return canvas[:, None]
    rgb = torch.tensor(list(COLOURS.values()))[codes[:, 5]]  # (n, 3), grouped order
    colour = torch.empty(n, 3)
    colour[order] = rgb
    return canvas[:, None] * colour[:, :, None, None]


class ShapeImages:
    """Lazy (n, 3, size, size) float32 images, (n, 1, size, size) with `grey`: x[index]
    renders just those images.

    index: a 1-D integer tensor (or list/array), a slice, or an int; the same index
    always gives the same pixels.
    """

    def __init__(self, codes: torch.Tensor, size: int, grey: bool = False):
        self.codes = codes  # (n, 6) int16
        self.size = size
        self.grey = grey
        self.channels = 1 if grey else 3
        self.dtype = torch.float32

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (len(self.codes), self.channels, self.size, self.size)

    def __len__(self) -> int:
        return len(self.codes)

    def __repr__(self) -> str:
        return f"ShapeImages(n={len(self)}, size={self.size}{', grey' if self.grey else ''})"

    def __getitem__(self, index) -> torch.Tensor:
        index, single = row_index(index, len(self), "ShapeImages")
        codes = self.codes[index]
        chunk = max(1, _PIXELS_PER_CHUNK // (self.size * self.size))
        parts = [render(codes[i : i + chunk], self.size, self.grey) for i in range(0, len(codes), chunk)]
        out = torch.cat(parts) if parts else torch.empty(0, self.channels, self.size, self.size)
        return out[0] if single else out  # one image (channels, size, size)


def _sample_codes(
    count: int, seed: int, stream: str, fixed: tuple[str, ...] = (), shape_code: int | None = None
) -> torch.Tensor:
    """(count, 6) int16 factor codes, each uniform over its values unless it is `fixed`
    (or, for the shape, set to `shape_code`). Every factor is drawn either way, so fixing
    one leaves the others' draws unchanged."""
    g = generator(seed, stream)
    cols = [torch.randint(k, (count,), generator=g, dtype=torch.int16) for k in FACTOR_SIZES]
    for name in fixed:
        cols[FACTORS.index(name)].fill_(FIXED_CODES[name])
    if shape_code is not None:
        cols[FACTORS.index("shape")].fill_(shape_code)
    return torch.stack(cols, dim=1)


def _check_fix(fix: object) -> tuple[str, ...]:
    names = fix.split(",") if isinstance(fix, str) else list(fix) if isinstance(fix, (list, tuple)) else None
    if names is None:
        raise AtlasError(f"fix must name factors, e.g. 'x,y'; got {fix!r}")
    names = tuple(n.strip() for n in names if str(n).strip())
    unknown = [n for n in names if n not in FACTORS]
    if unknown:
        raise AtlasError(f"cannot fix {', '.join(map(repr, unknown))}: the factors are {', '.join(FACTORS)}")
    return names


def _check_shape(shape: object, fixed: tuple[str, ...]) -> int | None:
    """The code of the one shape kind `shape` names, or None for "" (every kind)."""
    if not isinstance(shape, str):
        raise AtlasError(f"option shape must name a shape ({', '.join(SHAPES)}) or be empty for all; got {shape!r}")
    if not shape.strip():
        return None
    if shape.strip() not in SHAPES:
        raise AtlasError(f"option shape must be one of {', '.join(SHAPES)} (or empty for all); got {shape!r}")
    if "shape" in fixed:
        raise AtlasError("option shape picks the shape kind, so 'shape' cannot also be in fix; give one of the two")
    return SHAPES.index(shape.strip())


def load(
    split: str = "train",
    seed: int = 0,
    *,
    n: int = 25_000,
    size: int = 32,
    test_fraction: float = 0.2,
    fix: str | list[str] = "",
    shape: str = "",
    grey: bool = False,
) -> Dataset:
    """`n` images over train + test (train first, then test in "all"). `fix` names factors
    held at one value (`FIXED_CODES`: centred, upright, full size), e.g. "x,y" for objects
    at the centre as in 3DShapes. `shape` keeps one shape kind (a name from SHAPES; "" for
    all four). `grey`: images of one channel, the shape's coverage in [0, 1] (the colour
    factor is still drawn and labelled but not seen).

    Label columns: "shape" and "colour" categorical (names); "scale" (0.5..1),
    "rotation" (radians), "x" and "y" (0..1, left->right, top->bottom) float32 values.
    meta["factor_codes"] holds every factor's int64 code, meta["factor_values"] the
    values each code stands for.
    """
    split, seed = check_split(split), check_seed(seed)
    n = check_int("n", n, 2, MAX_N)
    size = check_choice("size", size, SIZES)
    test_fraction = check_fraction("test_fraction", test_fraction)
    parts = split_parts(split, n, test_fraction)
    fixed = _check_fix(fix)
    shape_code = _check_shape(shape, fixed)
    if not isinstance(grey, bool):
        raise AtlasError(f"option grey must be true or false; got {grey!r}")
    codes = torch.cat([_sample_codes(count, seed, f"shapes/{part}", fixed, shape_code) for part, count in parts])

    factor_codes = {name: codes[:, i].long() for i, name in enumerate(FACTORS)}
    values = {"scale": SCALES, "rotation": ROTATIONS, "x": POSITIONS, "y": POSITIONS}
    labels = {
        "shape": LabelColumn("shape", factor_codes["shape"], list(SHAPES)),
        **{name: LabelColumn(name, grid[factor_codes[name]]) for name, grid in values.items()},
        "colour": LabelColumn("colour", factor_codes["colour"], list(COLOURS)),
    }
    return Dataset(
        name="shapes",
        split=split,
        x=ShapeImages(codes, size, grey),
        labels=labels,
        shape=(1 if grey else 3, size, size),
        value_range=(0.0, 1.0),
        meta={
            "factor_codes": factor_codes,
            "factor_values": {"shape": list(SHAPES), **values, "colour": list(COLOURS)},
            "colour_rgb": dict(COLOURS),
        },
    )
