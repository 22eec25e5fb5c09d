"""`digits-domains`: the real digits in two domains, as they are and inverted (1 - x).

A stand-in for the two-domain training sets of UG-VAE's alignment experiment (seed002 §1.6c,
Fig. 4.7: CelebA with 3D FACES, 3D Cars with 3D Chairs): the same kind of content (a digit)
in two looks (dark strokes on light, or light on dark). Each of the 1,797 digit images belongs
to one domain only, half of them (a seeded choice fixed by `seed`) inverted, so the two domains
share no image, as the thesis's do not; a split takes its digits with their domain. With
`group_by="domains"` a training split gives groups of half digits and half inverted digits
(engine.data.groups).
"""

from __future__ import annotations

import torch

from engine.data import digits
from engine.data.base import Dataset, LabelColumn
from engine.data.checks import check_choice, check_fraction, check_seed, check_split
from engine.data.split import generator

DOMAINS = ["digits", "inverted"]


def domain_of(index: torch.Tensor, seed: int) -> torch.Tensor:
    """The domain (0 digits, 1 inverted) of the digit images at `index` among all 1,797: exactly
    half of all the images (rounded down) are inverted, chosen by `seed`."""
    n = digits.n_images()
    inverted = torch.zeros(n, dtype=torch.int64)
    inverted[torch.randperm(n, generator=generator(seed, "digits-domains"))[: n // 2]] = 1
    return inverted[index]


def load(split: str = "train", seed: int = 0, *, size: int = 8, test_fraction: float = 0.2) -> Dataset:
    """The digits of `split` (the digits' own split), x (n, 1, size, size) in [0, 1]; label
    columns "digit" and "domain" ("digits" or "inverted")."""
    split, seed = check_split(split), check_seed(seed)
    size = check_choice("size", size, digits.SIZES)
    test_fraction = check_fraction("test_fraction", test_fraction)
    index = digits.digit_split(split, seed, test_fraction)
    x, y = digits.digit_images(index, size)
    domain = domain_of(index, seed)
    x = torch.where(domain[:, None, None, None] == 1, 1.0 - x, x)
    return Dataset(
        name="digits-domains",
        split=split,
        x=x,
        labels={
            "digit": LabelColumn("digit", y, list(digits.DIGIT_NAMES)),
            "domain": LabelColumn("domain", domain, list(DOMAINS)),
        },
        shape=(1, size, size),
        value_range=(0.0, 1.0),
        meta={"source_index": index},
    )
