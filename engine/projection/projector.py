"""Latents as a TensorBoard Embedding Projector bundle (a zip), for TensorBoard or the
standalone projector.

Files, in the formats of TensorBoard's projector (its projector_config.proto and the
embedding guide):
- tensors.tsv: one point per line, its coordinates separated by tabs, no header;
- metadata.tsv: one line per point; a header row of column names only when there is
  more than one column (a single column is read as the labels, with no header);
- sprite.png: the points' images in a grid, row by row from the top left; the whole
  sprite must be square and at most 8192 x 8192 px (the projector's WebGL texture limit,
  anchors B1), so larger sets are subsampled to fit;
- projector_config.pbtxt: the ProjectorConfig in protobuf text format, for TensorBoard;
- config.json: the same for the standalone projector (tensorPath, metadataPath, sprite).
"""

from __future__ import annotations

import io
import json
import math
import zipfile
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from engine.errors import AtlasError
from engine.images import png_bytes, tile_rows, to_pixels

MAX_SPRITE_PX = 8192
MAX_POINTS = 100_000  # the projector loads at most this many points (anchors B1)


@dataclass
class ProjectorExport:
    data: bytes  # the zip
    n_points: int  # points written
    n_total: int  # points given
    note: str  # what was written, and why points were left out if they were

    @property
    def subsampled(self) -> bool:
        return self.n_points < self.n_total


def export_projector(
    latents,
    metadata: pd.DataFrame | None = None,
    images: torch.Tensor | None = None,
    name: str = "latents",
    max_points: int = MAX_POINTS,
    seed: int = 0,
) -> ProjectorExport:
    """A projector bundle of latents (N, d) with per-point metadata (N rows) and images
    (N, C, H, W) or (N, H, W) in [0, 1]. When more points are given than the sprite or
    `max_points` allow, a random subset (fixed by `seed`, kept in input order) is written
    and a `point` column with each row's input position is added to the metadata."""
    latents = np.asarray(latents.detach().cpu() if isinstance(latents, torch.Tensor) else latents)
    if latents.ndim != 2 or len(latents) == 0:
        raise AtlasError(f"latents must be a non-empty (points, dimensions) array, got shape {latents.shape}")
    n = len(latents)
    if metadata is not None and len(metadata) != n:
        raise AtlasError(f"metadata has {len(metadata)} rows for {n} points; give one row per point")
    if images is not None:
        images = _check_images(images, n)
    limit = max_points
    if images is not None:
        limit = min(limit, (MAX_SPRITE_PX // max(images.shape[-2:])) ** 2)
    keep = np.arange(n) if n <= limit else np.sort(np.random.default_rng(seed).choice(n, limit, replace=False))
    columns = pd.DataFrame(index=range(len(keep))) if metadata is None else metadata.iloc[keep].reset_index(drop=True)
    if len(keep) < n:
        columns.insert(0, "point", keep)
    files = {"tensors.tsv": _tensor_tsv(latents[keep])}
    embedding = {"tensorName": name, "tensorShape": [len(keep), latents.shape[1]], "tensorPath": "tensors.tsv"}
    if columns.shape[1]:
        files["metadata.tsv"] = _metadata_tsv(columns)
        embedding["metadataPath"] = "metadata.tsv"
    if images is not None:
        files["sprite.png"] = _sprite(images[torch.from_numpy(keep)])
        embedding["sprite"] = {"imagePath": "sprite.png", "singleImageDim": [images.shape[-1], images.shape[-2]]}
    files["projector_config.pbtxt"] = _pbtxt(embedding).encode()
    files["config.json"] = json.dumps({"embeddings": [embedding]}, indent=2).encode()
    note = f"{len(keep):,} of {n:,} points"
    if len(keep) < n:
        if images is not None and limit < max_points:
            why = f"a {MAX_SPRITE_PX}x{MAX_SPRITE_PX} px sprite holds at most {limit:,} images of this size"
        else:
            why = f"the projector loads at most {max_points:,} points"
        note += f" (a random subset: {why}; the metadata column 'point' gives each row's position in the full set)"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for filename, content in files.items():
            archive.writestr(filename, content)
    return ProjectorExport(data=buffer.getvalue(), n_points=len(keep), n_total=n, note=note)


def _check_images(images, n: int) -> torch.Tensor:
    if not isinstance(images, torch.Tensor):
        images = torch.as_tensor(np.asarray(images))
    if images.ndim == 3:
        images = images.unsqueeze(1)
    if images.ndim != 4 or images.shape[1] not in (1, 3) or len(images) != n:
        raise AtlasError(
            f"images must be (points, channels, height, width) with 1 or 3 channels and one per point "
            f"({n}), got shape {tuple(images.shape)}"
        )
    if max(images.shape[-2:]) > MAX_SPRITE_PX:
        raise AtlasError(f"images larger than {MAX_SPRITE_PX} px do not fit a sprite; resize them first")
    return images


def _tensor_tsv(latents: np.ndarray) -> bytes:
    buffer = io.StringIO()
    np.savetxt(buffer, latents.astype(np.float64), fmt="%.7g", delimiter="\t")
    return buffer.getvalue().encode()


def _metadata_tsv(columns: pd.DataFrame) -> bytes:
    def clean(value) -> str:
        return " ".join(str(value).split())  # no tabs or newlines inside a field

    lines = ["\t".join(clean(c) for c in columns.columns)] if columns.shape[1] > 1 else []
    lines += ["\t".join(clean(v) for v in row) for row in columns.itertuples(index=False)]
    return ("\n".join(lines) + "\n").encode()


def _sprite(images: torch.Tensor) -> bytes:
    """Images (n, C, H, W) in [0, 1] in a square grid of ceil(sqrt(n)) columns, as an RGB PNG."""
    n, channels, h, w = images.shape
    grid = tile_rows(to_pixels(images.expand(n, 3, h, w)), math.ceil(math.sqrt(n)))
    side = max(grid.shape[:2])
    canvas = np.zeros((side, side, 3), dtype=np.uint8)
    canvas[: grid.shape[0], : grid.shape[1]] = grid
    return png_bytes(canvas)


def _pbtxt(embedding: dict) -> str:
    lines = [
        "embeddings {",
        f"  tensor_name: {json.dumps(embedding['tensorName'])}",
        f'  tensor_path: "{embedding["tensorPath"]}"',
    ]
    lines += [f"  tensor_shape: {s}" for s in embedding["tensorShape"]]
    if "metadataPath" in embedding:
        lines.append(f'  metadata_path: "{embedding["metadataPath"]}"')
    if "sprite" in embedding:
        lines += ["  sprite {", f'    image_path: "{embedding["sprite"]["imagePath"]}"']
        lines += [f"    single_image_dim: {s}" for s in embedding["sprite"]["singleImageDim"]]
        lines.append("  }")
    return "\n".join(lines + ["}"]) + "\n"
