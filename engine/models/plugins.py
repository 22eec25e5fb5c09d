"""Model families from other packages: a package that declares an entry point in the group
``latent_atlas.families`` adds its families beside the built-in ones, and every generic
page, the trainer and the CLI then take them like any other.

In the plugin's pyproject.toml:

    [project.entry-points."latent_atlas.families"]
    ppca = "latent_atlas_ppca:FAMILY"

where the named object is a `PluginFamily`, a list of them, or a function returning either.
The config is a dataclass with the per-example `input_shape`, a `family` field
(`field(default=NAME, init=False)`) and `to_dict()`; the model is a torch module built from
the config that implements `engine.models.base.LatentModel` (and whichever optional
abilities it has, declared through the Protocols there; the pages that need an ability a
model lacks say which). Installing such a package is the user's choice to run its code;
nothing in a run folder or an upload names a plugin to import.

A single model object can come in without a package: `latent-atlas app --model
package.module:factory --data NAME` sets LATENT_ATLAS_MODEL, and the family of that name is
the model the factory returns (called with no arguments; the same weights each call, or
the run's checkpoint decides them). That too runs the user's code by their choice only.

A plugin that fails to import, names a family that exists already or declares something
else is skipped: its reason is kept in `engine.models.PLUGINS.errors` (the Home page and
`latent-atlas families` show them), and the built-in families still load.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points

import torch
from torch import nn

ENTRY_POINT_GROUP = "latent_atlas.families"
FACTORY_ENV = "LATENT_ATLAS_MODEL"  # package.module:factory, set by `latent-atlas app --model`


@dataclass(frozen=True)
class PluginFamily:
    """A family a package adds: its name, its config dataclass, its model class and its kind
    ("latent", "sequence" or "diffusion", as for the built-in families)."""

    name: str
    config_cls: type
    model_cls: type
    kind: str = "latent"


def _families_of(entry: EntryPoint) -> list[PluginFamily]:
    found = entry.load()
    if callable(found) and not isinstance(found, PluginFamily) and not isinstance(found, type):
        found = found()
    families = [found] if isinstance(found, PluginFamily) else list(found) if isinstance(found, list | tuple) else []
    if not families or not all(isinstance(f, PluginFamily) for f in families):
        raise TypeError(
            f"{entry.value} is a {type(found).__name__}, not a PluginFamily (or a list of them, or a function "
            "returning them); see engine/models/plugins.py"
        )
    return families


def _check(family: PluginFamily, known: Iterable[str]) -> None:
    if family.name in known:
        raise ValueError(f"it names the family {family.name!r}, which exists already; choose another name")
    if not dataclasses.is_dataclass(family.config_cls):
        raise TypeError(f"its config {family.config_cls!r} is not a dataclass")
    fields = {f.name: f for f in dataclasses.fields(family.config_cls)}
    if "family" not in fields or fields["family"].default != family.name or fields["family"].init:
        raise TypeError(
            f"its config needs a field `family: str = field(default={family.name!r}, init=False)`, "
            "which is how a saved run names its family"
        )
    if "input_shape" not in fields:
        raise TypeError("its config needs an `input_shape` field, which the trainer fills from the data")
    if not (isinstance(family.model_cls, type) and issubclass(family.model_cls, nn.Module)):
        raise TypeError(f"its model {family.model_cls!r} is not a torch.nn.Module class")


@dataclass
class PluginReport:
    """What loading the plugins did: the entry point each plugin family came from
    ({family: "module:object"}), and why each failed plugin was skipped."""

    sources: dict[str, str] = dataclasses.field(default_factory=dict)
    errors: list[str] = dataclasses.field(default_factory=list)


def register_plugins(
    register: Callable[[str, type, type, str], None],
    known: Iterable[str],
    entries: Iterable[EntryPoint] | None = None,
) -> PluginReport:
    """Register every plugin family with `register(name, config_cls, model_cls, kind)`,
    skipping the ones that fail, each with its reason "entry point (value): reason"."""
    report = PluginReport()
    known = set(known)
    for entry in entry_points(group=ENTRY_POINT_GROUP) if entries is None else entries:
        try:
            for family in _families_of(entry):
                _check(family, known)
                register(family.name, family.config_cls, family.model_cls, family.kind)
                known.add(family.name)
                report.sources[family.name] = entry.value
        except Exception as err:  # a broken plugin must not take the built-in families down with it
            report.errors.append(f"{entry.name} ({entry.value}): {err}")
    factory = os.environ.get(FACTORY_ENV, "")
    if factory:
        try:
            family = factory_family(factory, known)
            register(family.name, family.config_cls, family.model_cls, family.kind)
            report.sources[family.name] = factory
        except Exception as err:  # noqa: BLE001 - reported like a broken plugin
            report.errors.append(f"--model {factory}: {err}")
    return report


def factory_family(spec: str, known: Iterable[str] = ()) -> PluginFamily:
    """The family `spec` ("package.module:factory"): its config holds only the input shape,
    and building it calls the factory, which must return a torch module."""
    module_name, sep, attribute = spec.partition(":")
    names = [*module_name.split("."), *attribute.split(".")]
    if not sep or not all(name.isidentifier() for name in names):
        raise ValueError(f"expected package.module:factory (a module to import and a function in it), got {spec!r}")
    if spec in known:
        raise ValueError(f"{spec!r} names a family that exists already")
    factory = importlib.import_module(module_name)
    for name in attribute.split("."):
        factory = getattr(factory, name)
    if not callable(factory):
        raise TypeError(f"{spec} is a {type(factory).__name__}, not a function that returns a model")

    def build(config) -> nn.Module:
        with torch.device("cpu"):  # also where the size check builds on "meta": the factory may load weights
            model = factory()
        if not isinstance(model, nn.Module):
            raise TypeError(f"{spec}() returned a {type(model).__name__}, not a torch.nn.Module")
        return model

    config_cls = dataclasses.make_dataclass(
        "FactoryConfig",
        [
            ("input_shape", tuple, dataclasses.field(default=())),
            ("family", str, dataclasses.field(default=spec, init=False)),
        ],
        namespace={"to_dict": lambda self: {"input_shape": list(self.input_shape)}},
    )
    return PluginFamily(spec, config_cls, build)
