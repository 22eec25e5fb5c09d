"""Training under torchrun (DDP on gloo, two CPU processes) against one process with
gradient accumulation, and gradient accumulation against one whole batch."""

import os
import subprocess
import sys

import pytest
import torch
from torch import nn

from engine.data.base import Dataset
from engine.errors import AtlasError
from engine.store import RunStore
from engine.training import FollowerRun, RunSpec, TrainConfig, Trainer, train
from engine.training.distributed import Distributed, rank_device

# digits-vae, 20 steps of a global batch of 64; logged every 5, evaluated and saved every 10
SETTINGS = {
    "steps": 20,
    "batch_size": 64,
    "log_every": 5,
    "eval_every": 10,
    "checkpoint_every": 10,
    "eval_examples": 100,
    "device": "cpu",
}


def torchrun(*args, runs_dir):
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "engine.cli",
        "--runs-dir",
        str(runs_dir),
        "train",
        "--quiet",
        *args,
    ]
    out = subprocess.run(
        command, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]
    return out.stdout


def test_two_processes_match_one_process_with_two_micro_batches(tmp_path):
    """Two processes with one shard each compute the update one process computes from two
    micro-batches: the same pieces of the global batch with the same noise. A run stopped at
    step 10 and resumed under torchrun continues that trajectory."""
    sets = [arg for k, v in {**SETTINGS, "steps": 10}.items() for arg in ("--set", f"train.{k}={v}")]
    first = torchrun("--preset", "digits-vae", *sets, runs_dir=tmp_path / "ddp")
    (run_dir,) = (tmp_path / "ddp").iterdir()  # rank 0 alone created a run
    assert first.count("run ") == 1 and run_dir.name in first  # and rank 0 alone reported it
    again = torchrun("--resume", run_dir.name, "--steps", "20", runs_dir=tmp_path / "ddp")
    assert again.count("run ") == 1 and "finished" in again
    assert [p.name for p in (tmp_path / "ddp").iterdir()] == [run_dir.name]

    ddp = RunStore(tmp_path / "ddp").open_run(run_dir.name)
    single = train(
        RunSpec.from_preset("digits-vae", {"train": {**SETTINGS, "micro_batches": 2, "progress": False}}),
        tmp_path / "single",
    )
    a, _ = ddp.load_checkpoint("latest")
    b, _ = single.load_checkpoint("latest")
    assert ddp.latest_checkpoint().step == single.latest_checkpoint().step == 20
    weights = [k for k in b if k.startswith(("model.", "optim."))]
    assert set(weights) <= set(a) and len(weights) > 10
    # On one CPU the two agree to the bit (dividing by 2 processes is exact, and a sum of two is
    # the same in either order); the tolerance leaves room for kernels that split work
    # differently with a different thread count. Gradients not synchronised, or pieces with
    # different noise or data, move some weights by more than 1e-3 after 20 Adam steps.
    for name in weights:
        torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=1e-6, msg=name)

    for name, steps in (("train/loss", [5, 10, 15, 20]), ("test/elbo", [10, 20])):
        got_steps, got = ddp.metrics.scalars([name])[name]
        want_steps, want = single.metrics.scalars([name])[name]
        assert list(got_steps) == list(want_steps) == steps  # once per logged step, resumed or not
        torch.testing.assert_close(torch.tensor(list(got)), torch.tensor(list(want)), rtol=1e-5, atol=1e-5)
    assert ddp.status.state == "finished"


class Regression(nn.Module):
    """A deterministic loss: the gradient of a mean over the batch, no noise."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 1))

    def training_loss(self, x):
        loss = (self.net(x[:, :5]).squeeze(-1) - x[:, 5]).square().mean()
        return loss, {"mse": loss.detach()}


def table(n: int) -> Dataset:
    x = torch.randn(n, 6, generator=torch.Generator().manual_seed(1))
    return Dataset("table", "train", x, {}, (6,), (-4.0, 4.0), kind="tabular")


@pytest.mark.parametrize("micro_batches", [2, 4])
def test_micro_batches_give_the_gradient_of_the_whole_batch(micro_batches):
    data = table(48)
    x = data.batch(torch.arange(24))
    grads, metrics = {}, {}
    for k in (1, micro_batches):
        torch.manual_seed(0)
        model = Regression()
        config = TrainConfig(batch_size=24, micro_batches=k, grad_clip=1e9, device="cpu", progress=False)
        trainer = Trainer(model, data, data, config, FollowerRun())
        metrics[k] = trainer.train_step(x)
        grads[k] = [p.grad.clone() for p in model.parameters()]
    torch.manual_seed(0)
    reference = Regression()
    reference.training_loss(x)[0].backward()
    for whole, pieces, want in zip(grads[1], grads[micro_batches], reference.parameters()):
        torch.testing.assert_close(pieces, whole, rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(whole, want.grad)
    assert metrics[micro_batches]["loss"] == pytest.approx(metrics[1]["loss"], rel=1e-6)
    assert metrics[micro_batches]["grad_norm"] == pytest.approx(metrics[1]["grad_norm"], rel=1e-5)


def test_a_batch_that_does_not_split_evenly_is_refused():
    data = table(48)
    with pytest.raises(AtlasError, match="multiple of 4"):
        Trainer(Regression(), data, data, TrainConfig(batch_size=10, micro_batches=4), FollowerRun())
    three = Distributed(rank=1, world_size=3)  # as a torchrun job of three processes would see it
    with pytest.raises(AtlasError, match="over 3 process.*micro_batches=2; make it a multiple of 6"):
        Trainer(Regression(), data, data, TrainConfig(batch_size=16, micro_batches=2), FollowerRun(), three)
    with pytest.raises(AtlasError, match="micro_batches"):
        TrainConfig(micro_batches=0)


def test_under_torchrun_a_process_owns_its_gpu_or_uses_the_cpu():
    assert rank_device("cpu", 3) == torch.device("cpu")
    for device in ("mps", "cuda:1"):
        with pytest.raises(AtlasError, match="cuda:LOCAL_RANK"):
            rank_device(device, 0)


def test_two_processes_split_both_label_streams_as_two_micro_batches_do(tmp_path):
    """GM-DGM on semi-unsupervised digits: each process takes half of the unlabelled and half
    of the labelled batch, so two processes reach the weights one process reaches with two
    micro-batches."""
    settings = {**SETTINGS, "steps": 4, "eval_every": 4, "checkpoint_every": 4, "labelled_batch_size": 32}
    sets = [arg for k, v in settings.items() for arg in ("--set", f"train.{k}={v}")]
    torchrun("--preset", "digits-gmdgm", *sets, "--set", "model.components=10", runs_dir=tmp_path / "ddp")
    (run_dir,) = (tmp_path / "ddp").iterdir()
    ddp = RunStore(tmp_path / "ddp").open_run(run_dir.name)
    overrides = {"train": {**settings, "micro_batches": 2, "progress": False}, "model": {"components": 10}}
    single = train(RunSpec.from_preset("digits-gmdgm", overrides), tmp_path / "single")
    a, _ = ddp.load_checkpoint("latest")
    b, _ = single.load_checkpoint("latest")
    weights = [k for k in b if k.startswith("model.")]
    assert len(weights) > 10
    for name in weights:
        torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=1e-6, msg=name)
    assert "train/labelled_bound" in ddp.metrics.scalars()
