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
    "facet-digits-mfcvae": {
        "about": (
            "two-facet MFCVAE (conv ladder) on facet-digits 8x8, Gaussian likelihood: facet0 (shallow, dim 10, "
            "K = 40, majority mapping, KL weight 2) for the digit, facet1 (deep, dim 3, K = 30 for the 20 stroke x "
            "background pairs) for the colour; fixed uniform pi; a 64-channel nonlinear decoder head so the "
            "image can be a product of shape and colour (without it the digit facet must also carry the colour); "
            "the colour facet trains alone for 2000 steps, then the digit facet fades in over 1000"
        ),
        "family": "mfcvae",
        "data": {"name": "facet-digits", "options": {"size": 8, "n": 20000}},
        "model": {
            "arch": "conv",
            "channels": [32, 64],
            "facet_dims": [10, 3],
            "clusters": [40, 30],
            "likelihood": "gaussian",
            "covariance": "diag",
            "learn_pi": False,
            "fade_in_steps": 1000,
            "facet_start_steps": [2000, 0],
            "head": 64,
            "beta": [2.0, 1.0],
        },
        "train": {"steps": 4000, "batch_size": 128, "lr": 2e-3, "eval_every": 500, "checkpoint_every": 1000},
        "demo": False,
    },
    "shapes-mfcvae": {
        "about": (
            "two-facet MFCVAE (conv ladder) on 32x32 shapes: facet0 (shallow, dim 6, K = 4) for the shape, "
            "facet1 (deep, dim 2, K = 6) for the colour, as for 3DShapes (seed000 Table 2.1)"
        ),
        "family": "mfcvae",
        "data": {"name": "shapes", "options": {"size": 32, "n": 20000}},
        "model": {
            "arch": "conv",
            "channels": [32, 64],
            "facet_dims": [6, 2],
            "clusters": [4, 6],
            "likelihood": "bernoulli",
            "covariance": "diag",
            "learn_pi": False,
            "fade_in_steps": 500,
            "facet_start_steps": [1000, 0],
        },
        "train": {"steps": 4000, "batch_size": 128, "lr": 1e-3, "eval_every": 500, "checkpoint_every": 1000},
        "demo": False,
    },
    # The paper's settings (seed000 Table A.1, §1.4). The data are user files: replace
    # "file:USER_PATH" with your copy. facet0 is the thesis's z_1, facet1 its z_2.
    "mnist-mfcvae-paper": {
        "about": "MFCVAE on MNIST with the settings of seed000 Table A.1 (fc ladder, Table A.2); needs MNIST as a file",
        "family": "mfcvae",
        "data": {"name": "file:USER_PATH/mnist", "options": {}},
        "model": {
            "arch": "mlp",
            "hidden": [500, 2000],
            "facet_dims": [5, 5],
            "clusters": [25, 25],
            "likelihood": "bernoulli",
            "covariance": "diag",
            "learn_pi": True,
            "prior_var_init": 0.01,
            "fade_in_steps": 15000,
            "facet_start_steps": [23517, 0],  # 201 epochs of 117 batches of 512, then facet0 joins
        },
        "train": {"steps": 47034, "batch_size": 512, "lr": 0.0005, "eval_every": 2000, "checkpoint_every": 5000},
        "demo": False,
    },
    "3dshapes-mfcvae-paper": {
        "about": (
            "MFCVAE on 3DShapes (config 1 or 2, 32x32) with the settings of seed000 Table A.1 (conv ladder, "
            "Table A.3); sampling temperature 0.3; needs the 4,800-image subset as a file"
        ),
        "family": "mfcvae",
        "data": {"name": "file:USER_PATH/3dshapes_config1", "options": {}},
        "model": {
            "arch": "conv",
            "channels": [64, 128],
            "facet_dims": [20, 2],
            "clusters": [60, 20],
            "likelihood": "gaussian",
            "covariance": "full",
            "learn_pi": False,
            "prior_var_init": 0.01,
            "fade_in_steps": 2000,
            "facet_start_steps": [2525, 0],  # 101 epochs of 25 batches of 150 (3,840 training images)
        },
        "train": {"steps": 10050, "batch_size": 150, "lr": 0.0003, "eval_every": 500, "checkpoint_every": 1000},
        "demo": False,
    },
    "svhn-mfcvae-paper": {
        "about": (
            "MFCVAE on SVHN (32x32) with the settings of seed000 Table A.1 (conv ladder, Table A.3); sampling "
            "temperature 0.3; needs SVHN as a file"
        ),
        "family": "mfcvae",
        "data": {"name": "file:USER_PATH/svhn", "options": {}},
        "model": {
            "arch": "conv",
            "channels": [64, 128],
            "facet_dims": [22, 7],
            "clusters": [200, 50],
            "likelihood": "gaussian",
            "covariance": "full",
            "learn_pi": False,
            "prior_var_init": 0.01,
            "fade_in_steps": 15000,
            "facet_start_steps": [49288, 0],  # 101 epochs of 488 batches of 150
        },
        "train": {"steps": 196176, "batch_size": 150, "lr": 0.0005, "eval_every": 5000, "checkpoint_every": 10000},
        "demo": False,
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
