"""Named training recipes. `latent-atlas train --preset NAME` runs one; the demo
checkpoints in assets/ are made from the ones marked demo (see assets/README.md)."""

from __future__ import annotations

from engine.errors import AtlasError

PRESETS: dict[str, dict] = {
    "digits-vae": {
        "about": "MLP VAE on the 8x8 scikit-learn digits; trains in about half a minute on a CPU",
        "family": "vae",
        "data": {"name": "digits", "options": {}},
        "model": {"arch": "mlp", "hidden": [256, 128], "latent_dim": 8, "likelihood": "bernoulli"},
        "train": {"steps": 4000, "batch_size": 128, "lr": 1e-3, "eval_every": 500, "checkpoint_every": 1000},
        "demo": True,
    },
    "digits-tcvae": {
        "about": "beta-TCVAE (beta = 6, stratified TC estimator) on the 8x8 digits",
        "family": "vae",
        "data": {"name": "digits", "options": {}},
        "model": {
            "arch": "mlp",
            "hidden": [256, 128],
            "latent_dim": 8,
            "likelihood": "bernoulli",
            "objective": "beta-tcvae",
            "beta": 6.0,
        },
        "train": {"steps": 4000, "batch_size": 256, "lr": 1e-3, "eval_every": 500, "checkpoint_every": 1000},
        "demo": True,
    },
    "facet-digits-vae": {
        "about": "convolutional VAE on colour facet-digits at 16x16",
        "family": "vae",
        "data": {"name": "facet-digits", "options": {"size": 16}},
        "model": {"arch": "conv", "channels": [32, 64], "hidden": [256], "latent_dim": 12, "likelihood": "bernoulli"},
        "train": {"steps": 3000, "batch_size": 128, "lr": 1e-3, "eval_every": 500, "checkpoint_every": 1000},
        "demo": True,
    },
    "shapes-vae": {
        "about": "convolutional beta-VAE (beta = 2) on 32x32 procedural shapes",
        "family": "vae",
        "data": {"name": "shapes", "options": {"size": 32, "n": 20000}},
        "model": {
            "arch": "conv",
            "channels": [32, 32, 64, 64],
            "hidden": [256],
            "latent_dim": 10,
            "likelihood": "bernoulli",
            "objective": "beta-vae",
            "beta": 2.0,
        },
        "train": {"steps": 12000, "batch_size": 64, "lr": 5e-4, "eval_every": 1000, "checkpoint_every": 2000},
        "demo": True,
    },
    "mixed-vae": {
        "about": "MLP VAE with a Gaussian likelihood on the synthetic mixed-type table",
        "family": "vae",
        "data": {"name": "mixed", "options": {}},
        "model": {"arch": "mlp", "hidden": [128, 64], "latent_dim": 4, "likelihood": "gaussian"},
        "train": {"steps": 3000, "batch_size": 128, "lr": 1e-3, "eval_every": 500, "checkpoint_every": 1000},
        "demo": False,
    },
}


def get_preset(name: str) -> dict:
    if name not in PRESETS:
        raise AtlasError(f"unknown preset {name!r}; known presets: {', '.join(sorted(PRESETS))}")
    return PRESETS[name]
