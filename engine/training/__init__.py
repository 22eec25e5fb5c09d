"""Training: a run spec (model family + data + training config) -> a run in the store.

    from engine.training import RunSpec, train
    run = train(RunSpec.from_preset("digits-vae"), runs_root="runs")

Both `train` and `resume` also run under `torchrun` (one process per GPU or CPU worker):
rank 0 creates and writes the run, and the other ranks return a `FollowerRun`.

Layer 4 of the engine (beside store, which it imports): imports the layers below and the
store; never projection, loading, importing or the CLI.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

from engine.data import load_dataset
from engine.data.base import Dataset
from engine.device import seed_everything
from engine.errors import AtlasError
from engine.models import FAMILIES, build_model, config_from_dict
from engine.models.base import FieldsFromData
from engine.store import Run, RunStore
from engine.training.distributed import FollowerRun, launch
from engine.training.presets import get_preset
from engine.training.trainer import TrainConfig, Trainer

UNIT_INTERVAL_LIKELIHOODS = ("bernoulli", "dmol")  # their log-probabilities assume data in [0, 1]


@dataclass
class RunSpec:
    """Everything needed to (re)build a run's model and data; saved as config.json."""

    family: str
    model: dict
    data: dict  # {"name": ..., "options": {...}}
    train: TrainConfig = field(default_factory=TrainConfig)
    preset: str | None = None

    @classmethod
    def from_preset(cls, name: str, overrides: dict | None = None) -> RunSpec:
        p = copy.deepcopy(get_preset(name))
        for section, values in (overrides or {}).items():
            if section not in ("model", "data", "train"):
                raise AtlasError(f"unknown config section {section!r}; use model, data or train")
            p[section].update(values)
        return cls.from_dict({**p, "preset": name})

    @classmethod
    def from_dict(cls, d: dict) -> RunSpec:
        if not isinstance(d, dict) or "family" not in d or "data" not in d:
            raise AtlasError("config.json must be an object with 'family', 'model', 'data' and 'train'")
        data = d["data"]
        if not isinstance(data, dict) or "name" not in data:
            raise AtlasError("config.json 'data' must be an object with a dataset 'name'")
        train = d.get("train", {})
        try:
            train_cfg = TrainConfig(**train)
        except TypeError as err:
            raise AtlasError(f"invalid train config in config.json: {err}") from err
        return cls(
            family=d["family"],
            model=dict(d.get("model", {})),
            data={"name": data["name"], "options": dict(data.get("options", {}))},
            train=train_cfg,
            preset=d.get("preset"),
        )

    def to_dict(self) -> dict:
        return {
            "family": self.family,
            "model": self.model,
            "data": self.data,
            "train": self.train.to_dict(),
            "preset": self.preset,
        }

    def load_data(self, split: str) -> Dataset:
        return load_dataset(self.data["name"], split=split, seed=self.train.seed, **self.data["options"])

    def model_config(self, train_data: Dataset) -> dict:
        """The model config with what the data decides filled in (input shape, N)."""
        values = dict(self.model)
        values["input_shape"] = list(train_data.shape)
        likelihood = values.get("likelihood")
        low, high = train_data.value_range
        if likelihood in UNIT_INTERVAL_LIKELIHOODS and (low < 0 or high > 1):
            raise AtlasError(
                f"a {likelihood!r} likelihood models values in [0, 1], and the data set {train_data.name!r} ranges "
                f"over [{low:g}, {high:g}]; choose likelihood 'gaussian' for it"
            )
        config_cls = FAMILIES.get(self.family, (None,))[0]
        if config_cls is not None and issubclass(config_cls, FieldsFromData):  # N, a table's columns, ...
            values.update(config_cls.fields_from_data(train_data))
        return config_from_dict(self.family, values).to_dict()


def train(spec: RunSpec, runs_root: str = "runs", name: str | None = None) -> Run | FollowerRun:
    """Create a run for `spec` and train it to the end."""
    train_data, test_data = spec.load_data("train"), spec.load_data("test")
    spec.model = spec.model_config(train_data)
    with launch(spec.train.device) as dist:
        if dist.is_main:
            run = RunStore(runs_root).create_run(spec.to_dict(), name_hint=name or spec.preset or spec.family)
        else:
            run = FollowerRun()
        seed_everything(spec.train.seed)  # the initial weights depend on the seed alone
        model = build_model(spec.family, spec.model)
        return Trainer(model, train_data, test_data, spec.train, run, dist).fit()


def resume(run: Run, steps: int | None = None) -> Run | FollowerRun:
    """Continue a run from its latest checkpoint (optionally to a new step count)."""
    spec = RunSpec.from_dict(run.config)
    if steps is not None:
        spec.train.steps = steps
    train_data, test_data = spec.load_data("train"), spec.load_data("test")
    with launch(spec.train.device) as dist:
        model = build_model(spec.family, spec.model)
        follower_or_run = run if dist.is_main else FollowerRun(run)  # every process reads the checkpoint
        return Trainer(model, train_data, test_data, spec.train, follower_or_run, dist).fit()


__all__ = ["FollowerRun", "RunSpec", "TrainConfig", "Trainer", "resume", "train"]


def finished_run_like(spec: RunSpec, runs_root: str) -> Run | None:
    """A finished run under runs_root whose config is exactly what `spec` would train
    (settings added since it was written filled in with their defaults), or None."""
    import json

    want = RunSpec.from_dict(spec.to_dict())
    want.model = want.model_config(want.load_data("train"))

    def normal(s: RunSpec) -> dict:  # as JSON holds it
        return json.loads(json.dumps(s.to_dict()))

    for info in RunStore(runs_root).list_runs():
        if info.status == "finished" and normal(RunSpec.from_dict(Run.from_dir(info.dir).config)) == normal(want):
            return Run.from_dir(info.dir, readonly=True)
    return None


def train_or_reuse(spec: RunSpec, runs_root: str, name: str | None = None, reuse: bool = False) -> Run | FollowerRun:
    """With `reuse`, a finished run of exactly this spec from runs_root; else a new one."""
    found = finished_run_like(spec, runs_root) if reuse else None
    if found is not None:
        print(f"reusing {found.dir.name}", flush=True)
        return found
    return train(spec, runs_root=runs_root, name=name)
