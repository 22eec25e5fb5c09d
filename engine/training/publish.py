"""Publishing a run: a copy with its final weights only (no optimiser or RNG state),
its config and its metrics, small enough to ship as a demo model in assets/."""

from __future__ import annotations

import os

from engine.errors import AtlasError
from engine.store import Run, RunStore

WEIGHT_PREFIXES = ("model.", "ema.")


def publish_run(run: Run, dest_root: str | os.PathLike, name: str | None = None, all_checkpoints: bool = False) -> Run:
    """Copy `run` into `dest_root` as a new run holding only its latest weights (or the
    weights of every checkpoint it kept, to show how something forms during training)."""
    latest = run.latest_checkpoint()
    if latest is None:
        raise AtlasError(f"run {run.id} has no checkpoint to publish; train it first")
    copy = RunStore(dest_root).create_run(run.config, name_hint=name or run.id)
    for info in run.checkpoints() if all_checkpoints else [latest]:
        tensors, meta = run.load_checkpoint(info.step)
        weights = {k: v for k, v in tensors.items() if k.startswith(WEIGHT_PREFIXES)}
        meta = {k: v for k, v in meta.items() if k != "optimizer"}
        meta["published_from"] = run.id
        copy.save_checkpoint(info.step, weights, meta)
    for step_name, (steps, values) in run.metrics.scalars().items():
        copy.metrics.log_rows([(int(s), step_name, float(v)) for s, v in zip(steps, values)])
    for image_name in run.metrics.image_names():
        for step, png in run.metrics.images(image_name):
            copy.metrics.log_image(step, image_name, png)
    copy.metrics.seal()
    copy.set_status("finished", reason=f"published from {run.id} at step {latest.step}")
    return copy
