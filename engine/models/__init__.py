"""Model families behind one registry: a family is a config dataclass plus a model class.

    model = build_model("vae", {"input_shape": [1, 8, 8], "latent_dim": 8})

Later families (HVAE, Seatbelt, ...) register themselves here with `register_family`;
other packages add theirs through an entry point (engine/models/plugins.py).

A family has a kind: "latent" for latent-variable models (`LatentModel`: encode, decode,
sample, elbo), which every generic page works on, "sequence" for sequential predictors
(`engine.sequence.SequentialPredictor`, e.g. the "icl" in-context learner), which only the
martingale checks use, or "diffusion" for denoising diffusion models (`DiffusionModel`:
a process, a denoiser per resolution, samples), which have pages of their own.

What every family shares: base.py (the LatentModel interface and the optional abilities as
Protocols), posteriors.py (q(z|x) from a network's output), latents.py (latents checked,
flattened and split), blocks.py (MLP and conv networks, the size limits) and
likelihoods.py (p(x|z)).

Layer 2 of the engine: imports data, sequence and the bottom modules; never inference,
diagnostics or anything above. What a model needs from a diagnostic or a sampler (the
total correlation of its objective, the HMC kernel) lives in this layer or below.
"""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import nn

from engine.errors import AtlasError
from engine.models.autoencoder_kl import AutoencoderKL, AutoencoderKLConfig
from engine.models.base import ELBOResult, LatentGroup, LatentModel
from engine.models.bijecta import Bijecta, BijectaConfig
from engine.models.dctvae import DCTVAE, DCTVAEConfig
from engine.models.ddpm import DDPM, DDPMConfig, DiffusionModel
from engine.models.hhvaem import HHVAEM, HHVAEMConfig
from engine.models.hvae import HVAE, HVAEConfig
from engine.models.icl import ICLConfig, ICLTransformer
from engine.models.mfcvae import MFCVAE, MFCVAEConfig
from engine.models.plugins import PluginFamily, PluginReport, register_plugins
from engine.models.posteriors import DiagonalGaussian
from engine.models.pythae_vae import PythaeVAE, PythaeVAEConfig
from engine.models.rrvq import RRVQVAE, RRVQConfig
from engine.models.seatbelt import SeatbeltConfig, SeatbeltVAE
from engine.models.semi_supervised import GMDGMConfig, SemiSupervisedVAE, SSVAEConfig
from engine.models.tdvae import TDVAE, TDIWAEConfig, TDVAEConfig
from engine.models.ugvae import UGVAE, UGVAEConfig
from engine.models.vae import VAE, VAEConfig
from engine.models.vdvae import VDVAE, VDVAEConfig

KINDS = ("latent", "sequence", "diffusion")
MAX_PARAMETERS = 200_000_000  # 800 MB of float32 weights, 3.2 GB with Adam's state and the gradients
MAX_INPUT_VALUES = 3 * 1024 * 1024
FAMILIES: dict[str, tuple[type, type[nn.Module]]] = {}
FAMILY_KINDS: dict[str, str] = {}


def register_family(name: str, config_cls: type, model_cls: type[nn.Module], kind: str = "latent") -> None:
    if kind not in KINDS:
        raise AtlasError(f"unknown family kind {kind!r}; use one of {', '.join(KINDS)}")
    FAMILIES[name] = (config_cls, model_cls)
    FAMILY_KINDS[name] = kind


def family_kind(name: str) -> str | None:
    """ "latent" or "sequence" for a registered family, None for an unknown name."""
    return FAMILY_KINDS.get(name)


register_family("vae", VAEConfig, VAE)
register_family("mfcvae", MFCVAEConfig, MFCVAE)
register_family("hvae", HVAEConfig, HVAE)
register_family("vdvae", VDVAEConfig, VDVAE)  # openai/vdvae's network under its own names (engine/adapters/vdvae.py)
register_family("dctvae", DCTVAEConfig, DCTVAE)  # the HVAE with a DCT (or pooled) context and a diffusion prior on it
register_family("hhvaem", HHVAEMConfig, HHVAEM)
register_family("seatbelt", SeatbeltConfig, SeatbeltVAE)
register_family("gmdgm", GMDGMConfig, SemiSupervisedVAE)
register_family("ssvae", SSVAEConfig, SemiSupervisedVAE)
register_family("ugvae", UGVAEConfig, UGVAE)  # variants "ugvae", "mlvae" (K = 1) and "gmvae" (no beta) by config
register_family("bijecta", BijectaConfig, Bijecta)  # linear ICA on an RQS flow; no flow: linear ICA
register_family("tdvae", TDVAEConfig, TDVAE)  # sparse Laplace z1 under a Gaussian z2, linear decoder
register_family("tdiwae", TDIWAEConfig, TDVAE)  # the same network on the importance-weighted bound
register_family("rrvq", RRVQConfig, RRVQVAE)  # codes (RRVQ-VAE, rVQ-VAE, Table 3.3 corners) or Gaussian (Spatial-VAE)
register_family("pythae-vae", PythaeVAEConfig, PythaeVAE)  # pythae's default MLP, for engine/adapters/pythae.py
register_family("icl", ICLConfig, ICLTransformer, kind="sequence")
register_family("autoencoder-kl", AutoencoderKLConfig, AutoencoderKL)  # diffusers' KL autoencoder (engine.adapters)
register_family("ddpm", DDPMConfig, DDPM, kind="diffusion")  # a Residual U-Net or a Multi-ResNet, staged or not
# families other packages add through the "latent_atlas.families" entry point (engine/models/plugins.py)
PLUGINS: PluginReport = register_plugins(register_family, FAMILIES)


def config_from_dict(family: str, values: dict):
    """Build a family's config from plain JSON values, rejecting unknown keys."""
    if family not in FAMILIES:
        raise AtlasError(f"unknown model family {family!r}; known families: {', '.join(sorted(FAMILIES))}")
    config_cls = FAMILIES[family][0]
    if not isinstance(values, dict):
        raise AtlasError(f"the model config must be a JSON object, got {type(values).__name__}")
    fields = {f.name for f in dataclasses.fields(config_cls) if f.init}
    unknown = sorted(set(values) - fields - {"family"})
    if unknown:
        raise AtlasError(
            f"unknown {family} config key(s) {', '.join(unknown)}; valid keys: {', '.join(sorted(fields))}"
        )
    try:
        return config_cls(**{k: v for k, v in values.items() if k in fields})
    except (TypeError, ValueError, OverflowError) as err:  # OverflowError: int(1e400)
        raise AtlasError(f"invalid {family} config: {err}") from err


def build_model(family: str, values: dict) -> nn.Module:
    config = config_from_dict(family, values)
    check_model_size(family, config)
    return FAMILIES[family][1](config)


def check_model_size(family: str, config) -> int:
    """Refuse a config whose model would not fit in memory, before anything is allocated:
    the values of one input and the parameter count of the model built on the "meta"
    device (shapes only, no storage). Returns the parameter count."""
    input_values = math.prod(getattr(config, "input_shape", ()))
    if input_values > MAX_INPUT_VALUES:
        raise AtlasError(
            f"a {family} input_shape of {list(config.input_shape)} holds {input_values:,} values per example, "
            f"more than the limit of {MAX_INPUT_VALUES:,} (3 x 1024 x 1024); use smaller inputs"
        )
    with torch.device("meta"):
        model = FAMILIES[family][1](config)
    n = sum(p.numel() for p in model.parameters()) + sum(b.numel() for b in model.buffers())
    if n > MAX_PARAMETERS:
        raise AtlasError(
            f"this {family} config makes a model of {n:,} parameters and buffers, more than the limit of "
            f"{MAX_PARAMETERS:,}; use fewer or narrower layers"
        )
    return n


__all__ = [
    "AutoencoderKL",
    "AutoencoderKLConfig",
    "Bijecta",
    "BijectaConfig",
    "DCTVAE",
    "DCTVAEConfig",
    "DDPM",
    "DDPMConfig",
    "DiffusionModel",
    "FAMILIES",
    "FAMILY_KINDS",
    "HHVAEM",
    "HHVAEMConfig",
    "HVAE",
    "HVAEConfig",
    "ICLConfig",
    "ICLTransformer",
    "KINDS",
    "DiagonalGaussian",
    "ELBOResult",
    "GMDGMConfig",
    "LatentGroup",
    "LatentModel",
    "MFCVAE",
    "MFCVAEConfig",
    "PLUGINS",
    "PluginFamily",
    "RRVQConfig",
    "RRVQVAE",
    "SeatbeltConfig",
    "SeatbeltVAE",
    "SemiSupervisedVAE",
    "SSVAEConfig",
    "TDIWAEConfig",
    "TDVAE",
    "TDVAEConfig",
    "UGVAE",
    "UGVAEConfig",
    "VAE",
    "VAEConfig",
    "VDVAE",
    "VDVAEConfig",
    "build_model",
    "check_model_size",
    "config_from_dict",
    "family_kind",
    "register_family",
]
