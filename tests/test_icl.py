"""The neural in-context learner (engine/models/icl.py), its dataset, family and demo
run, and the language-model adapter (engine/sequence/hf_adapter.py)."""

import json
from pathlib import Path

import pytest
import torch

from engine.data import load_dataset
from engine.errors import AtlasError
from engine.loading import load_run_model
from engine.models import build_model, family_kind
from engine.models.icl import ICLConfig, ICLTransformer, bayes_nll, naive_paths
from engine.sequence import sample_paths
from engine.sequence.conjugate import PRIORS
from engine.store import Run
from engine.training import RunSpec, train

DEMO_ROOT = Path(__file__).resolve().parent.parent / "assets" / "runs"
# |p_demo - (1 + s) / (2 + n)| over contexts of n = 0..300 with s/n in {0, 0.1, ..., 1}, worst of 20
# orders each: at most 0.056 (n <= 5), 0.048 (n = 20..100), 0.062 (n = 150, beyond the training length 128)
DEMO_BAYES_TOL = 0.07


def demo_run() -> Run:
    for path in sorted(DEMO_ROOT.iterdir()):
        config = json.loads((path / "config.json").read_text())
        if config.get("preset") == "bernoulli-icl":
            return Run.from_dir(path, readonly=True)
    raise AssertionError("no bernoulli-icl demo under assets/runs")


@pytest.fixture(scope="module")
def demo():
    return load_run_model(demo_run()).model


@pytest.mark.parametrize("observation", ["bernoulli", "gaussian"])
def test_cached_predictions_equal_a_full_rerun_at_every_position(observation):
    torch.manual_seed(0)
    model = ICLTransformer(ICLConfig(observation=observation, width=32, layers=2, heads=4)).eval()
    x = (torch.rand(5, 24) < 0.4).float() if observation == "bernoulli" else torch.randn(5, 24)
    with torch.no_grad():
        full, _ = model(x)  # (5, 25, outputs): the predictive of z_{t+1} for t = 0..24
    state = model.start(x[:, :0])  # BOS only
    worst = (state.out - full[:, 0]).abs().max()
    for t in range(24):
        state = model.update(state, x[:, t])
        worst = max(worst, (state.out - full[:, t + 1]).abs().max())
        if t % 4 == 0:  # one run over a prefix gives the same state
            assert torch.allclose(model.start(x[:, : t + 1]).out, state.out, atol=1e-5)
    assert worst < 1e-5, worst  # measured: below 1e-6 (float32)
    assert state.length == 25


def test_naive_paths_draw_the_same_paths_as_the_cached_sampler():
    torch.manual_seed(1)
    model = ICLTransformer(ICLConfig(width=32, layers=2)).eval()
    observed = (torch.rand(12) < 0.5).float()
    cached = sample_paths(model, observed, m=6, paths=1, permute=False, generator=torch.Generator().manual_seed(3))
    naive = naive_paths(model, observed, m=6, paths=1, permute=False, generator=torch.Generator().manual_seed(3))
    assert torch.equal(cached.z, naive.z)
    assert torch.allclose(cached.predictive_mean, naive.predictive_mean, atol=1e-5)


def test_exchangeable_data_are_deterministic_and_disjoint():
    a = load_dataset("exchangeable", split="train", seed=3, n=200, length=16)
    b = load_dataset("exchangeable", split="train", seed=3, n=200, length=16)
    test = load_dataset("exchangeable", split="test", seed=3, n=200, length=16)
    assert torch.equal(a.x, b.x) and a.x.shape == (160, 16) and test.x.shape == (40, 16)
    assert set(a.x.unique().tolist()) == {0.0, 1.0} and a.kind == "sequence"
    g = load_dataset("exchangeable", family="gaussian", n=2000, length=50)
    resid = g.x - g.labels["theta"].values[:, None]
    assert abs(resid.std().item() - 1.0) < 0.05 and abs(g.labels["theta"].values.std().item() - 1.0) < 0.1
    with pytest.raises(AtlasError, match="family"):
        load_dataset("exchangeable", family="poisson")


def test_icl_is_a_sequence_family_and_rejects_mismatched_data():
    assert family_kind("icl") == "sequence" and family_kind("vae") == "latent"
    model = build_model("icl", {"observation": "gaussian"})
    with pytest.raises(AtlasError, match="data.family"):
        model.initialize(load_dataset("exchangeable", n=20, length=8))
    with pytest.raises(AtlasError, match="multiple"):
        ICLConfig(width=30, heads=4)


def test_a_short_training_run_lowers_the_nll_and_round_trips_through_the_store(tmp_path):
    spec = RunSpec.from_preset(
        "bernoulli-icl",
        {
            "data": {"n": 400, "length": 32},
            "model": {"width": 32, "layers": 1},
            "train": {
                "steps": 60,
                "batch_size": 16,
                "lr": 3e-3,
                "eval_every": 60,
                "eval_examples": 80,
                "checkpoint_every": 60,
                "log_every": 10,
                "progress": False,
            },
        },
    )
    run = train(spec, runs_root=tmp_path)
    assert run.status.state == "finished"
    steps, loss = run.metrics.scalars(["train/loss"])["train/loss"]
    assert loss[-1] < loss[0] - 0.05, loss
    assert run.metrics.latest("test/nll") is not None and run.metrics.latest("test/elbo") is None
    loaded = load_run_model(Run.from_dir(run.dir, readonly=True))
    assert isinstance(loaded.model, ICLTransformer) and loaded.step == 60
    tensors, _ = run.load_checkpoint("latest")
    for name, value in loaded.model.state_dict().items():
        assert torch.equal(value, tensors[f"model.{name}"])
    again = loaded.model.evaluation_metrics(spec.load_data("test"), 80)  # the run's own test NLL, recomputed
    assert again["nll"] == pytest.approx(run.metrics.latest("test/nll")[1], abs=1e-5)


def test_the_demo_predictive_moves_with_the_data_and_is_close_to_bayes(demo):
    g = torch.Generator().manual_seed(0)
    for n in (5, 20, 50, 100):
        for ones in (0, n // 4, n // 2, n):
            context = torch.cat([torch.ones(ones), torch.zeros(n - ones)])[torch.randperm(n, generator=g)]
            p = demo.predictive(demo.start(context[None])).prob.item()
            assert abs(p - (1 + ones) / (2 + n)) < DEMO_BAYES_TOL, (n, ones, p)
    p_ones = demo.predictive(demo.start(torch.ones(1, 30))).prob.item()
    p_zeros = demo.predictive(demo.start(torch.zeros(1, 30))).prob.item()
    assert p_ones > 0.9 and p_zeros < 0.1


def test_the_demo_nll_is_close_to_the_bayes_predictive(demo):
    data = load_dataset("exchangeable", split="test", n=20000, length=128)
    metrics = demo.evaluation_metrics(data, 500)
    assert metrics["bayes_nll"] == pytest.approx(bayes_nll(PRIORS["bernoulli"], data.x[:500]).mean().item())
    assert 0 <= metrics["nll_gap"] < 0.01, metrics


def test_hf_adapter_on_a_tiny_random_gpt2(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    from engine.sequence.hf_adapter import BERNOULLI_INSTRUCTION, load_hf_predictor

    split = pre_tokenizers.Whitespace()
    words = sorted({w for w, _ in split.pre_tokenize_str(BERNOULLI_INSTRUCTION + " 0 1 , ;")})
    vocab = {"[UNK]": 0, **{w: i + 1 for i, w in enumerate(words)}}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = split
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="[UNK]").save_pretrained(tmp_path)
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=len(vocab), n_positions=128, n_embd=32, n_layer=2, n_head=2, bos_token_id=0, eos_token_id=0
    )
    GPT2LMHeadModel(config).save_pretrained(tmp_path)

    lm = load_hf_predictor(tmp_path, separator=";")
    x = (torch.rand(3, 10) < 0.5).float()
    assert lm.tokenizer.decode(lm.prompt_ids(x[:1, :2])[0]).endswith(f"{int(x[0, 0])} ; {int(x[0, 1])} ;")
    state = lm.start(x[:, :0])
    for t in range(10):
        rerun = lm.predictive(lm.start(x[:, :t])).prob
        assert torch.allclose(lm.predictive(state).prob, rerun, atol=1e-5)
        state = lm.update(state, x[:, t])
    paths = sample_paths(lm, x[0], m=6, paths=4)
    assert paths.z.shape == (4, 6) and ((paths.predictive_mean > 0) & (paths.predictive_mean < 1)).all()
    with pytest.raises(AtlasError, match="no model directory"):
        load_hf_predictor(tmp_path / "missing")
