"""Label regimes as dataset options and the trainer's two streams (labelled, unlabelled)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from engine.data import dataset_info, load_dataset
from engine.data.base import Dataset, LabelColumn
from engine.data.label_regimes import with_label_regime
from engine.errors import AtlasError
from engine.models import build_model
from engine.store import RunStore
from engine.training import FollowerRun, RunSpec, TrainConfig, Trainer, train


def test_a_regime_marks_the_training_labels_a_model_may_see():
    train_data = load_dataset("digits", split="train", seed=3, label_regime="sus", labelled_fraction=0.2)
    known, digits = train_data.meta["label_known"], train_data.labels["digit"].values
    assert train_data.meta["label_factor"] == "digit" and known.dtype == torch.bool and len(known) == len(train_data)
    for c in range(10):
        members = digits == c
        want = round(0.2 * int(members.sum())) if c < 5 else 0
        assert int(known[members].sum()) == want
    again = load_dataset("digits", split="train", seed=3, label_regime="sus")
    assert torch.equal(again.meta["label_known"], known)
    assert "label_known" not in load_dataset("digits", split="test", seed=3, label_regime="sus").meta
    assert "label_regime" in dataset_info("digits").options


def test_a_regime_the_data_cannot_take_is_refused_with_what_to_do():
    with pytest.raises(AtlasError, match="unknown label regime 'half'"):
        load_dataset("digits", label_regime="half")
    with pytest.raises(AtlasError, match="not a categorical label"):
        load_dataset("digits", label_regime="ss", label_factor="colour")
    with pytest.raises(AtlasError, match="needs a categorical label"):
        load_dataset("diabetes", label_regime="ss")
    with pytest.raises(AtlasError, match="labelled_fraction must be a number"):
        load_dataset("digits", label_regime="ss", labelled_fraction="most")


class Tagged(nn.Module):
    """A deterministic LabelledTraining model whose loss depends on every input and label,
    weighted so that a shuffled or dropped piece changes the gradient."""

    def __init__(self):
        super().__init__()
        self.w = nn.Linear(4, 3)

    def training_loss(self, x):
        return self.w(x).square().mean(), {}

    def labelled_training_loss(self, x, x_labelled, y_labelled):
        unlabelled = self.w(x).square().mean()
        labelled = -torch.log_softmax(self.w(x_labelled), -1).gather(1, y_labelled[:, None]).mean()
        return unlabelled + 2.0 * labelled, {"labelled": labelled.detach()}


def tagged_data(n: int = 60, regime: str = "ss") -> Dataset:
    g = torch.Generator().manual_seed(0)
    labels = {"c": LabelColumn("c", torch.arange(n) % 3, ["a", "b", "c"])}
    data = Dataset("toy", "train", torch.randn(n, 4, generator=g), labels, (4,), (-4.0, 4.0), kind="tabular")
    return with_label_regime(data, label_regime=regime, labelled_fraction=0.5, seed=1)


def test_each_stream_draws_from_its_own_examples_and_the_order_is_a_function_of_the_step():
    data = tagged_data()
    config = TrainConfig(batch_size=10, labelled_batch_size=6, device="cpu", progress=False)
    trainer = Trainer(Tagged(), data, data, config, FollowerRun())
    known = data.meta["label_known"]
    seen_labelled = set()
    for step in range(8):
        x, x_l, y_l = trainer.inputs(step)
        idx = trainer.batch_indices(step)
        assert not known[idx].any() and len(x) == 10
        lidx = trainer.labelled.batch_indices(step)
        assert known[lidx].all() and len(x_l) == 6
        assert torch.equal(y_l, data.labels["c"].values[lidx]) and torch.equal(x_l, data.x[lidx])
        seen_labelled.update(lidx.tolist())
    assert seen_labelled == set(known.nonzero().squeeze(1).tolist())  # every labelled example within an epoch or two
    again = Trainer(Tagged(), data, data, config, FollowerRun())
    assert all(torch.equal(a, b) for a, b in zip(trainer.inputs(5), again.inputs(5)))


def test_without_labels_the_labelled_batch_is_empty():
    data = tagged_data(regime="us")
    trainer = Trainer(Tagged(), data, data, TrainConfig(batch_size=10, device="cpu", progress=False), FollowerRun())
    x, x_l, y_l = trainer.inputs(0)
    assert len(x) == 10 and x_l.shape == (0, 4) and len(y_l) == 0
    assert trainer.steps_per_epoch == 6


@pytest.mark.parametrize("micro_batches", [2, 3])
def test_micro_batches_cut_both_streams_and_keep_the_whole_batch_gradient(micro_batches):
    data = tagged_data()
    grads = {}
    for k in (1, micro_batches):
        torch.manual_seed(0)
        model = Tagged()
        config = TrainConfig(
            batch_size=12, labelled_batch_size=6, micro_batches=k, grad_clip=1e9, device="cpu", progress=False
        )
        trainer = Trainer(model, data, data, config, FollowerRun())
        trainer.train_step(trainer.inputs(2))
        grads[k] = [p.grad.clone() for p in model.parameters()]
    for whole, pieces in zip(grads[1], grads[micro_batches]):
        torch.testing.assert_close(pieces, whole, rtol=1e-5, atol=1e-7)


def test_streams_that_do_not_fit_the_batch_sizes_are_refused():
    data = tagged_data()
    with pytest.raises(AtlasError, match="labelled_batch_size=6 cannot be split evenly"):
        Trainer(
            Tagged(),
            data,
            data,
            TrainConfig(batch_size=12, labelled_batch_size=6, micro_batches=4, device="cpu"),
            FollowerRun(),
        )
    with pytest.raises(AtlasError, match="fewer than train.labelled_batch_size=64"):
        Trainer(Tagged(), data, data, TrainConfig(batch_size=12, labelled_batch_size=64, device="cpu"), FollowerRun())


def test_a_model_that_cannot_use_labels_refuses_a_regime():
    data = load_dataset("digits", split="train", label_regime="ss")
    model = build_model("vae", {"input_shape": [1, 8, 8], "latent_dim": 2})
    with pytest.raises(AtlasError, match="does not learn from labels"):
        Trainer(model, data, data, TrainConfig(device="cpu"), FollowerRun())


def test_the_digits_preset_trains_end_to_end_and_logs_its_cluster_accuracy(tmp_path):
    spec = RunSpec.from_preset(
        "digits-gmdgm", {"train": {"steps": 40, "eval_every": 40, "checkpoint_every": 40, "progress": False}}
    )
    run = train(spec, runs_root=str(tmp_path))
    assert run.status.state == "finished"
    rows = run.metrics.scalars()
    assert 0.0 <= rows["test/acc/digit"][1][-1] <= 1.0 and "train/labelled_bound" in rows
    assert RunStore(str(tmp_path)).list_runs()[0].status == "finished"
