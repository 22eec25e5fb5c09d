"""Latent maps: encode a data set, project the latents to 2-D, cache, compute in the
background, export for TensorBoard's projector. The engine side of the "Latent map" page.

    encoded = encode_dataset(model, data, n=70_000)           # all groups + reconstruction error
    points = encoded.group("z")                                # or encode_points(model, data, "z")
    projection = compute_map(points, "umap", {}, fit_size=None, seed=0, progress=callback)
    cache = ProjectionCache.for_runs(runs_root)                # get/put maps and latents
    job = start_map_job(cache, key, points); map_job_status(cache, key)
    bundle = export_projector(points, metadata, images)       # bundle.data: zip bytes

- encoding.py: posterior means per latent group, reconstruction errors;
- maps.py: PCA, UMAP, t-SNE, fitted on a subsample and the rest placed into the map;
- cache.py: safetensors + JSON entries keyed by a digest of everything that made them;
- jobs.py: one map in a separate process with a progress file;
- numba_cache.py: UMAP's numba compilation cached on disk, once per machine;
- projector.py: the TensorBoard projector bundle.

Layer 5, the top of the engine (with loading, importing and the CLI): may import every
layer below.
"""

from engine.projection.cache import MapKey, PointsKey, ProjectionCache
from engine.projection.encoding import EncodedPoints, encode_dataset, encode_points
from engine.projection.jobs import map_job_status, start_map_job
from engine.projection.maps import DEFAULT_FIT_SIZE, DEFAULT_PARAMS, METHODS, Projection, compute_map
from engine.projection.projector import ProjectorExport, export_projector

__all__ = [
    "DEFAULT_FIT_SIZE",
    "DEFAULT_PARAMS",
    "METHODS",
    "EncodedPoints",
    "MapKey",
    "PointsKey",
    "Projection",
    "ProjectionCache",
    "ProjectorExport",
    "compute_map",
    "encode_dataset",
    "encode_points",
    "export_projector",
    "map_job_status",
    "start_map_job",
]
