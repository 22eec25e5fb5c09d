"""A saved pythae model folder (`model.save(folder)`: model_config.json and model.pt) as an
atlas run of the family "pythae-vae" (engine/models/pythae_vae.py).

Taken: the VAE-type models whose encoder gives a mean and a log-variance under a N(0, I)
prior, on pythae's default networks. Refused, with the reason: a custom encoder or decoder
(pythae pickles those to encoder.pkl / decoder.pkl, and unpickling runs code), models with
another prior or posterior (VAMP, the flows, the hyperspherical and Poincaré VAEs, RHVAE)
and the deterministic autoencoders. model.pt is opened with torch.load(weights_only=True).
"""

from __future__ import annotations

from pathlib import Path

from engine.adapters import Converted, check_tensors, numel, positive_int, read_json, read_torch_weights
from engine.errors import AtlasError
from engine.models.pythae_vae import HIDDEN

# pythae config class: (its model, the atlas objective closest to what it trained, a note when they differ)
MODELS = {
    "VAEConfig": ("VAE", "elbo", ""),
    "BetaVAEConfig": ("BetaVAE", "beta-vae", ""),
    "BetaTCVAEConfig": ("BetaTCVAE", "beta-tcvae", ""),
    "DisentangledBetaVAEConfig": ("DisentangledBetaVAE", "beta-vae", "trained toward a KL capacity C"),
    "IWAEConfig": ("IWAE", "elbo", "trained on the importance-weighted bound"),
    "MIWAEConfig": ("MIWAE", "elbo", "trained on the multiply importance-weighted bound"),
    "PIWAEConfig": ("PIWAE", "elbo", "trained with partially importance-weighted encoder gradients"),
    "CIWAEConfig": ("CIWAE", "elbo", "trained on a combination of the ELBO and the IWAE bound"),
    "InfoVAEConfig": ("InfoVAE", "elbo", "trained with an MMD term on the aggregate posterior"),
    "MSSSIM_VAEConfig": ("MSSSIM_VAE", "elbo", "trained with an MS-SSIM reconstruction loss"),
    "FactorVAEConfig": ("FactorVAE", "elbo", "trained with a total-correlation discriminator, which is dropped"),
}
REFUSED = {
    "VAMPConfig": "its VampPrior is a mixture over learned pseudo-inputs, not N(0, I)",
    "RHVAEConfig": "its Riemannian posterior and prior are not a Gaussian encoder under N(0, I)",
    "HVAEConfig": "its Hamiltonian flow changes the posterior",
    "VAE_IAF_Config": "its inverse autoregressive flow changes the posterior",
    "VAE_LinNF_Config": "its normalising flow changes the posterior",
    "SVAEConfig": "its latents live on a hypersphere",
    "PoincareVAEConfig": "its latents live on a Poincaré ball",
    "VQVAEConfig": "its latents are discrete codes",
}
DROPPED_PREFIXES = ("discriminator.",)  # FactorVAE's TC discriminator: part of its training, not its model


def convert(folder: Path, **options) -> Converted:
    if options:
        raise AtlasError(f"the pythae adapter takes no options, got {', '.join(sorted(options))}")
    config = read_json(folder / "model_config.json", "the pythae model config")
    name = config.get("name")
    if name in REFUSED:
        raise AtlasError(f"pythae's {name[: -len('Config')]} cannot be brought in: {REFUSED[name]}")
    if name not in MODELS:
        raise AtlasError(
            f"model_config.json names {name!r}; the pythae models the atlas takes are "
            f"{', '.join(m for m, _, _ in MODELS.values())} (VAE-type models on pythae's default networks)"
        )
    model, objective, note = MODELS[name]
    for side in ("encoder", "decoder"):
        if config.get(f"uses_default_{side}") is not True or (folder / f"{side}.pkl").exists():
            raise AtlasError(
                f"this {model} has a custom {side}, which pythae saves pickled ({side}.pkl); unpickling runs code, "
                "so the atlas does not open it. Write the network as an atlas plugin family "
                "(engine/models/plugins.py) and export its weights with safetensors"
            )
    input_dim = config.get("input_dim")
    if not isinstance(input_dim, list) or not 1 <= len(input_dim) <= 3:
        raise AtlasError(f"model_config.json: input_dim must be a list of 1 to 3 sizes, got {input_dim!r}")
    shape = tuple(positive_int({"input_dim": s}, "input_dim", "model_config.json", 4096) for s in input_dim)
    latent_dim = positive_int(config, "latent_dim", "model_config.json", 4096)
    loss = config.get("reconstruction_loss", "mse")
    if loss not in ("bce", "mse"):
        raise AtlasError(f"model_config.json: reconstruction_loss {loss!r} is neither 'bce' nor 'mse'")
    beta = config.get("beta", 1.0) if objective != "elbo" else 1.0
    if not isinstance(beta, int | float) or isinstance(beta, bool) or not 0 <= beta < 1e6:
        raise AtlasError(f"model_config.json: beta must be a number >= 0, got {beta!r}")

    n = numel(shape)
    expected = {
        "encoder.layers.0.0.weight": (HIDDEN, n),
        "encoder.layers.0.0.bias": (HIDDEN,),
        "encoder.embedding.weight": (latent_dim, HIDDEN),
        "encoder.embedding.bias": (latent_dim,),
        "encoder.log_var.weight": (latent_dim, HIDDEN),
        "encoder.log_var.bias": (latent_dim,),
        "decoder.layers.0.0.weight": (HIDDEN, latent_dim),
        "decoder.layers.0.0.bias": (HIDDEN,),
        "decoder.layers.1.0.weight": (n, HIDDEN),
        "decoder.layers.1.0.bias": (n,),
    }
    state = read_torch_weights(folder / "model.pt", "the pythae weights", key="model_state_dict")
    dropped = sorted(k for k in state if k.startswith(DROPPED_PREFIXES))
    state = {k: v for k, v in state.items() if not k.startswith(DROPPED_PREFIXES)}
    check_tensors(state, expected, "the pythae weights (model.pt)")
    weights = {k: v.float() for k, v in state.items()}
    notes = [f"pythae {model}" + (f", {note}" if note else "")]
    if dropped:
        notes.append(f"dropped {len(dropped)} tensors of its training-only parts ({dropped[0].split('.')[0]})")
    if loss == "mse":
        notes.append("its 'mse' loss is read as a unit-variance Gaussian likelihood around the decoder's output")
    return Converted(
        family="pythae-vae",
        model={
            "input_shape": list(shape),
            "latent_dim": latent_dim,
            "reconstruction_loss": loss,
            "pythae_model": model,
            "objective": objective,
            "beta": float(beta),
        },
        weights=weights,
        source=f"pythae {model} (model_config.json, model.pt)",
        notes=notes,
    )
