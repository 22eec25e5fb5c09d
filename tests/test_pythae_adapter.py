"""pythae models trained here, brought into the atlas by engine/adapters/pythae.py, and the
folders it must refuse. pythae itself is the reference: the adapted model's encoder,
decoder and bound are compared with what pythae's own model computes."""

from __future__ import annotations

import io
import json
import pickle
import re
import shutil

import pytest
import torch
from pythae.models import VAE, BetaTCVAE, BetaTCVAEConfig, FactorVAE, FactorVAEConfig, VAEConfig

from engine.adapters import adapt
from engine.data import load_dataset
from engine.errors import AtlasError
from engine.loading import load_run_model
from tests.test_hostile_inputs import Payload, refused_within_bounds, snapshot

DIGITS = {"name": "digits", "options": {}}


def train_briefly(model, x: torch.Tensor, steps: int = 30) -> None:
    """A few Adam steps on pythae's own loss, so the weights are a trained model's."""
    torch.manual_seed(0)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    for step in range(steps):
        batch = x[(step * 32) % len(x) :][:32]
        loss = model({"data": batch}, epoch=1).loss
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()


@pytest.fixture(scope="module")
def digits() -> torch.Tensor:
    return load_dataset("digits", split="train").x[:256].float()


@pytest.fixture(scope="module")
def saved(tmp_path_factory, digits) -> dict:
    """Folders written by pythae's own `save`: a VAE on the mse loss, a β-TCVAE on bce, and a
    FactorVAE (whose discriminator the adapter drops)."""
    torch.manual_seed(0)
    models = {
        "vae-mse": VAE(VAEConfig(input_dim=(1, 8, 8), latent_dim=3, reconstruction_loss="mse")),
        "tcvae-bce": BetaTCVAE(BetaTCVAEConfig(input_dim=(1, 8, 8), latent_dim=4, reconstruction_loss="bce", beta=4.0)),
        "factor": FactorVAE(FactorVAEConfig(input_dim=(1, 8, 8), latent_dim=2, reconstruction_loss="bce")),
    }
    folders = {}
    for name, model in models.items():
        if name != "factor":
            train_briefly(model, digits)
        folders[name] = tmp_path_factory.mktemp(name)
        model.eval().save(str(folders[name]))
    return {"models": models, "folders": folders}


@pytest.mark.parametrize("name", ["vae-mse", "tcvae-bce"])
def test_the_adapted_model_computes_what_pythae_computes(tmp_path, saved, digits, name):
    theirs = saved["models"][name]
    run = adapt("pythae", saved["folders"][name], tmp_path / "runs", DIGITS, name=name)
    ours = load_run_model(run).model.eval()
    x = digits[:16]
    with torch.no_grad():
        out = theirs.encoder(x)
        q = ours.encode(x)["z"]
        assert torch.allclose(q.mean, out.embedding, atol=1e-6)
        assert torch.allclose(q.logvar, out.log_covariance, atol=1e-6)
        assert torch.allclose(ours.decode(q.mean), theirs.decoder(out.embedding).reconstruction, atol=1e-6)
        # the bound at the posterior mean, by hand from pythae's reconstruction and the closed-form KL
        recon_x = theirs.decoder(out.embedding).reconstruction.flatten(1)
        if theirs.model_config.reconstruction_loss == "mse":
            log_lik = torch.distributions.Normal(recon_x, 1.0).log_prob(x.flatten(1)).sum(-1)
        else:
            log_lik = -torch.nn.functional.binary_cross_entropy(recon_x, x.flatten(1), reduction="none").sum(-1)
        kl = 0.5 * (out.embedding.pow(2) + out.log_covariance.exp() - 1 - out.log_covariance).sum(-1)
        assert torch.allclose(
            ours.log_joint(x, q.mean) - torch.distributions.Normal(0, 1).log_prob(q.mean).sum(-1), log_lik, atol=1e-4
        )
        assert torch.allclose(q.kl_to_standard_normal(), kl, atol=1e-5)
    config = ours.config
    assert config.pythae_model == ("VAE" if name == "vae-mse" else "BetaTCVAE")
    assert (config.objective, config.beta) == (("elbo", 1.0) if name == "vae-mse" else ("beta-tcvae", 4.0))
    assert run.status.state == "finished" and run.status.reason.startswith("adapted from pythae")
    assert run.load_checkpoint()[1]["adapted_from"].startswith("pythae ")


def test_a_factor_vae_loses_its_discriminator_and_keeps_its_vae(tmp_path, saved, digits):
    run = adapt("pythae", saved["folders"]["factor"], tmp_path / "runs", DIGITS)
    ours = load_run_model(run).model.eval()
    assert not any(k.startswith("discriminator") for k in ours.state_dict())
    with torch.no_grad():
        assert torch.allclose(
            ours.encode(digits[:4])["z"].mean, saved["models"]["factor"].encoder(digits[:4]).embedding
        )


# -- folders the adapter refuses ------------------------------------------------------------------------


def edited_copy(tmp_path, saved, config_edit=None, state_edit=None, extra: dict | None = None):
    folder = tmp_path / "theirs"
    shutil.copytree(saved["folders"]["tcvae-bce"], folder)
    if config_edit is not None:
        config = json.loads((folder / "model_config.json").read_text())
        config_edit(config)
        (folder / "model_config.json").write_text(json.dumps(config))
    if state_edit is not None:
        state = torch.load(folder / "model.pt", weights_only=True)
        state_edit(state["model_state_dict"])
        torch.save(state, folder / "model.pt")
    for file, content in (extra or {}).items():
        (folder / file).write_bytes(content)
    return folder


def torch_bytes(value) -> bytes:
    buffer = io.BytesIO()
    torch.save(value, buffer)
    return buffer.getvalue()


def set_nan(state):
    state["encoder.embedding.bias"][0] = float("nan")


CASES = {
    "custom-encoder": (
        dict(config_edit=lambda c: c.update(uses_default_encoder=False), extra={"encoder.pkl": b"\x80\x04N."}),
        "has a custom encoder",
    ),
    "vamp-prior": (dict(config_edit=lambda c: c.update(name="VAMPConfig")), "VampPrior"),
    "unknown-model": (dict(config_edit=lambda c: c.update(name="GANConfig")), "the pythae models the atlas takes"),
    "input-dim-mismatch": (dict(config_edit=lambda c: c.update(input_dim=[1, 9, 9])), "has shape (512, 64)"),
    "latent-dim-absurd": (dict(config_edit=lambda c: c.update(latent_dim=10**9)), "latent_dim"),
    "missing-tensor": (dict(state_edit=lambda s: s.pop("encoder.log_var.bias")), "missing encoder.log_var.bias"),
    "extra-tensor": (dict(state_edit=lambda s: s.update(extra=torch.zeros(2))), "unexpected extra"),
    "nan-weights": (dict(state_edit=set_nan), "NaN"),
    "malformed-json": (dict(extra={"model_config.json": b"{not json"}), "not valid JSON"),
    "not-a-torch-file": (dict(extra={"model.pt": b"hello, I am text"}), "could not be opened as plain weights"),
    "empty-model-pt": (dict(extra={"model.pt": b""}), "could not be opened as plain weights: EOFError"),
    "not-a-state-dict": (dict(extra={"model.pt": torch_bytes({"model_state_dict": [1, 2]})}), "is not a state dict"),
    "dataset-of-another-shape": (dict(config_edit=lambda c: c.update(input_dim=[1, 8, 8])), None),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_bad_folder_is_refused_and_the_runs_root_is_unchanged(tmp_path, saved, case):
    edits, message = CASES[case]
    folder = edited_copy(tmp_path, saved, **edits)
    root = tmp_path / "runs"
    adapt("pythae", saved["folders"]["vae-mse"], root, DIGITS, name="existing")
    before = snapshot(root)
    data = DIGITS
    if message is None:  # a good folder, explored on a dataset of another shape
        data, message = {"name": "shapes", "options": {}}, "choose a dataset of the model's shape"
    refused_within_bounds(lambda: adapt("pythae", folder, root, data), re.escape(message))
    assert snapshot(root) == before


def test_a_pickled_payload_in_model_pt_does_not_run(tmp_path, saved):
    marker = tmp_path / "pwned"
    folder = edited_copy(tmp_path, saved, extra={"model.pt": pickle.dumps({"model_state_dict": Payload(marker)})})
    with pytest.raises(AtlasError, match="weights_only=True"):
        adapt("pythae", folder, tmp_path / "runs", DIGITS)
    assert not marker.exists()
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("config.json"))


def test_the_import_page_converts_an_uploaded_pythae_model_and_refuses_a_pickled_one(tmp_path, saved, monkeypatch):
    from app.runs import available_runs
    from tests.test_hostile_inputs import import_page

    root = tmp_path / "runs"
    at = import_page(root, monkeypatch)
    folder = saved["folders"]["tcvae-bce"]
    custom = edited_copy(tmp_path, saved, config_edit=lambda c: c.update(uses_default_decoder=False))
    at.selectbox(key="adapt-kind").set_value("pythae").run()
    at.selectbox(key="adapt-data").set_value("digits").run()
    for source, expected in ((custom, "Not converted"), (folder, "Converted into run")):
        for name in ("model_config.json", "model.pt"):
            upload = at.file_uploader(key=f"adapt-pythae-{name}")
            upload.set_value((name, (source / name).read_bytes(), "application/octet-stream"))
        at.run()
        at.button(key="adapt-go").click().run()
        assert not at.exception, [e.value for e in at.exception]
        shown = [e.value for e in at.error] + [s.value for s in at.success]
        assert any(expected in text for text in shown), shown
    (run,) = [c for c in available_runs() if c.key.startswith("runs/")]
    assert run.info.family == "pythae-vae" and run.info.status == "finished"


def test_the_cli_adapts_a_folder_onto_a_data_file_it_copies_among_the_uploads(tmp_path, saved, digits, capsys):
    """`latent-atlas adapt pythae FOLDER --data file:PATH`: the file is checked and copied under the runs
    root (a run reads no file outside it), once; the run explores the model on it."""
    import numpy as np

    from engine.cli import main
    from engine.store import RunStore

    outside = tmp_path / "my digits.npz"
    np.savez(outside, x=digits[:100, 0].numpy())
    root = tmp_path / "runs"
    for name in ("first", "second"):
        argv = [
            "--runs-dir",
            str(root),
            "adapt",
            "pythae",
            str(saved["folders"]["vae-mse"]),
            "--data",
            f"file:{outside}",
        ]
        assert main([*argv, "--name", name]) == 0
    out = capsys.readouterr().out
    assert out.count("copied") == 1 and out.count("added") == 2
    copies = list((root / ".data").iterdir())
    assert [p.name for p in copies] == ["my-digits.npz"]
    for info in RunStore(root).list_runs():
        run = RunStore(root).open_run(info.id)
        assert run.config["data"]["name"] == f"file:{copies[0].resolve()}" and info.family == "pythae-vae"
    assert main(["--runs-dir", str(root), "adapt", "pythae", str(tmp_path / "nowhere"), "--data", "digits"]) == 2
    assert "is not a folder" in capsys.readouterr().err


@pytest.mark.parametrize("file", ["sample_grids.py", "latent_map.py", "importance_weights.py"])
def test_the_generic_pages_open_on_an_adapted_pythae_run(tmp_path, saved, monkeypatch, file):
    from tests.pagetest import assert_clean, open_run_page

    run = adapt("pythae", saved["folders"]["tcvae-bce"], tmp_path, DIGITS, name="theirs")
    assert_clean(open_run_page(file, tmp_path, monkeypatch, f"runs/{run.id}"))
