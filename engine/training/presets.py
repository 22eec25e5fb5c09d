"""Named training recipes. `latent-atlas train --preset NAME` runs one; the demo
checkpoints in assets/ are made from the ones marked demo (see assets/README.md)."""

from __future__ import annotations

import copy

from engine.errors import AtlasError

_SEMI_DIGITS = {
    "components": 45,
    "prior": "on-purpose",
    "labelled_classes": 5,
    "latent_dim": 5,
    "hidden": 200,
    "likelihood": "bernoulli",
}
_SEMI_DIGITS_TRAIN = {"steps": 3000, "batch_size": 64, "labelled_batch_size": 64, "lr": 1e-3, "eval_every": 500}
_SEMI_FASHION = {  # seed001 Table A.1 and App. A.1
    "components": 45,
    "prior": "on-purpose",
    "labelled_classes": 5,
    "latent_dim": 10,
    "hidden": 500,
    "likelihood": "bernoulli",
    "binarise": True,
    "min_pixel_sd": 0.1,
}
_SEMI_FASHION_TRAIN = {"batch_size": 64, "labelled_batch_size": 64, "lr": 0.0015, "eval_every": 1000}

_UGVAE_DIGITS = {  # seed002 Table A.1's MNIST networks (Linear -> 256, heads of 256) narrowed for 8x8 digits
    "arch": "mlp",
    "hidden": [256],
    "local_dim": 8,
    "global_dim": 8,
    "components": 10,  # K = 10 on MNIST (seed002 §1.5)
    "cluster_hidden": 128,
    "prior_hidden": 128,
    "likelihood": "bernoulli",
}
# the thesis's groups are random batches of 128 of MNIST's 60,000; the digits' 1,437 training images
# give 22 random groups of 64 an epoch
_UGVAE_DIGITS_TRAIN = {"steps": 6000, "batch_size": 64, "lr": 1e-3, "eval_every": 1000, "checkpoint_every": 2000}

PRESETS: dict[str, dict] = {
    "digits-vae": {
        "about": "MLP VAE on the 8x8 scikit-learn digits; trains in about half a minute on a CPU",
        "family": "vae",
        "data": {"name": "digits", "options": {}},
        "model": {"arch": "mlp", "hidden": [256, 128], "latent_dim": 8, "likelihood": "bernoulli"},
        "train": {"steps": 4000, "batch_size": 128, "lr": 1e-3, "eval_every": 500, "checkpoint_every": 1000},
        "demo": True,
    },
    "digits-vae-2d": {
        "about": (
            "MLP VAE on the 8x8 digits with a 2-D latent: its posterior p(z|x) can be computed exactly on a "
            "grid, so the HMC chains page shows the true density under the chains; about half a minute on a CPU"
        ),
        "family": "vae",
        "data": {"name": "digits", "options": {}},
        "model": {"arch": "mlp", "hidden": [256, 128], "latent_dim": 2, "likelihood": "bernoulli"},
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
    "fashion-vae": {
        "about": (
            "MLP VAE (784-512-256, 16 latents) on Fashion-MNIST's 60,000 28x28 photos (about 21 epochs); "
            "about 2.5 minutes of one CPU thread"
        ),
        "family": "vae",
        "data": {"name": "fashion-mnist", "options": {}},
        "model": {"arch": "mlp", "hidden": [512, 256], "latent_dim": 16, "likelihood": "bernoulli"},
        "train": {"steps": 10000, "batch_size": 128, "lr": 1e-3, "eval_every": 1000, "checkpoint_every": 2000},
        "demo": True,
    },
    "fashion-conv-vae": {
        "about": (
            "convolutional VAE (two stride-2 layers of 32 and 64 channels, 16 latents) on Fashion-MNIST (about "
            "5 epochs); about 4 minutes of one CPU thread"
        ),
        "family": "vae",
        "data": {"name": "fashion-mnist", "options": {}},
        "model": {"arch": "conv", "channels": [32, 64], "hidden": [256], "latent_dim": 16, "likelihood": "bernoulli"},
        "train": {"steps": 5000, "batch_size": 64, "lr": 1e-3, "eval_every": 1000, "checkpoint_every": 1000},
        "demo": False,
    },
    "facet-digits-mfcvae": {
        "about": (
            "two-facet MFCVAE (conv ladder) on facet-digits 8x8, Gaussian likelihood: facet0 (shallow, dim 10, "
            "K = 150: many clusters per digit, as the paper uses K = 200 on SVHN; majority mapping; KL weight 2) "
            "for the digit, facet1 (deep, dim 3, K = 30 for the 20 stroke x background pairs) for the colour; fixed uniform pi; a 64-channel nonlinear decoder head so the "
            "image can be a product of shape and colour (without it the digit facet must also carry the colour); "
            "the colour facet trains alone for 2000 steps, then the digit facet fades in over 1000"
        ),
        "family": "mfcvae",
        "data": {"name": "facet-digits", "options": {"size": 8, "n": 20000}},
        "model": {
            "arch": "conv",
            "channels": [32, 64],
            "facet_dims": [10, 3],
            "clusters": [150, 30],
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
            "two-facet MFCVAE (MLP ladder with a nonlinear head) on 32x32 shapes centred and upright (x, y and "
            "rotation fixed, as 3DShapes keeps its object in place): facet0 (shallow, dim 6, K = 48) for the shape, "
            "facet1 (deep, dim 2, K = 30, KL weight 3) for the colour; the colour facet trains alone for 1000 "
            "steps; about 5 minutes on a quiet 2-core CPU"
        ),
        "family": "mfcvae",
        "data": {"name": "shapes", "options": {"size": 32, "n": 20000, "fix": "x,y,rotation"}},
        "model": {
            "arch": "mlp",
            "hidden": [500, 500],
            "facet_dims": [6, 2],
            "clusters": [48, 30],
            "likelihood": "gaussian",
            "covariance": "diag",
            "learn_pi": False,
            "fade_in_steps": 500,
            "facet_start_steps": [1000, 0],
            "head": 128,
            "beta": [1.0, 3.0],
        },
        "train": {"steps": 6000, "batch_size": 128, "lr": 1e-3, "eval_every": 500, "checkpoint_every": 1000},
        "demo": False,
    },
    # Semi-unsupervised learning (seed001 ch. 2): classes 0-4 keep a fifth of their labels,
    # 5-9 none (SUS); K = 5 + 40 components with the on-purpose prior (§1.5). The fidelity
    # script (scripts/semi_unsupervised.py) switches the regime, K and p(y) per run.
    "digits-gmdgm": {
        "about": (
            "GM-DGM (seed001 ch. 2) on the 8x8 digits in the semi-unsupervised regime: a fifth of the labels "
            "of 0-4, none of 5-9; K = 45 components with the on-purpose prior; about a minute on a CPU"
        ),
        "family": "gmdgm",
        "data": {"name": "digits", "options": {"label_regime": "sus", "labelled_fraction": 0.2}},
        "model": {**_SEMI_DIGITS},
        "train": {**_SEMI_DIGITS_TRAIN},
        "demo": True,
    },
    "digits-ssvae": {
        "about": (
            "the SSVAE (Kingma et al.'s M2), GM-DGM's baseline, on the same semi-unsupervised digits: y enters "
            "only through the decoder, so the 45 components need not cluster; about a minute on a CPU"
        ),
        "family": "ssvae",
        "data": {"name": "digits", "options": {"label_regime": "sus", "labelled_fraction": 0.2}},
        "model": {**_SEMI_DIGITS},
        "train": {**_SEMI_DIGITS_TRAIN},
        "demo": True,
    },
    "digits16-gmdgm": {
        "about": "GM-DGM on the digits resized to 16x16, semi-unsupervised (as digits-gmdgm, 500 units); a few minutes",
        "family": "gmdgm",
        "data": {"name": "digits", "options": {"size": 16, "label_regime": "sus", "labelled_fraction": 0.2}},
        "model": {**_SEMI_DIGITS, "hidden": 500},
        "train": {**_SEMI_DIGITS_TRAIN},
        "demo": False,
    },
    "digits16-ssvae": {
        "about": "the SSVAE on the digits resized to 16x16, semi-unsupervised (as digits-ssvae, 500 units); a few minutes",
        "family": "ssvae",
        "data": {"name": "digits", "options": {"size": 16, "label_regime": "sus", "labelled_fraction": 0.2}},
        "model": {**_SEMI_DIGITS, "hidden": 500},
        "train": {**_SEMI_DIGITS_TRAIN},
        "demo": False,
    },
    "digits-ugvae": {
        "about": (
            "UG-VAE (seed002 ch. 4) on the 8x8 digits, trained as the thesis does on random groups (batches) of "
            "64 sharing a global beta; K = 10, local z and beta of 8 dims; under a minute on a CPU"
        ),
        "family": "ugvae",
        "data": {"name": "digits", "options": {"group_by": "random"}},
        "model": {**_UGVAE_DIGITS},
        "train": {**_UGVAE_DIGITS_TRAIN},
        "demo": True,
    },
    "digits-mlvae": {
        "about": (
            "the ML-VAE ablation of digits-ugvae (UG-VAE with K = 1: a unimodal p(z | beta)), on the same random "
            "groups of 64, for the thesis's comparison of the global spaces; under a minute on a CPU"
        ),
        "family": "ugvae",
        "data": {"name": "digits", "options": {"group_by": "random"}},
        "model": {**_UGVAE_DIGITS, "variant": "mlvae", "components": 1},
        "train": {**_UGVAE_DIGITS_TRAIN},
        "demo": False,
    },
    "digits-domains-ugvae": {
        "about": (
            "UG-VAE for domain alignment (seed002 Fig. 4.7) on digits-domains: each group of 64 holds 32 digits "
            "and 32 inverted digits; as digits-ugvae otherwise; under a minute on a CPU"
        ),
        "family": "ugvae",
        "data": {"name": "digits-domains", "options": {"group_by": "domains"}},
        "model": {**_UGVAE_DIGITS},
        "train": {**_UGVAE_DIGITS_TRAIN},
        "demo": True,
    },
    "facet-digits-ugvae": {
        "about": (
            "convolutional UG-VAE on the 16x16 colour facet-digits, random groups of 64; K = 10, z of 10 and beta "
            "of 8 dims; about two minutes on a CPU"
        ),
        "family": "ugvae",
        "data": {"name": "facet-digits", "options": {"size": 16, "group_by": "random"}},
        "model": {**_UGVAE_DIGITS, "arch": "conv", "channels": [32, 64], "local_dim": 10},
        "train": {"steps": 4000, "batch_size": 64, "lr": 1e-3, "eval_every": 1000, "checkpoint_every": 2000},
        "demo": False,
    },
    "fashion-mnist-gmdgm": {
        "about": (
            "GM-DGM with seed001 Table A.1's Fashion-MNIST settings (d_z 10, 500 units, batch 64, lr 0.0015, "
            "dynamic binarisation, pixels with sd > 0.1 scored), semi-unsupervised; 6 epochs, about half an "
            "hour on a 2-core CPU"
        ),
        "family": "gmdgm",
        "data": {"name": "fashion-mnist", "options": {"label_regime": "sus", "labelled_fraction": 0.2}},
        "model": {**_SEMI_FASHION},
        "train": {**_SEMI_FASHION_TRAIN, "steps": 5000},
        "demo": False,
    },
    "fashion-mnist-ssvae": {
        "about": "the SSVAE with the same Table A.1 settings on semi-unsupervised Fashion-MNIST; about half an hour",
        "family": "ssvae",
        "data": {"name": "fashion-mnist", "options": {"label_regime": "sus", "labelled_fraction": 0.2}},
        "model": {**_SEMI_FASHION},
        "train": {**_SEMI_FASHION_TRAIN, "steps": 5000},
        "demo": False,
    },
    "fashion-mnist-gmdgm-400": {
        "about": "fashion-mnist-gmdgm for the thesis's 400 epochs (337,600 steps): a GPU run",
        "family": "gmdgm",
        "data": {"name": "fashion-mnist", "options": {"label_regime": "sus", "labelled_fraction": 0.2}},
        "model": {**_SEMI_FASHION},
        "train": {**_SEMI_FASHION_TRAIN, "steps": 337_600, "eval_every": 8440, "checkpoint_every": 8440},
        "demo": False,
    },
    "fashion-mnist-ssvae-400": {
        "about": "fashion-mnist-ssvae for the thesis's 400 epochs (337,600 steps): a GPU run",
        "family": "ssvae",
        "data": {"name": "fashion-mnist", "options": {"label_regime": "sus", "labelled_fraction": 0.2}},
        "model": {**_SEMI_FASHION},
        "train": {**_SEMI_FASHION_TRAIN, "steps": 337_600, "eval_every": 8440, "checkpoint_every": 8440},
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
    "digits-hvae": {
        "about": (
            "VDVAE-style HVAE on the digits at 16x16: 4 resolutions (16, 8, 4, 1), 13 top-down latent layers "
            "of 4 channels, residual state of 32 channels (Table B.3's MNIST width); about 6 minutes on a 2-core CPU"
        ),
        "family": "hvae",
        "data": {"name": "digits", "options": {"size": 16}},
        "model": {
            "encoder": "16x3,16d2,8x3,8d2,4x3,4d4,1x2",
            "decoder": "1x1,4m1,4x3,8m4,8x3,16m8,16x4",
            "width": 32,
            "zdim": 4,
            "likelihood": "bernoulli",
        },
        "train": {
            "steps": 3000,
            "batch_size": 64,
            "lr": 1e-3,
            "grad_clip": 200.0,
            "grad_skip": 3000.0,
            "eval_every": 500,
            "checkpoint_every": 500,
            "keep_checkpoints": 7,
        },
        "demo": True,
    },
    "digits-hvae-shared": {
        "about": (
            "the digits-hvae with weight sharing (seed000 §2.1, time-homogeneous): at each resolution one "
            "top-down block and one bottom-up block applied several times (rN), same depth, fewer weights"
        ),
        "family": "hvae",
        "data": {"name": "digits", "options": {"size": 16}},
        "model": {
            "encoder": "16r3,16d2,8r3,8d2,4r3,4d4,1x2",
            "decoder": "1x1,4m1,4r3,8m4,8r3,16m8,16r4",
            "width": 32,
            "zdim": 4,
            "likelihood": "bernoulli",
        },
        "train": {
            "steps": 3000,
            "batch_size": 64,
            "lr": 1e-3,
            "grad_clip": 200.0,
            "grad_skip": 3000.0,
            "eval_every": 500,
            "checkpoint_every": 1000,
        },
        "demo": True,
    },
    "digits-hvae-normalised": {
        "about": (
            "the digits-hvae with the residual state normalised to unit norm at every block: the ablation of "
            "seed000 Table 3.2 (same budget)"
        ),
        "family": "hvae",
        "data": {"name": "digits", "options": {"size": 16}},
        "model": {
            "encoder": "16x3,16d2,8x3,8d2,4x3,4d4,1x2",
            "decoder": "1x1,4m1,4x3,8m4,8x3,16m8,16x4",
            "width": 32,
            "zdim": 4,
            "likelihood": "bernoulli",
            "normalise_state": True,
        },
        "train": {
            "steps": 3000,
            "batch_size": 64,
            "lr": 1e-3,
            "grad_clip": 200.0,
            "grad_skip": 3000.0,
            "eval_every": 500,
            "checkpoint_every": 1000,
        },
        "demo": True,
    },
    "shapes-hvae": {
        "about": "VDVAE-style HVAE on 32x32 shapes (colour, discretised logistic mixture); about 15 minutes on a CPU",
        "family": "hvae",
        "data": {"name": "shapes", "options": {"size": 32, "n": 20000}},
        "model": {
            "encoder": "32x2,32d2,16x2,16d2,8x2,8d2,4x2,4d4,1x2",
            "decoder": "1x1,4m1,4x2,8m4,8x2,16m8,16x2,32m16,32x2",
            "width": 32,
            "zdim": 4,
            "likelihood": "dmol",
            "mixtures": 5,
        },
        "train": {
            "steps": 8000,
            "batch_size": 32,
            "lr": 1e-3,
            "grad_clip": 200.0,
            "grad_skip": 3000.0,
            "eval_every": 1000,
            "checkpoint_every": 1000,
        },
        "demo": False,
    },
    "mnist-hvae-thesis": {
        "about": (
            "VDVAE* on MNIST as in the thesis (seed000 §2.3, Table B.3): padded to 32x32, dynamically binarised "
            "in the thesis (here: grey values with a Bernoulli likelihood), width 32, 8 latent channels, "
            "lr 1e-4, batch 200, grad clip 200, EMA 0.9999; needs the MNIST files and a GPU"
        ),
        "family": "hvae",
        "data": {"name": "file:USER_PATH/mnist", "options": {}},
        "model": {
            "encoder": "32x11,32d2,16x6,16d2,8x6,8d2,4x3,4d4,1x3",
            "decoder": "1x1,4m1,4x2,8m4,8x5,16m8,16x10,32m16,32x21",
            "width": 32,
            "zdim": 8,
            "likelihood": "bernoulli",
        },
        "train": {
            "steps": 1000000,
            "batch_size": 200,
            "lr": 1e-4,
            "grad_clip": 200.0,
            "grad_skip": 3000.0,
            "ema_decay": 0.9999,
            "weight_decay": 0.01,
            "eval_every": 5000,
            "checkpoint_every": 10000,
        },
        "demo": False,
    },
    "bernoulli-icl": {
        "about": (
            "in-context learner (seed000 §4.5): a 2-layer causal transformer of width 64 trained by next-token "
            "maximum likelihood on exchangeable Bernoulli sequences of length 128, theta ~ Beta(1, 1); a few "
            "minutes on a 2-core CPU"
        ),
        "family": "icl",
        "data": {"name": "exchangeable", "options": {"family": "bernoulli", "n": 20000, "length": 128}},
        "model": {"observation": "bernoulli", "width": 64, "layers": 2, "heads": 4},
        "train": {
            "steps": 600,
            "batch_size": 16,
            "lr": 2e-3,
            "grad_clip": 1.0,
            "eval_every": 100,
            "eval_examples": 500,
            "checkpoint_every": 200,
            "log_every": 25,
        },
        "demo": True,
    },
    "gaussian-icl": {
        "about": (
            "in-context learner (seed000 §4.5): the bernoulli-icl transformer on exchangeable Gaussian "
            "sequences N(theta, 1), theta ~ N(0, 1), with a (mean, log std) head; a few minutes on a 2-core CPU"
        ),
        "family": "icl",
        "data": {"name": "exchangeable", "options": {"family": "gaussian", "n": 20000, "length": 128}},
        "model": {"observation": "gaussian", "width": 64, "layers": 2, "heads": 4},
        "train": {
            "steps": 600,
            "batch_size": 16,
            "lr": 2e-3,
            "grad_clip": 1.0,
            "eval_every": 100,
            "eval_examples": 500,
            "checkpoint_every": 200,
            "log_every": 25,
        },
        "demo": False,
    },
    "mixed-hhvaem": {
        "about": (
            "HH-VAEM-style hierarchical VAE (seed002 ch. 5) on the synthetic mixed-type table with 30% of the "
            "values missing at random, predicting real_0: 3,000 ELBO steps, then 500 steps tuning HMC "
            "(learned step sizes, inflation by SKSD); about 4.5 minutes on a shared 2-core CPU"
        ),
        "family": "hhvaem",
        "data": {"name": "mixed", "options": {"missing_rate": 0.3, "missing_as_nan": True}},
        "model": {
            "target": "real_0",
            "latent_dims": [8, 4],
            "hidden": 128,
            "hmc_steps": 10,
            "n_leapfrog": 5,
            "vi_steps": 3000,
        },
        "train": {"steps": 3500, "batch_size": 100, "lr": 1e-3, "eval_every": 500, "checkpoint_every": 500},
        "demo": True,
    },
    "wine-hhvaem": {
        "about": (
            "HH-VAEM-style hierarchical VAE on the wine table (13 positive columns, log-normal) with 30% missing "
            "at random, predicting the cultivar (appended as a categorical column), latent layers (10, 5) and "
            "weight decay 0.01 as in seed002 §2.5/§2.7; 2,000 ELBO + 500 HMC steps, about 4 minutes on a shared "
            "2-core CPU"
        ),
        "family": "hhvaem",
        "data": {"name": "wine", "options": {"missing_rate": 0.3, "missing_as_nan": True, "label_as_column": True}},
        "model": {
            "target": "class",
            "latent_dims": [10, 5],
            "hidden": 128,
            "hmc_steps": 10,
            "n_leapfrog": 5,
            "vi_steps": 2000,
        },
        "train": {
            "steps": 2500,
            "batch_size": 24,
            "lr": 1e-3,
            "weight_decay": 0.01,
            "eval_every": 500,
            "checkpoint_every": 500,
        },
        "demo": False,
    },
    "diabetes-hhvaem": {
        "about": (
            "HH-VAEM-style hierarchical VAE on the diabetes table (9 positive columns, sex binary) with 30% "
            "missing at random, predicting disease progression (appended as a positive column), latent layers "
            "(4, 2) and T = 5 as in seed002 §2.5/§2.7; about 3 minutes on a shared 2-core CPU"
        ),
        "family": "hhvaem",
        "data": {"name": "diabetes", "options": {"missing_rate": 0.3, "missing_as_nan": True, "label_as_column": True}},
        "model": {
            "target": "target",
            "latent_dims": [4, 2],
            "hidden": 128,
            "hmc_steps": 5,
            "n_leapfrog": 5,
            "vi_steps": 3000,
        },
        "train": {"steps": 3500, "batch_size": 100, "lr": 1e-3, "eval_every": 500, "checkpoint_every": 500},
        "demo": False,
    },
    # Bijecta (seed001 ch. 4): linear ICA on an RQS flow with MLP couplings on the flat image, and
    # the stand-alone JL-Cayley linear ICA it is compared with (Table C.1). Times: one CPU thread.
    "hearts-bijecta": {
        "about": (
            "Bijecta with 2 quasi-uniform sources (GG, rho = 10) on a 3-layer RQS flow, on seed001's affine-heart "
            "data (one grey heart moved over 32x32, Figs 4.1 and 4.6): for the 2-D source traversal; "
            "about 4 minutes (0.16 s a step)"
        ),
        "family": "bijecta",
        "data": {
            "name": "shapes",
            "options": {"size": 32, "n": 10000, "shape": "heart", "fix": "scale,rotation,colour", "grey": True},
        },
        "model": {"source_dim": 2, "prior_power": 10.0, "flow_layers": 3, "coupling_hidden": [256]},
        "train": {"steps": 1500, "batch_size": 64, "lr": 1e-3, "eval_every": 500, "checkpoint_every": 500},
        "demo": False,
    },
    "digits-bijecta": {
        "about": (
            "Bijecta with 16 quasi-uniform sources on a 4-layer RQS flow on the 8x8 digits: traversals and "
            "samples of a flow with ICA sources; about 2 minutes"
        ),
        "family": "bijecta",
        "data": {"name": "digits", "options": {}},
        "model": {"source_dim": 16, "prior_power": 10.0, "flow_layers": 4, "coupling_hidden": [256, 256]},
        "train": {"steps": 4000, "batch_size": 128, "lr": 1e-3, "eval_every": 500, "checkpoint_every": 1000},
        "demo": False,
    },
    "digits-linear-ica": {
        "about": (
            "JL-Cayley linear ICA (no flow, 16 quasi-uniform sources, seed001 §4.7) on the 8x8 digits: the "
            "baseline of digits-bijecta; seconds"
        ),
        "family": "bijecta",
        "data": {"name": "digits", "options": {}},
        "model": {"source_dim": 16, "prior_power": 10.0, "flow_layers": 0, "unmixing": "cayley"},
        "train": {"steps": 4000, "batch_size": 128, "lr": 1e-3, "eval_every": 1000, "checkpoint_every": 2000},
        "demo": False,
    },
    "fashion-bijecta": {
        "about": (
            "4-layer Bijecta with d_s = 64 on Fashion-MNIST as in Table C.1 (bits per dimension and log p(s) / d_s "
            "logged at each evaluation), a short run: 1,500 steps of 64 (1.6 epochs), about 4 minutes"
        ),
        "family": "bijecta",
        "data": {"name": "fashion-mnist", "options": {}},
        "model": {"source_dim": 64, "prior_power": 10.0, "flow_layers": 4, "coupling_hidden": [256]},
        "train": {"steps": 1500, "batch_size": 64, "lr": 1e-3, "eval_every": 500, "checkpoint_every": 500},
        "demo": False,
    },
    "fashion-linear-ica": {
        "about": (
            "JL-Cayley linear ICA (no flow) with d_s = 64 on Fashion-MNIST, Table C.1's Linear-ICA row "
            "(6.6 bits per dimension there); under a minute"
        ),
        "family": "bijecta",
        "data": {"name": "fashion-mnist", "options": {}},
        "model": {"source_dim": 64, "prior_power": 10.0, "flow_layers": 0, "unmixing": "cayley"},
        "train": {"steps": 3000, "batch_size": 128, "lr": 1e-3, "eval_every": 1000, "checkpoint_every": 1000},
        "demo": False,
    },
}


def beta_sweep() -> dict[str, dict]:
    """beta-TCVAE and Seatbelt-VAE presets at beta = 1, 2, 4, 6 (seed001 Figs D.4 and D.5
    sweep beta over {1, 2, 4, 6, 8, 10}): the digits with digits-tcvae's MLP, batch and
    steps, so the VAE, the beta-TCVAE and the Seatbelt-VAE compare at equal budgets; and the
    shapes with shapes-vae's conv net. beta = 6 keeps the plain name (digits-tcvae,
    digits-seatbelt)."""
    mlp = {"arch": "mlp", "hidden": [256, 128], "likelihood": "bernoulli"}
    digits_train = {"steps": 4000, "batch_size": 256, "lr": 1e-3, "eval_every": 500, "checkpoint_every": 1000}
    sweep: dict[str, dict] = {}
    for beta in (1.0, 2.0, 4.0, 6.0):
        suffix = "" if beta == 6.0 else f"-b{beta:g}"
        if beta != 6.0:  # digits-tcvae (beta = 6) is above
            sweep[f"digits-tcvae{suffix}"] = {
                "about": f"beta-TCVAE (beta = {beta:g}, stratified TC estimator) on the 8x8 digits, as digits-tcvae",
                "family": "vae",
                "data": {"name": "digits", "options": {}},
                "model": {**mlp, "latent_dim": 8, "objective": "beta-tcvae", "beta": beta},
                "train": dict(digits_train),
                "demo": False,
            }
        sweep[f"digits-seatbelt{suffix}"] = {
            "about": (
                f"Seatbelt-VAE (seed001 Def 5.1, beta = {beta:g}) on the 8x8 digits: latent layers of 8 (bottom) and "
                "4 (top), the top layer's TC penalised, digits-tcvae's MLP; about a minute on a 2-core CPU"
            ),
            "family": "seatbelt",
            "data": {"name": "digits", "options": {}},
            "model": {**mlp, "layer_dims": [8, 4], "link_hidden": 128, "beta": beta},
            "train": dict(digits_train),
            "demo": beta == 6.0,
        }
    for beta in (1.0, 6.0):
        sweep["shapes-seatbelt" + ("" if beta == 6.0 else f"-b{beta:g}")] = {
            "about": (
                f"convolutional Seatbelt-VAE (beta = {beta:g}) on 32x32 procedural shapes, latent layers of 12 and 6 "
                "(the last two of the seed's dSprites z_sizes, seed001 §4.6), shapes-vae's conv net; about 10 "
                "minutes on a 2-core CPU"
            ),
            "family": "seatbelt",
            "data": {"name": "shapes", "options": {"size": 32, "n": 20000}},
            "model": {
                "arch": "conv",
                "channels": [32, 32, 64, 64],
                "hidden": [256],
                "layer_dims": [12, 6],
                "link_hidden": 128,
                "likelihood": "bernoulli",
                "beta": beta,
            },
            "train": {"steps": 12000, "batch_size": 64, "lr": 5e-4, "eval_every": 1000, "checkpoint_every": 2000},
            "demo": False,
        }
    return sweep


PRESETS.update(beta_sweep())


# seed001 ch. 3: the latent kinds and Table 3.3's corners, one family ("rrvq"); name -> (model name, settings)
CODE_MODELS: dict[str, tuple[str, dict]] = {
    "rrvq": ("RRVQ-VAE", {}),
    "rvq": ("rVQ-VAE (one layer, unit variances)", {"layers": 1, "code_variance": "unit"}),
    "spatial-vae": ("Spatial-VAE (Gaussian latents)", {"latent": "gaussian"}),
    "rrvq-unit-direct": (
        "RRVQ ablation: sigma = 1, Direct-Cat prior",
        {"code_variance": "unit", "prior_form": "direct"},
    ),
    "rrvq-unit-embedding": ("RRVQ ablation: sigma = 1, Embedding-Cat prior", {"code_variance": "unit"}),
    "rrvq-learned-direct": ("RRVQ ablation: sigma learned, Direct-Cat prior", {"prior_form": "direct"}),
}


def code_presets() -> dict[str, dict]:
    """The RRVQ-VAE, the rVQ-VAE, the Spatial-VAE and the two other corners of Table 3.3 on
    the 16x16 digits (L = 4 layers of 8x8, 4x4, 2x2, 1x1; a few minutes on a 2-core CPU) and on
    28x28 Fashion-MNIST (L = 4 layers of 14x14, 7x7, 4x4, 2x2; about ten minutes), all with
    K = 32 codes of d_e = 16 per layer and free bits of 0.1 nats per position. The thesis's
    L = 5 settings for CIFAR-10 and SVHN (App. B.5: K = 256, d_e = 128, 4 residual blocks
    between layers, batch 64, learning rate 2e-3) are the -l5 presets: a GPU run on a 32x32
    colour set the user brings as an .npz file (`latent-atlas train --preset cifar10-rrvq-l5
    --set data.path=cifar10.npz`)."""
    base = {"codes": 32, "code_dim": 16, "width": 32, "blocks": 1, "likelihood": "dmol", "mixtures": 3}
    settings = {
        "digits": (
            {"name": "digits", "options": {"size": 16}},
            {"input_shape": [1, 16, 16], "layers": 4},
            {"steps": 3000, "batch_size": 64},
            "16x16 digits",
        ),
        "fashion": (
            {"name": "fashion-mnist", "options": {}},
            {"input_shape": [1, 28, 28], "layers": 4},
            {"steps": 3000, "batch_size": 64},
            "28x28 Fashion-MNIST",
        ),
    }
    presets = {}
    for data_name, (data, shape, train, what) in settings.items():
        for key, (title, model) in CODE_MODELS.items():
            presets[f"{data_name}-{key}"] = {
                "about": f"{title} on the {what} (seed001 ch. 3)",
                "family": "rrvq",
                "data": copy.deepcopy(data),
                "model": {**base, **shape, **model},
                "train": {
                    **train,
                    "lr": 1e-3,
                    "eval_every": 500,
                    "checkpoint_every": 500,
                    "keep_checkpoints": 7,
                    "eval_examples": 500,
                },
                "demo": data_name == "digits" and key == "rrvq",
            }
    for data_name in ("cifar10", "svhn"):
        for key in ("rrvq", "rvq", "spatial-vae"):
            title, model = CODE_MODELS[key]
            layers = 1 if key == "rvq" else 5
            presets[f"{data_name}-{key}-l5"] = {
                "about": (
                    f"{title} with App. B.5's settings on 32x32 {data_name.upper()} from an .npz file of uint8 "
                    "images (pass --set data.path=FILE); a GPU run of days"
                ),
                "family": "rrvq",
                "data": {"name": "npz", "options": {}},
                "model": {
                    **model,
                    "input_shape": [3, 32, 32],
                    "layers": layers,
                    "codes": 256,
                    "code_dim": 128,
                    "width": 128,
                    "blocks": 4,
                    "likelihood": "dmol",
                    "mixtures": 10,
                },
                "train": {
                    "steps": 400_000,
                    "batch_size": 64,
                    "lr": 2e-3,
                    "eval_every": 5000,
                    "checkpoint_every": 5000,
                    "eval_examples": 1000,
                },
                "demo": False,
            }
    swatch_models = {  # §3.5: L = 1, M = a quarter of the pixels, 2 residual blocks of 32 channels each side
        "spatial-vae": ("Spatial-VAE (z in R^16 per position)", {"latent": "gaussian"}),
        "rvq": ("convolutional rVQ-VAE (d_e = K = 16)", {"code_variance": "unit"}),
        "mlp-rvq": ("MLP rVQ-VAE (d_e = K = 16)", {"code_variance": "unit", "arch": "mlp"}),
    }
    for key, (title, model) in swatch_models.items():
        presets[f"swatches-{key}"] = {
            "about": f"{title} on nine uniform colour swatches: patchwork prior samples or not (seed001 §3.5)",
            "family": "rrvq",
            "data": {"name": "swatches", "options": {"size": 16}},
            "model": {
                "input_shape": [3, 16, 16],
                "layers": 1,
                "codes": 16,
                "code_dim": 16,
                "width": 32,
                "blocks": 2,
                "likelihood": "dmol",
                "mixtures": 1,
                **model,
            },
            "train": {"steps": 1500, "batch_size": 64, "lr": 1e-3, "eval_every": 500, "checkpoint_every": 1500},
            "demo": False,
        }
    return presets


PRESETS.update(code_presets())

# The five two-factor datasets the MFCVAE recipe is checked on (scripts/facet_carry_over.py):
# name -> (data, the two factors).
CARRY_OVER: dict[str, tuple[dict, tuple[str, str]]] = {
    "facet-digits": ({"name": "facet-digits", "options": {"size": 8, "n": 20000}}, ("digit", "colour")),
    "shapes": ({"name": "shapes", "options": {"size": 32, "n": 20000, "fix": "x,y,rotation"}}, ("shape", "colour")),
    **{
        style: ({"name": "styled-digits", "options": {"style": style, "size": 16, "n": 12000}}, ("digit", style))
        for style in ("rotation", "thickness", "texture")
    },
}


def mfcvae_recipe(data: dict) -> dict:
    """A two-facet MFCVAE for a two-factor image dataset `data` ({"name", "options"}),
    the same on every dataset (issue 19, scripts/facet_carry_over.py):

    - the MLP ladder with a nonlinear head (see MFCVAEConfig.head), which costs the same
      at 8x8 and 16x16 and stays affordable at 32x32 on a CPU;
    - facet 1 (deep, 3 dims, KL weight 3) trains alone for 1,000 steps, so it can take the
      factor that explains most of the pixels' variance, and its narrow, strongly
      regularised latent leaves the rest to facet 0 (shallow, 8 dims, KL weight 1);
    - K = 30 in both facets, about three clusters per value of a ten-valued factor (the
      thesis's 25 for MNIST's ten digits), read by majority mapping; pi fixed at 1/K.

    It separates the factors of facet-digits, shapes and styled-digits thickness, not those
    of rotation (the deep facet dies) or texture (the stripes stay mixed with the digit):
    README, "Do the facets carry over?".
    """
    return {
        "family": "mfcvae",
        "data": {"name": data["name"], "options": dict(data["options"])},
        # shapes-mfcvae's network and schedule, with a wider deep facet and K = 30 in both
        "model": {**copy.deepcopy(PRESETS["shapes-mfcvae"]["model"]), "facet_dims": [8, 3], "clusters": [30, 30]},
        "train": {"steps": 6000, "batch_size": 128, "lr": 1e-3, "eval_every": 1000, "checkpoint_every": 6000},
    }


def carry_over_presets() -> dict[str, dict]:
    """The MFCVAE recipe on the three styled digits, one preset each (the other two
    carry-over datasets have presets of their own, tuned on them)."""
    presets = {}
    for style in ("rotation", "thickness", "texture"):
        data, _ = CARRY_OVER[style]
        presets[f"styled-digits-{style}-mfcvae"] = {
            "about": (
                f"two-facet MFCVAE by the carry-over recipe (mfcvae_recipe) on the 16x16 digits x {style}; "
                "scripts/facet_carry_over.py scores it against k-means and VaDE"
            ),
            **mfcvae_recipe(data),
            "demo": False,
        }
    return presets


PRESETS.update(carry_over_presets())


# The denoisers compared in seed000 Table C.1: a Residual U-Net, and Multi-ResNets (Haar
# encoder) with the saved parameters unused or moved to the decoder (a second residual block
# per resolution brings it to 86% of the U-Net's parameters; the seed's CIFAR-10 model used 91%).
DENOISERS = {
    "ddpm": ("Residual U-Net", {"encoder": "learned"}),
    "multiresnet": ("Multi-ResNet (Haar encoder, saved parameters unused)", {"encoder": "haar"}),
    "multiresnet-v1": (
        "Multi-ResNet (saved parameters in a second decoder block per level)",
        {"encoder": "haar", "decoder_blocks": 2},
    ),
}


def diffusion_presets() -> dict[str, dict]:
    """DDPMs on the 16x16 digits (CPU, about 10 minutes each) and on 28x28 Fashion-MNIST
    (GPU): each denoiser of DENOISERS trained at once, and the Residual U-Net also by
    Algorithm 1 (stages 4, 8, 16 or 7, 14, 28, equal steps each as the seed's MNIST runs),
    with and without freezing the trained levels."""
    settings = {
        "digits": (
            {"name": "digits", "options": {"size": 16}},
            {"input_shape": [1, 16, 16], "steps": 250, "widths": [32, 64, 64], "dropout": 0.1},
            {
                "steps": 3000,
                "batch_size": 64,
                "lr": 1e-3,
                "grad_clip": 1.0,
                "ema_decay": 0.995,
                "eval_every": 1000,
                "eval_examples": 200,
                "checkpoint_every": 1000,
            },
            "about 10 minutes on a 2-core CPU",
        ),
        "fashion": (
            {"name": "fashion-mnist", "options": {}},
            {"input_shape": [1, 28, 28], "steps": 1000, "widths": [64, 128, 128], "dropout": 0.1},
            {
                "steps": 30000,
                "batch_size": 128,
                "lr": 2e-4,
                "grad_clip": 1.0,
                "ema_decay": 0.9999,
                "eval_every": 5000,
                "eval_examples": 1000,
                "checkpoint_every": 5000,
            },
            "a GPU run",
        ),
    }
    presets = {}
    for prefix, (data, model, train, cost) in settings.items():
        side = model["input_shape"][-1]
        sizes = ", ".join(str(side // 2**i) for i in reversed(range(len(model["widths"]))))
        for name, (what, overrides) in DENOISERS.items():
            presets[f"{prefix}-{name}"] = {
                "about": f"DDPM (T = {model['steps']}, linear β, ε-loss) with a {what} on {side}x{side} {data['name']}; {cost}",
                "family": "ddpm",
                "data": copy.deepcopy(data),
                "model": {**model, **overrides},
                "train": dict(train),
                "demo": False,
            }
        stages = [train["steps"] // len(model["widths"])] * len(model["widths"])
        for suffix, freeze in (("staged", False), ("staged-frozen", True)):
            presets[f"{prefix}-ddpm-{suffix}"] = {
                "about": (
                    f"{prefix}-ddpm trained by Algorithm 1 (seed000 §4.4): stages at {sizes}, {stages[0]:,} steps each"
                    + (", each trained level frozen" if freeze else "")
                    + f"; {cost}"
                ),
                "family": "ddpm",
                "data": copy.deepcopy(data),
                "model": {**model, "stage_steps": stages, "freeze": freeze},
                "train": {**train, "keep_checkpoints": len(stages)},  # one checkpoint at the end of each stage
                "demo": False,
            }
    return presets


PRESETS.update(diffusion_presets())


def dctvae_presets() -> dict[str, dict]:
    """DCT-VAEs (seed004 App. C, E, F). On the 16x16 digits: digits-hvae's budget and latent
    layout with its top 1x1 layer replaced by the context (13 layers below it: 4 at 4x4, 4 at
    8x8, 5 at 16x16); the encoder stops at 4x4, the lowest resolution the decoder reads. The
    context is 4x4 DCT coefficients on 2 bits: Table 6 keeps 6x6 of MNIST's 28x28, and 6 x 16/28
    = 3.4 is rounded up to 4 (about the same share of the spectrum, 6.3% of the coefficients
    against 4.6%). On 28x28 MNIST and Fashion-MNIST Table 6's settings as far as the HVAE and the
    trainer express them: 3 layers at 7x7 and 4 at 14x14 of 1 channel, a 6x6 context, width 32
    with hidden width 40, batch 128, lr 1e-3, weight decay 1e-2, grad clip 1, skip 100, 600 epochs;
    the diffusion prior with T = 7, a one-level U-Net of 32 channels and 3 residual blocks. Not
    expressed: the decoder needs a latent layer at the output's 28x28 (one more than Table 6), the
    trainer's Adam adds the weight decay to the gradient (AdamW decouples it) and keeps the
    learning rate constant (no cosine decay to 1e-5)."""
    digits = copy.deepcopy(PRESETS["digits-hvae"])
    digits_model = {
        **digits["model"],
        "encoder": "16x3,16d2,8x3,8d2,4x4",
        "decoder": "4x4,8m4,8x3,16m8,16x4",
        "context_size": 4,
        "context_bits": 2,
    }
    presets = {
        "digits-dctvae": {
            "about": (
                "DCT-VAE on the digits at 16x16: digits-hvae with its top latent replaced by a 4x4 block of "
                "DCT coefficients on 4 levels with a 7-step diffusion prior; 13 latent layers of 4 channels "
                "below it; a CPU run of about as long as digits-hvae's"
            ),
            "family": "dctvae",
            "data": digits["data"],
            "model": {**digits_model, "context": "dct"},
            "train": dict(digits["train"]),
            "demo": False,
        },
        "digits-dctvae-pool": {
            "about": (
                "digits-dctvae with App. F's context: the image average-pooled to 4x4, on 4 levels, "
                "decoded by nearest upsampling"
            ),
            "family": "dctvae",
            "data": copy.deepcopy(digits["data"]),
            "model": {**digits_model, "context": "pool"},
            "train": dict(digits["train"]),
            "demo": False,
        },
    }
    table6 = {
        "encoder": "28x2,28d2,14x3,14d2,7x3",
        "decoder": "7x3,14m7,14x3,28m14",
        "width": 32,
        "bottleneck": 1.25,  # hidden width 40
        "zdim": 1,
        "likelihood": "bernoulli",
        "context": "dct",
        "context_size": 6,
        "context_bits": 2,
        "prior_steps": 7,
        "prior_width": 32,
        "prior_blocks": 3,
    }
    train = {
        "steps": 600 * 60000 // 128,  # 600 epochs
        "batch_size": 128,
        "lr": 1e-3,
        "weight_decay": 1e-2,
        "grad_clip": 1.0,
        "grad_skip": 100.0,
        "eval_every": 5000,
        "checkpoint_every": 10000,
    }
    for prefix, data, what in (
        ("mnist", {"name": "file:USER_PATH/mnist", "options": {}}, "MNIST (needs the MNIST files)"),
        ("fashion", {"name": "fashion-mnist", "options": {}}, "Fashion-MNIST"),
    ):
        presets[f"{prefix}-dctvae"] = {
            "about": (
                f"DCT-VAE on {what} with Table 6's MNIST settings: 3 latent layers at 7x7 and 4 at 14x14 "
                "(and one at 28x28, which this HVAE needs), a 6x6 DCT context on 4 levels, 7-step diffusion "
                "prior; Adam with L2 weight decay at a constant lr (no AdamW, no cosine); a GPU run"
            ),
            "family": "dctvae",
            "data": data,
            "model": dict(table6),
            "train": dict(train),
            "demo": False,
        }
    return presets


PRESETS.update(dctvae_presets())


def tdvae_presets() -> dict[str, dict]:
    """TD-VAE and TD-IWAE on whitened natural patches (seed003 §5.1). The thesis: 20x20 patches,
    z1 450 Laplace, z2 20 Gaussian, a linear decoder with sigma 0.4, Adam lr 1e-4, batch 400,
    beta on the z2 term 0.1 -> 1 over the first half of training, 640,000 training patches (from
    van Hateren's photographs; here scikit-learn's two sample photographs) and 5,000 epochs. Its
    MLP widths are not given: 1,000 units for the feature MLPs and 500 for each head here.

    The CPU presets ("patches-*") keep the shape of the model at a size a 2-core CPU trains in
    minutes: 12x12 patches, z1 160 (overcomplete, 144 pixels), z2 10, MLPs of 256 / 128 units,
    5,000 steps of 200 patches at lr 1e-3 (k = 10 about 5 minutes of one thread, k = 1 about
    one). Their projective fields have not formed in that budget: they start to take shape
    after about 15,000 steps (scripts/sparse_patches.py reports a run of 40,000), and at lr
    3e-3 the code became sparser and more Gabor-like at a much worse bound (-ELBO 284 against
    229 nats at 10,000 steps). The
    "-thesis" presets have the thesis's sizes for a GPU, with 200,000 steps (62 epochs) instead
    of its 5,000 epochs. Both hold out a fifth of the patches for testing (the thesis: 640,000
    and 64,000), which is the split the textures' whitening is computed for (engine.data.patches)."""
    cpu = {
        "data": {"name": "patches", "options": {"size": 12, "n": 60_000, "test_fraction": 0.2}},
        "model": {"input_shape": [1, 12, 12], "z1_dim": 160, "z2_dim": 10, "hidden": [256], "head_hidden": [128]},
        "train": {
            "steps": 5000,
            "batch_size": 200,
            "lr": 1e-3,
            "grad_clip": 100.0,
            "eval_every": 1000,
            "checkpoint_every": 1000,
        },
    }
    thesis = {
        "data": {"name": "patches", "options": {"size": 20, "n": 800_000, "test_fraction": 0.2}},
        "model": {"input_shape": [1, 20, 20], "z1_dim": 450, "z2_dim": 20, "hidden": [1000], "head_hidden": [500]},
        "train": {
            "steps": 200_000,
            "batch_size": 400,
            "lr": 1e-4,
            "grad_clip": 100.0,
            "eval_every": 5000,
            "checkpoint_every": 10_000,
        },
    }
    presets = {}
    for suffix, base, where in (
        ("", cpu, "a CPU run of minutes"),
        ("-thesis", thesis, "the thesis's sizes, a GPU run"),
    ):
        half = base["train"]["steps"] // 2
        for k in (0, 1, 4, 10, 50):
            family = "tdvae" if k == 0 else "tdiwae"
            name = f"patches-{family}" + (f"-k{k}" if k else "") + suffix
            objective = "the ELBO with analytic KLs" if k == 0 else f"the importance-weighted bound with k = {k}"
            presets[name] = {
                "about": f"{family.upper()} on whitened natural patches, trained on {objective}; {where}",
                "family": family,
                "data": copy.deepcopy(base["data"]),
                "model": {**base["model"], "beta_start": 0.1, "beta_steps": half, **({"k": k} if k else {})},
                "train": dict(base["train"]),
                "demo": False,
            }
    long = copy.deepcopy(presets["patches-tdvae"])
    long["about"] = (
        "patches-tdvae trained 8 times longer (40,000 steps, beta over the first 20,000): long enough for "
        "localised, oriented projective fields to form; about 15 minutes of one CPU thread"
    )
    long["model"]["beta_steps"] = 20_000
    long["train"].update({"steps": 40_000, "eval_every": 5000, "checkpoint_every": 5000})
    presets["patches-tdvae-long"] = long
    # the thesis's patch and code sizes at the long CPU run's pace, for the Gabor census at 20x20
    # (where the thesis's localisation filter applies unscaled)
    sized = copy.deepcopy(presets["patches-tdvae-thesis"])
    sized["about"] = (
        "TD-VAE at the thesis's sizes (20x20 patches, z1 450, z2 20, MLPs of 1,000 / 500) trained like "
        "patches-tdvae-long (40,000 steps of 200 at lr 1e-3, beta over the first 20,000): about an hour of one "
        "CPU thread"
    )
    sized["data"]["options"]["n"] = 200_000
    sized["model"]["beta_steps"] = 20_000
    sized["train"].update(
        {"steps": 40_000, "batch_size": 200, "lr": 1e-3, "eval_every": 5000, "checkpoint_every": 5000}
    )
    presets["patches-tdvae-20"] = sized
    return presets


PRESETS.update(tdvae_presets())


def get_preset(name: str) -> dict:
    if name not in PRESETS:
        raise AtlasError(f"unknown preset {name!r}; known presets: {', '.join(sorted(PRESETS))}")
    return PRESETS[name]
