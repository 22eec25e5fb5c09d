"""UG-VAE wired in: group orders as dataset options, the digits-domains dataset, the trainer's
one-group-per-step stream for a GroupedBatch model (and its refusals), and the presets."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from engine.data import dataset_info, load_dataset
from engine.data.groups import MIXED, SERIES, GroupOrder, label_groups, random_groups, series_digits
from engine.errors import AtlasError
from engine.loading import load_run_model
from engine.models import build_model
from engine.models.ugvae import UGVAE
from engine.store import Run
from engine.training import FollowerRun, RunSpec, TrainConfig, Trainer, train
from engine.training.distributed import Distributed

TINY = {
    "input_shape": [1, 8, 8],
    "components": 3,
    "local_dim": 2,
    "global_dim": 2,
    "hidden": [16],
    "cluster_hidden": 8,
    "prior_hidden": 8,
}


def tiny_ugvae(**overrides) -> UGVAE:
    torch.manual_seed(0)
    return build_model("ugvae", {**TINY, **overrides})


def trainer(model, data, **config) -> Trainer:
    return Trainer(model, data, data, TrainConfig(device="cpu", progress=False, **config), FollowerRun())


# -- group orders as dataset options ----------------------------------------------------------------
def test_a_group_order_is_recorded_for_the_training_split_only():
    train_data = load_dataset("digits", split="train", seed=2, group_by="label", group_size=16, random_share=0.25)
    order = train_data.meta["group_order"]
    assert isinstance(order, GroupOrder) and (order.by, order.size, order.factor) == ("label", 16, "digit")
    assert order.random_share == 0.25 and torch.equal(order.labels, train_data.labels["digit"].values)
    assert "group_order" not in load_dataset("digits", split="test", seed=2, group_by="label").meta
    assert "group_order" not in load_dataset("digits", split="train").meta
    assert load_dataset("digits", split="all", group_by="random").meta["group_order"].by == "random"
    for option in ("group_by", "group_size", "group_factor", "random_share"):
        assert option in dataset_info("digits").options and option in dataset_info("wine").options
    assert "group_by" not in dataset_info("exchangeable").options
    # the same digits as without the option
    assert torch.equal(train_data.x, load_dataset("digits", split="train", seed=2).x)


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("digits", {"group_by": "parity"}, "unknown group_by 'parity'; choose one of random, label, series, domains"),
        ("digits", {"group_size": 16}, r"group options without group_by \(group_size\); set group_by to one of random"),
        ("digits", {"group_by": "series", "random_share": 0.2}, "random_share applies to label groups only"),
        ("digits", {"group_by": "label", "random_share": 1.0}, r"random_share must be a number in \[0, 1\)"),
        ("digits", {"group_by": "random", "group_factor": "digit"}, "random groups follow no label"),
        ("digits", {"group_by": "label", "group_factor": "colour"}, "name one of its categorical labels \\(digit\\)"),
        ("digits", {"group_by": "domains"}, "needs the categorical label 'domain'"),
        ("digits", {"group_by": "domains", "group_factor": "digit"}, "exactly two domains; 'digit' has 10"),
        ("facet-digits", {"n": 200, "group_by": "series", "group_factor": "stroke"}, "10 values 0..9; 'stroke' has 5"),
        ("diabetes", {"group_by": "label"}, "needs a categorical label, and 'diabetes' has none"),
        ("digits", {"group_by": "label", "group_size": 400}, "groups of 400 need at least 400 examples of one label"),
        ("digits", {"group_by": "random", "group_size": 0}, "group_size must be a positive integer"),
        ("exchangeable", {"n": 50, "group_by": "random"}, "holds sequences"),
    ],
)
def test_group_options_the_data_cannot_take_are_refused_with_what_to_do(name, options, message):
    with pytest.raises(AtlasError, match=message):
        load_dataset(name, split="train", **options)


def test_an_unknown_option_lists_the_group_options_too():
    with pytest.raises(AtlasError, match="group_by \\(default None\\).*random_share \\(default 0.0\\)"):
        load_dataset("digits", group="label")


# -- digits-domains ----------------------------------------------------------------------------------
def test_digits_domains_are_the_digits_half_of_them_inverted():
    for split in ("train", "test"):
        data = load_dataset("digits-domains", split=split, seed=5)
        plain = load_dataset("digits", split=split, seed=5)
        domain = data.labels["domain"].values
        assert data.labels["domain"].categories == ["digits", "inverted"]
        assert torch.equal(data.meta["source_index"], plain.meta["source_index"])
        assert torch.equal(data.labels["digit"].values, plain.labels["digit"].values)
        assert torch.equal(data.x[domain == 0], plain.x[domain == 0])
        assert torch.equal(data.x[domain == 1], 1.0 - plain.x[domain == 1])
        assert 0.4 < float(domain.float().mean()) < 0.6
    every = load_dataset("digits-domains", split="all", seed=5).labels["domain"].values
    assert int(every.sum()) == 1797 // 2  # exactly half of all the images, whatever the split
    other = load_dataset("digits-domains", split="all", seed=6).labels["domain"].values
    assert not torch.equal(every, other)
    # a split's domains are its images' domains: the same image is in the same domain in "all"
    train = load_dataset("digits-domains", split="train", seed=5)
    position = {int(s): i for i, s in enumerate(load_dataset("digits", split="all", seed=5).meta["source_index"])}
    rows = torch.tensor([position[int(s)] for s in train.meta["source_index"]])
    assert torch.equal(every[rows], train.labels["domain"].values)


# -- the trainer's group stream ---------------------------------------------------------------------
def test_a_grouped_model_trains_on_one_group_of_the_data_order_per_step():
    """The batch at each step is the group the order gives for its epoch and position, computed
    here from engine.data.groups directly; an epoch uses each of its groups once; label groups
    hold one digit each, and the order is a function of (seed, step)."""
    data = load_dataset("digits", split="train", group_by="label")
    digits = data.labels["digit"].values
    t = trainer(tiny_ugvae(), data, batch_size=32, seed=4)
    expected_per_epoch = int(sum(np.bincount(digits.numpy()) // 32))
    assert t.steps_per_epoch == expected_per_epoch
    for epoch in (0, 1):
        groups, kinds = label_groups(digits, 32, seed=4, epoch=epoch)
        for position in range(t.steps_per_epoch):
            step = epoch * t.steps_per_epoch + position
            index = t.batch_indices(step)
            assert torch.equal(index, groups[position])
            assert (digits[index] == kinds[position]).all()
        (x,) = t.inputs(epoch * t.steps_per_epoch + 3)
        assert torch.equal(x, data.x[groups[3]])
    again = trainer(tiny_ugvae(), data, batch_size=32, seed=4)
    assert torch.equal(again.batch_indices(57), t.batch_indices(57))
    assert not torch.equal(trainer(tiny_ugvae(), data, batch_size=32, seed=5).batch_indices(57), t.batch_indices(57))


def test_without_group_options_a_grouped_model_trains_on_random_groups():
    data = load_dataset("digits", split="train")
    t = trainer(tiny_ugvae(), data, batch_size=64, seed=1)
    assert t.steps_per_epoch == len(data) // 64
    epoch = torch.stack([t.batch_indices(s) for s in range(t.steps_per_epoch)])
    assert torch.equal(epoch, random_groups(len(data), 64, seed=1, epoch=0)[0])
    assert len(torch.unique(epoch)) == epoch.numel()  # no example twice in an epoch
    next_epoch = t.batch_indices(t.steps_per_epoch)
    assert torch.equal(next_epoch, random_groups(len(data), 64, seed=1, epoch=1)[0][0])


def test_series_and_domain_orders_give_their_groups():
    data = load_dataset("digits", split="train", group_by="series")
    t = trainer(tiny_ugvae(), data, batch_size=12)
    assert t.steps_per_epoch == len(SERIES) * (len(data) // (len(SERIES) * 12))
    series = {tuple(series_digits(name, 12)) for name in SERIES}
    for step in range(10):
        assert tuple(data.labels["digit"].values[t.batch_indices(step)].tolist()) in series
    domains = load_dataset("digits-domains", split="train", group_by="domains")
    t = trainer(tiny_ugvae(), domains, batch_size=20)
    halves = [domains.labels["domain"].values[t.batch_indices(s)] for s in range(t.steps_per_epoch)]
    assert all(int(h.sum()) == 10 for h in halves)  # 10 digits and 10 inverted digits in every group
    assert domains.meta["group_order"].groups(20)[1].eq(MIXED).all()
    used = torch.cat([t.batch_indices(s) for s in range(t.steps_per_epoch)])
    assert len(torch.unique(used)) == len(used)


def test_a_group_is_never_cut_and_its_size_is_the_batch_size():
    data = load_dataset("digits", split="train")
    with pytest.raises(AtlasError, match="cannot be cut into train.micro_batches=2 pieces"):
        trainer(tiny_ugvae(), data, batch_size=64, micro_batches=2)
    config = TrainConfig(batch_size=64, device="cpu", progress=False)
    with pytest.raises(AtlasError, match="cannot be split over 2 processes; train it in one process"):
        Trainer(tiny_ugvae(), data, data, config, FollowerRun(), Distributed(rank=0, world_size=2))
    sized = load_dataset("digits", split="train", group_by="random", group_size=32)
    with pytest.raises(AtlasError, match="group_size=32 differs from train.batch_size=64"):
        trainer(tiny_ugvae(), sized, batch_size=64)
    assert trainer(tiny_ugvae(), sized, batch_size=32).steps_per_epoch == len(data) // 32
    vae = build_model("vae", {"input_shape": [1, 8, 8], "latent_dim": 2})
    with pytest.raises(AtlasError, match="not groups of a shared latent; drop the group options"):
        trainer(vae, sized, batch_size=32)
    # models without a shared latent keep their plain batches, micro-batches and all
    assert trainer(vae, data, batch_size=64, micro_batches=2).groups is None


def test_a_grouped_model_is_evaluated_on_test_groups_of_its_group_size():
    data = load_dataset("digits", split="train")
    t = trainer(tiny_ugvae(), data, batch_size=64, seed=3)
    batches = t.eval_batches(300)
    assert [len(b) for b in batches] == [64] * 4
    assert len(torch.unique(torch.cat(batches))) == 256 and int(torch.cat(batches).max()) < 300
    assert [len(b) for b in t.eval_batches(40)] == [40]  # fewer test examples than a group: one group
    vae = build_model("vae", {"input_shape": [1, 8, 8], "latent_dim": 2})
    assert [len(b) for b in trainer(vae, data, batch_size=64).eval_batches(1200)] == [500, 500, 200]


# -- presets ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("preset", "variant", "dataset"),
    [
        ("digits-ugvae", "ugvae", "digits"),
        ("digits-mlvae", "mlvae", "digits"),
        ("digits-domains-ugvae", "ugvae", "digits-domains"),
        ("facet-digits-ugvae", "ugvae", "facet-digits"),
    ],
)
def test_the_presets_train_and_load_back(preset, variant, dataset, tmp_path):
    settings = {"steps": 4, "eval_every": 4, "checkpoint_every": 4, "eval_examples": 130, "progress": False}
    run = train(RunSpec.from_preset(preset, {"train": settings}), runs_root=str(tmp_path))
    assert run.status.state == "finished"
    config = json.loads((run.dir / "config.json").read_text())
    assert config["family"] == "ugvae" and config["data"]["name"] == dataset and "group_by" in config["data"]["options"]
    loaded = load_run_model(Run.from_dir(run.dir, readonly=True))
    assert isinstance(loaded.model, UGVAE) and loaded.model.config.variant == variant and loaded.step == 4
    assert loaded.model.config.components == (1 if variant == "mlvae" else 10)
    step, elbo = run.metrics.latest("test/elbo")
    assert step == 4 and np.isfinite(elbo)
    pixels = int(np.prod(loaded.model.config.input_shape))
    assert -2 * pixels < elbo < 0  # 4 steps from the initial weights: near a coin per pixel (log 2 nats each)
