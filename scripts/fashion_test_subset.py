"""Write the Fashion-MNIST test subset shipped in assets/data: the first N test images and
their labels, as the uint8 arrays `images` (N, 28, 28) and `labels` (N,) of a compressed NPZ.
The fashion-mnist dataset falls back to it for its test split when its files are not found
(engine/data/fashion_mnist.py), so that the demo's pages work without the dataset.

    python scripts/fashion_test_subset.py --n 2000
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from engine.data.fashion_mnist import SIZES, SUBSET_FILE, find_folder, read_split


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="how many of the first test images to keep")
    parser.add_argument("--path", help="the folder holding the dataset's files (default: where the loader looks)")
    args = parser.parse_args()
    x, y = read_split(find_folder(args.path), "test", SIZES["test"])
    images = (x[: args.n, 0] * 255).round().byte().numpy()  # exactly the file's bytes: x is bytes / 255
    labels = y[: args.n].byte().numpy()
    SUBSET_FILE.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(SUBSET_FILE, images=images, labels=labels)
    print(f"{SUBSET_FILE}: {args.n:,} images, {SUBSET_FILE.stat().st_size:,} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
