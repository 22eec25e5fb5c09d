"""Families from other packages (engine/models/plugins.py): the example plugin in
plugins/latent-atlas-ppca, installed by ./dev, trains with the atlas's trainer and every page
opens on its run; broken plugins are skipped with their reason and leave the rest working."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path

import pytest
import torch
from torch import nn

from app.navigation import PAGES
from engine.models import FAMILIES, PLUGINS, build_model, family_kind
from engine.models.base import ImportanceWeighted, LatentModel
from engine.models.plugins import ENTRY_POINT_GROUP, PluginFamily, register_plugins
from engine.randomness import random_stream
from engine.store import RunStore
from engine.training import RunSpec, train
from tests.pagetest import assert_clean, open_run_page

pytestmark = pytest.mark.usefixtures("one_thread")


def test_the_installed_example_plugin_adds_its_family():
    assert [e.value for e in entry_points(group=ENTRY_POINT_GROUP) if e.name == "ppca"] == ["latent_atlas_ppca:FAMILY"]
    assert "ppca" in FAMILIES and family_kind("ppca") == "latent" and PLUGINS.errors == []
    assert PLUGINS.sources == {"ppca": "latent_atlas_ppca:FAMILY"}
    model = build_model("ppca", {"input_shape": [1, 8, 8], "latent_dim": 3})
    assert isinstance(model, LatentModel) and isinstance(model, ImportanceWeighted)


def test_the_plugins_bound_meets_its_closed_form_likelihood():
    """The science of the plugin, checked by the atlas: PPCA's marginal is N(b, W W^T + s^2 I), and the
    importance-weighted bound with many draws from any encoder approaches it from below."""
    torch.manual_seed(0)
    model = build_model("ppca", {"input_shape": [1, 4, 4], "latent_dim": 2})
    with torch.no_grad():
        model.weight.normal_()
        model.log_sigma.fill_(-0.5)
    x = torch.randn(3, 1, 4, 4)
    with torch.no_grad(), random_stream(1):
        exact = model.exact_log_likelihood(x)
        elbo = torch.stack([model.elbo(x).total for _ in range(2000)]).mean(0)  # its expectation, nearly
        iwae = model.elbo(x, k=20000).total
    assert torch.all(elbo < exact)
    torch.testing.assert_close(iwae, exact, atol=0.15, rtol=0)


@pytest.fixture(scope="module")
def plugin_run(tmp_path_factory) -> tuple[Path, str]:
    root = tmp_path_factory.mktemp("plugin-runs")
    spec = RunSpec.from_dict(
        {
            "family": "ppca",
            "model": {"latent_dim": 4},
            "data": {"name": "digits", "options": {}},
            "train": {"steps": 60, "batch_size": 64, "eval_every": 30, "checkpoint_every": 30, "progress": False},
        }
    )
    run = train(spec, runs_root=str(root), name="ppca")
    assert run.status.state == "finished"
    (info,) = RunStore(root).list_runs()
    return root, f"runs/{info.id}"


# the pages built on the LatentModel interface alone; the others say which family they need (test_pages.py)
GENERIC = ["home.py", "sample_grids.py", "traversals.py", "latent_map.py", "latent_activity.py"]
GENERIC += ["importance_weights.py", "hmc_chains.py", "robustness.py"]


def test_the_generic_pages_are_pages_of_the_navigation():
    assert set(GENERIC) <= {p.file for p in PAGES}


@pytest.mark.parametrize("file", GENERIC)
def test_every_generic_page_opens_on_the_plugins_run(plugin_run, monkeypatch, file):
    root, key = plugin_run
    at = open_run_page(file, root, monkeypatch, key)
    assert_clean(at)


@dataclass
class GoodConfig:
    input_shape: tuple[int, ...] = (2,)
    family: str = field(default="good", init=False)


class Model(nn.Module):
    pass


@dataclass
class OtherConfig:
    input_shape: tuple[int, ...] = (2,)
    family: str = field(default="good2", init=False)


@dataclass
class NoFamilyField:
    input_shape: tuple[int, ...] = (2,)


GOOD = PluginFamily("good", GoodConfig, Model)


def entry(name: str, value: str) -> EntryPoint:
    return EntryPoint(name=name, value=value, group=ENTRY_POINT_GROUP)


def test_the_cli_lists_the_plugins_family(capsys):
    from engine.cli import main

    assert main(["families"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "ppca       latent     plugin latent_atlas_ppca:FAMILY" in lines
    assert any(line.startswith("vae ") and line.endswith("built in") for line in lines)


def test_broken_plugins_are_skipped_with_their_reason(monkeypatch):
    import sys
    import types

    plugin = types.ModuleType("fake_atlas_plugin")
    plugin.GOOD = GOOD
    plugin.twice = lambda: [GOOD, PluginFamily("vae", GoodConfig, Model)]
    plugin.not_a_family = 42
    plugin.no_family_field = PluginFamily("nofield", NoFamilyField, Model)
    plugin.not_a_module = PluginFamily("good2", OtherConfig, int)
    monkeypatch.setitem(sys.modules, "fake_atlas_plugin", plugin)
    registered = {}

    def register(name, config_cls, model_cls, kind):
        registered[name] = (config_cls, model_cls, kind)

    report = register_plugins(
        register,
        known={"vae"},
        entries=[
            entry("good", "fake_atlas_plugin:GOOD"),
            entry("twice", "fake_atlas_plugin:twice"),
            entry("missing", "no_such_module_here:FAMILY"),
            entry("number", "fake_atlas_plugin:not_a_family"),
            entry("nofield", "fake_atlas_plugin:no_family_field"),
            entry("notmodule", "fake_atlas_plugin:not_a_module"),
        ],
    )
    assert registered == {"good": (GoodConfig, Model, "latent")}
    assert report.sources == {"good": "fake_atlas_plugin:GOOD"}
    reasons = dict(e.split(" ", 1) for e in report.errors)
    assert "exists already" in reasons["twice"]  # "good" was just registered, and so is "vae"
    assert "No module named" in reasons["missing"]
    assert "not a PluginFamily" in reasons["number"]
    assert "field `family" in reasons["nofield"]
    assert "not a torch.nn.Module" in reasons["notmodule"]


# -- a single model from the user's code: latent-atlas app --model package.module:factory --------------

FACTORY = "latent_atlas_ppca:fitted_digits"


@pytest.fixture
def factory_registered(monkeypatch):
    """FAMILIES as it was before the test, whatever the test registers."""
    from engine import models

    monkeypatch.setattr(models, "FAMILIES", dict(models.FAMILIES))
    monkeypatch.setattr(models, "FAMILY_KINDS", dict(models.FAMILY_KINDS))
    import engine.adapters

    monkeypatch.setattr(engine.adapters, "FAMILIES", models.FAMILIES)
    monkeypatch.setattr(engine.adapters, "register_family", models.register_family)
    return models


def test_app_with_model_writes_one_run_of_the_factorys_model_and_passes_the_flag_on(
    tmp_path, monkeypatch, factory_registered
):
    """The CLI builds the model once before the server starts, keeps it as a finished run (the
    same run on the next start), and hands the flag to the server's processes."""
    from engine import cli
    from engine.loading import load_run_model

    started = []
    monkeypatch.setattr(cli.os, "execve", lambda path, command, env: started.append(env))
    root = tmp_path / "runs"
    for _ in range(2):
        assert cli.main(["--runs-dir", str(root), "app", "--model", FACTORY, "--data", "digits"]) is None
    assert [env["LATENT_ATLAS_MODEL"] for env in started] == [FACTORY, FACTORY]
    (info,) = RunStore(root).list_runs()
    run = RunStore(root).open_run(info.id)
    assert run.config["family"] == FACTORY and info.status == "finished"
    model = load_run_model(run).model
    x = torch.as_tensor(RunSpec.from_dict(run.config).load_data("test").x[:4]).float()
    with torch.no_grad():  # its encoder is the exact posterior, so every importance weight is p(x)
        log_w, _, _ = model.log_weights(x, 3)
        exact = model.exact_log_likelihood(x)
    torch.testing.assert_close(log_w, exact.expand(3, -1), atol=1e-3, rtol=0)


@pytest.mark.parametrize("file", ["sample_grids.py", "traversals.py"])
def test_the_factorys_model_opens_in_the_pages(tmp_path, monkeypatch, factory_registered, file):
    from engine.adapters import add_model_run

    run = add_model_run(FACTORY, tmp_path, {"name": "digits", "options": {}})
    assert_clean(open_run_page(file, tmp_path, monkeypatch, f"runs/{run.id}"))


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("latent_atlas_ppca", "expected package.module:factory"),
        ("no_such_package_here:make", "No module named 'no_such_package_here'"),
        ("latent_atlas_ppca:FAMILY", "is a PluginFamily, not a function that returns a model"),
        ("latent_atlas_ppca:LOG_2PI", "is a float, not a function"),
        ("latent_atlas_ppca:PPCAConfig", "returned a PPCAConfig, not a torch.nn.Module"),
    ],
)
def test_a_bad_factory_is_refused_with_its_reason_and_no_run(tmp_path, factory_registered, spec, message):
    from engine.adapters import add_model_run
    from engine.errors import AtlasError

    with pytest.raises(AtlasError, match=re.escape(message)):
        add_model_run(spec, tmp_path, {"name": "digits", "options": {}})
    assert not any(tmp_path.iterdir())


def test_app_with_model_and_no_data_says_what_is_missing(tmp_path, capsys):
    from engine import cli

    assert cli.main(["--runs-dir", str(tmp_path), "app", "--model", FACTORY]) == 2
    assert "--model needs --data NAME" in capsys.readouterr().err
