"""Finding runs for the dashboard: the demo runs shipped in assets/ and the runs root."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from engine.errors import AtlasError
from engine.models import FAMILIES, family_kind
from engine.store import Run, RunInfo, RunStore

# What a run's line in the list is read from: a change to any of them changes its signature.
RUN_FILES = ("config.json", "status.json", "checkpoints", "metrics.sqlite", "metrics.sqlite-wal")

REPO_ROOT = Path(__file__).resolve().parent.parent
DEMO_ROOT = REPO_ROOT / "assets" / "runs"
# The order demo models are offered in; the first is what a new visitor sees.
DEMO_ORDER = (
    "facet-digits-vae",
    "facet-digits-mfcvae",
    "digits-vae",
    "digits-tcvae",
    "digits-seatbelt",
    "shapes-vae",
    "digits-hvae",
    "digits-hvae-shared",
    "digits-hvae-normalised",
    "digits-dctvae",
    "digits-gmdgm",
    "digits-ssvae",
    "digits-ugvae",
    "digits-domains-ugvae",
)


@dataclass(frozen=True)
class RunChoice:
    """A run as the sidebar offers it: where it lives and how to label it."""

    key: str  # "demo/<id>" or "runs/<id>": unique across both roots
    label: str
    info: RunInfo

    @property
    def dir(self) -> Path:
        return self.info.dir


def runs_root() -> Path:
    return Path(os.environ.get("LATENT_ATLAS_RUNS_DIR", "runs"))


def available_runs(kind: str | None = "latent") -> list[RunChoice]:
    """Demo runs first (in DEMO_ORDER), then the runs root, newest first.

    kind: only runs of model families of this kind (`engine.models.family_kind`): "latent"
    (the default) for the pages built on LatentModel, "sequence" for sequential predictors
    such as the in-context learner; None for every run. Broken runs and runs of unknown
    families are always listed, so that a page can say what is wrong with them.
    """
    choices = []
    for prefix, root in (("demo", DEMO_ROOT), ("runs", runs_root())):
        infos = [info for info in listed_runs(root) if is_kind(info, kind)]
        if prefix == "demo":
            rank = {slug: i for i, slug in enumerate(DEMO_ORDER)}
            infos.sort(key=lambda info: rank.get(run_slug(info.id), len(rank)))
        for info in infos:
            label = f"{prefix} · {run_slug(info.id)} · {info.id[-4:]}"
            if info.status == "broken":
                label += " (broken)"
            choices.append(RunChoice(key=f"{prefix}/{info.id}", label=label, info=info))
    return choices


_listings: dict[Path, tuple[tuple, list[RunInfo]]] = {}  # root: (its signature, its runs), for every session
_listings_lock = threading.Lock()


def listed_runs(root: Path) -> list[RunInfo]:
    """RunStore(root).list_runs(), read again only when one of the files it reads has changed.

    The sidebar, the links and several pages list the runs on every rerun of every session;
    reading each run's metrics database for it cost tens of milliseconds a rerun. The
    signature (modification times and sizes of the root, each run directory and the files
    in RUN_FILES) costs a few stat calls per run. A listing with a running run is never kept:
    whether its process is still alive is checked on every read."""
    signature = listing_signature(root)
    with _listings_lock:
        kept = _listings.get(root)
    if kept is not None and kept[0] == signature:
        return kept[1]
    infos = RunStore(root).list_runs()
    with _listings_lock:
        if any(info.status == "running" for info in infos):
            _listings.pop(root, None)
        else:
            _listings[root] = (signature, infos)
    return infos


def listing_signature(root: Path) -> tuple:
    def stamp(path: Path) -> tuple[int, int] | None:
        try:
            st = path.stat()
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size

    try:
        entries = sorted(os.scandir(root), key=lambda e: e.name)
    except OSError:
        return (None,)
    runs = tuple(
        (entry.name, stamp(Path(entry.path)), *(stamp(Path(entry.path, name)) for name in RUN_FILES))
        for entry in entries
        if entry.is_dir()
    )
    return stamp(root), runs


def demos(fits: Callable[[RunInfo], bool]) -> list[RunChoice]:
    """The readable demo runs for which `fits` holds, in the order the sidebar lists them."""
    return [c for c in available_runs() if c.key.startswith("demo/") and c.info.status != "broken" and fits(c.info)]


def builds(model_class: type) -> Callable[[RunInfo], bool]:
    """Whether a run's family builds a `model_class` (or a subclass), for `demos`."""
    return lambda info: info.family in FAMILIES and issubclass(FAMILIES[info.family][1], model_class)


def trained_on_images(info: RunInfo) -> bool:
    """Whether a run's inputs are images (channels, height, width), for `demos`."""
    return info.input_shape is not None and len(info.input_shape) == 3


def checkpoint_steps(choice: RunChoice) -> list[int]:
    """The steps of a run's checkpoints, newest first; none if the run cannot be read."""
    try:
        return [c.step for c in reversed(Run.from_dir(choice.dir, readonly=True).checkpoints())]
    except AtlasError:
        return []


def is_kind(info: RunInfo, kind: str | None) -> bool:
    """Whether a run's model family is of `kind` (None: any); unknown families count as any."""
    found = family_kind(info.model)  # RunInfo.model: the model config's "family" entry
    return kind is None or found is None or found == kind


def run_slug(run_id: str) -> str:
    """The readable middle of an id like 20261121-101500-digits-vae-3fa2."""
    parts = run_id.split("-")
    return "-".join(parts[2:-1]) if len(parts) > 3 else run_id
