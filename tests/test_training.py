"""The trainer: exact resumption, checkpoints, skipped steps, the IWAE bound on a
trained model, and loading a run back."""

import pytest
import torch
from conftest import TINY_TRAIN

from engine.errors import AtlasError
from engine.loading import evaluate_bounds, load_run_model
from engine.models import build_model
from engine.numerics import logmeanexp
from engine.store import RunStore
from engine.training import RunSpec, resume, train
from engine.training.checkpointing import pack_training_state
from engine.training.trainer import Trainer

SHORT = {**TINY_TRAIN, "steps": 60, "log_every": 10, "eval_every": 20, "checkpoint_every": 20, "keep_checkpoints": 5}


def weights(run) -> dict[str, torch.Tensor]:
    tensors, _ = run.load_checkpoint(run.latest_checkpoint().step)
    return tensors


@pytest.mark.parametrize("objective", ["elbo", "beta-tcvae"])
def test_resume_continues_the_same_trajectory(tmp_path, objective):
    overrides = {"train": {**SHORT, "ema_decay": 0.9}, "model": {"objective": objective, "beta": 3.0}}
    straight = train(RunSpec.from_preset("digits-vae", overrides), tmp_path / "a")
    # the same run stopped at step 40 ...
    stopped = train(
        RunSpec.from_preset("digits-vae", {**overrides, "train": {**overrides["train"], "steps": 40}}), tmp_path / "b"
    )
    assert stopped.latest_checkpoint().step == 40
    resumed = resume(stopped, steps=60)  # ... and resumed to 60
    a, b = weights(straight), weights(resumed)
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    steps_a, loss_a = straight.metrics.scalars(["train/loss"])["train/loss"]
    steps_b, loss_b = resumed.metrics.scalars(["train/loss"])["train/loss"]
    assert list(steps_a) == list(steps_b)  # no duplicated or missing metric rows
    assert list(loss_a) == list(loss_b)


def test_resume_truncates_metrics_logged_after_the_checkpoint(tmp_path):
    run = train(RunSpec.from_preset("digits-vae", {"train": SHORT}), tmp_path)
    run.metrics.log_scalars(70, {"train/loss": 123.0})  # as if logged after the last checkpoint
    resume(run, steps=80)
    steps, values = run.metrics.scalars(["train/loss"])["train/loss"]
    assert 123.0 not in list(values)
    assert list(steps) == sorted(set(steps))


def test_checkpoint_round_trip_is_bit_exact(tmp_path, trained_digits_run):
    loaded = load_run_model(trained_digits_run)
    tensors, meta = pack_training_state(loaded.model, None, None, {"step": 7})
    run = RunStore(tmp_path).create_run({"family": "vae"})
    run.save_checkpoint(7, tensors, meta)
    back, back_meta = run.load_checkpoint(7)
    assert back_meta["step"] == 7
    for name, value in tensors.items():
        assert back[name].dtype == value.dtype and torch.equal(back[name], value)
    # and a model rebuilt from it computes the same function
    twin = build_model("vae", loaded.spec.model)
    twin.load_state_dict({k[6:]: v for k, v in back.items()})
    z = torch.randn(5, 8)
    assert torch.equal(twin.decode(z), loaded.model.decode(z))


def test_training_improves_the_test_elbo(trained_digits_run):
    steps, elbo = trained_digits_run.metrics.scalars(["test/elbo"])["test/elbo"]
    assert list(steps) == [300, 600]
    loaded = load_run_model(trained_digits_run)
    untrained = build_model("vae", loaded.spec.model)
    data = loaded.spec.load_data("test")
    before = evaluate_bounds(untrained, data, k=1, n=200)["elbo"]
    after = evaluate_bounds(loaded.model, data, k=1, n=200)["elbo"]
    assert after > before + 10  # nats per 8x8 image


def test_elbo_below_iwae_which_grows_with_k_on_a_trained_model(trained_digits_run):
    """L^k from one pool of 2,000 importance weights split into blocks of k (seed003
    §1.6's monotonicity check): the bound must rise with k and sit above the ELBO."""
    loaded = load_run_model(trained_digits_run)
    data = loaded.spec.load_data("test")
    x = data.batch(torch.arange(200))
    torch.manual_seed(0)
    with torch.no_grad():
        elbo = torch.stack([loaded.model.elbo(x).total.mean() for _ in range(50)]).mean().item()
        log_w, _, _ = loaded.model.log_weights(x, k=2000)  # (2000, 200)
    bound = {k: logmeanexp(log_w.reshape(2000 // k, k, -1), dim=1).mean().item() for k in (1, 5, 50)}
    assert bound[1] == pytest.approx(elbo, abs=0.1)  # L^1 is the ELBO (with a sampled KL)
    assert elbo < bound[5] < bound[50], (elbo, bound)
    assert bound[50] - bound[1] > 0.05, bound  # nats: a real gain, not noise


def test_non_finite_steps_are_skipped_counted_and_stop_the_run(tmp_path, monkeypatch):
    spec = RunSpec.from_preset("digits-vae", {"train": {**SHORT, "max_nonfinite_in_row": 5}})
    train_data, test_data = spec.load_data("train"), spec.load_data("test")
    spec.model = spec.model_config(train_data)
    model = build_model("vae", spec.model)
    original = model.training_loss
    calls = {"n": 0}

    def flaky(x):
        calls["n"] += 1
        loss, metrics = original(x)
        if calls["n"] in (3, 4) or calls["n"] >= 30:
            loss = loss * float("nan")
        return loss, metrics

    monkeypatch.setattr(model, "training_loss", flaky)
    run = RunStore(tmp_path).create_run(spec.to_dict())
    trainer = Trainer(model, train_data, test_data, spec.train, run)
    trainer.fit()
    assert trainer.skipped == 2 + 5
    assert run.status.state == "failed"
    assert "non-finite" in run.status.reason
    assert all(torch.isfinite(p).all() for p in model.parameters())
    _, skipped = run.metrics.scalars(["train/skipped"])["train/skipped"]
    assert skipped[-1] == 7


def test_ema_weights_are_used_when_loading(tmp_path):
    run = train(RunSpec.from_preset("digits-vae", {"train": {**SHORT, "ema_decay": 0.95}}), tmp_path)
    loaded = load_run_model(run)
    raw = load_run_model(run, prefer_ema=False)
    assert loaded.weights == "ema" and raw.weights == "model"
    ema_w = weights(run)["ema.decoder.0.0.weight"]
    assert torch.equal(loaded.model.decoder[0][0].weight, ema_w)
    assert not torch.equal(raw.model.decoder[0][0].weight, ema_w)


def test_loading_refuses_damaged_or_mismatched_checkpoints(tmp_path, trained_digits_run):
    loaded = load_run_model(trained_digits_run)
    tensors, meta = pack_training_state(loaded.model, None, None, {"step": 1})
    run = RunStore(tmp_path).create_run(trained_digits_run.config)
    bad = dict(tensors)
    bad["model.decoder.0.0.weight"] = bad["model.decoder.0.0.weight"].clone()
    bad["model.decoder.0.0.weight"][0, 0] = float("nan")
    run.save_checkpoint(1, bad, meta)
    with pytest.raises(AtlasError, match="NaN or infinite"):
        load_run_model(run)
    wrong = dict(tensors)
    wrong["model.decoder.0.0.weight"] = torch.zeros(3, 3)
    run.save_checkpoint(2, wrong, meta)
    with pytest.raises(AtlasError, match="shape"):
        load_run_model(run)
    half = dict(tensors)
    half["model.decoder.0.0.weight"] = half["model.decoder.0.0.weight"].half()
    run.save_checkpoint(3, half, meta)
    with pytest.raises(AtlasError, match="dtype"):
        load_run_model(run)


@pytest.mark.parametrize(
    "config, message",
    [
        ({"family": "nonsense", "model": {}, "data": {"name": "digits"}}, "unknown model family"),
        ({"family": "vae", "model": {"latent_dim": 10**9}, "data": {"name": "digits"}}, "latent_dim"),
        ({"family": "vae", "model": {"colour": 3}, "data": {"name": "digits"}}, "unknown vae config key"),
        ({"family": "vae", "model": {}}, "family"),
        ({"family": "vae", "model": {}, "data": {"name": "digits"}, "train": {"lr": -1}}, "train.lr"),
    ],
)
def test_bad_configs_are_refused_with_a_message(tmp_path, config, message):
    run = RunStore(tmp_path).create_run(config)
    with pytest.raises(AtlasError, match=message):
        load_run_model(run)


def test_unknown_preset_and_dataset():
    with pytest.raises(AtlasError, match="known presets"):
        RunSpec.from_preset("nope")
    spec = RunSpec.from_dict({"family": "vae", "model": {}, "data": {"name": "nope"}})
    with pytest.raises(AtlasError):
        spec.load_data("train")
