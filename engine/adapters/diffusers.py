"""A diffusers `AutoencoderKL` folder (as `save_pretrained` writes it) as an atlas
"autoencoder-kl" model (engine.models.autoencoder_kl), without diffusers installed.

    run = adapt("diffusers", "sd-vae/", runs_root, data={"name": "shapes", "options": {}}, image_size=32)

The folder holds config.json and diffusion_pytorch_model.safetensors (or the older
diffusion_pytorch_model.bin, opened with weights_only=True). The config is checked and the
model built on the "meta" device first, so an absurd config is refused before anything is
allocated; the weight file's size is checked against what that model can hold before it is
read. Older files name the attention layers query / key / value / proj_attn (sometimes as
1x1 convolutions); they are renamed to today's to_q / to_k / to_v / to_out.0.

Options: `image_size` (an int or [height, width]; default the config's sample_size) and
`pixel_scale`, the sd of the Gaussian likelihood the atlas assumes (default 0.1).
"""

from __future__ import annotations

from pathlib import Path

import torch

from engine.adapters import (
    Converted,
    check_tensors,
    check_weight_file,
    positive_int,
    read_json,
    read_safetensors,
    read_torch_weights,
)
from engine.errors import AtlasError
from engine.models import FAMILIES, check_model_size, config_from_dict

FAMILY = "autoencoder-kl"
SUPPORTED_CLASS = "AutoencoderKL"
SAFETENSORS, PICKLED = "diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin"
DEFAULTS = {  # diffusers' own defaults for keys a config.json leaves out
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ["DownEncoderBlock2D"],
    "up_block_types": ["UpDecoderBlock2D"],
    "block_out_channels": [64],
    "layers_per_block": 1,
    "act_fn": "silu",
    "latent_channels": 4,
    "norm_num_groups": 32,
    "sample_size": 32,
    "scaling_factor": 0.18215,
    "mid_block_add_attention": True,
    "use_quant_conv": True,
    "use_post_quant_conv": True,
}
OPTIONS = ("image_size", "pixel_scale")
LEGACY_ATTENTION = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}
HEADER_SLACK = 1 << 20  # a safetensors header or a pickle's bookkeeping beyond the tensor bytes
LIKELIHOOD_NOTE = (
    "AutoencoderKL was trained with a reconstruction loss (L1, perceptual, adversarial), not a likelihood: "
    "its ELBO, importance weights and HMC here assume p(x|z) = N(decode(z), {scale:g}^2) per pixel in [0, 1] "
    "units, a choice of the atlas (option pixel_scale), so compare such numbers between runs of this assumption only."
)


def convert(folder: Path, **options) -> Converted:
    """The AutoencoderKL saved in `folder` as an autoencoder-kl config and state dict."""
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise AtlasError(f"the diffusers adapter has no option {', '.join(unknown)}; its options are {OPTIONS}")
    raw = read_json(folder / "config.json", "the diffusers config")
    kind = raw.get("_class_name")
    if kind != SUPPORTED_CLASS:
        raise AtlasError(
            f"config.json describes a diffusers {kind!r}; only {SUPPORTED_CLASS} (a KL autoencoder, "
            "the 'vae' folder of a Stable Diffusion pipeline) can be brought in"
        )
    model = model_config(raw, options)
    config = config_from_dict(FAMILY, model)
    count = check_model_size(FAMILY, config)  # on the "meta" device: nothing allocated yet
    with torch.device("meta"):
        expected = {name: tuple(t.shape) for name, t in FAMILIES[FAMILY][1](config).state_dict().items()}
    path = weight_file(folder)
    size = check_weight_file(path, "the diffusers weights")
    most = 4 * count + HEADER_SLACK
    if size > most:
        raise AtlasError(
            f"{path.name} is {size / 2**20:.1f} MB, more than float32 weights of this config.json's model "
            f"({count:,} values) can take; is config.json the one saved with these weights?"
        )
    if path.name == SAFETENSORS:
        tensors = read_safetensors(path, "the diffusers weights")
    else:
        tensors = read_torch_weights(path, "the diffusers weights")
    tensors = current_names(tensors, expected)
    check_tensors(tensors, expected, f"the diffusers weights ({path.name})")
    version = raw.get("_diffusers_version")
    return Converted(
        family=FAMILY,
        model=config.to_dict(),
        weights={name: t.float() for name, t in tensors.items()},
        source=f"diffusers AutoencoderKL from {folder.name}/{path.name}"
        + (f" (diffusers {version})" if isinstance(version, str) else ""),
        notes=[LIKELIHOOD_NOTE.format(scale=config.pixel_scale)],
    )


def model_config(raw: dict, options: dict) -> dict:
    """The autoencoder-kl config's values from a diffusers config.json and the options."""
    model = {key: raw.get(key, default) for key, default in DEFAULTS.items()}
    if "image_size" in options:
        height, width = image_size(options, "image_size", "the option")
    else:
        height, width = image_size(model, "sample_size", "config.json")
    model["sample_size"] = height
    model["input_shape"] = [positive_int(model, "in_channels", "config.json"), height, width]
    if "pixel_scale" in options:
        model["pixel_scale"] = options["pixel_scale"]
    return model


def image_size(values: dict, key: str, what: str) -> tuple[int, int]:
    """(height, width) from an int or a [height, width] pair."""
    value = values[key]
    if isinstance(value, (list, tuple)) and len(value) == 2:
        pair = {"height": value[0], "width": value[1]}
        return positive_int(pair, "height", f"{what} {key}"), positive_int(pair, "width", f"{what} {key}")
    side = positive_int(values, key, what)
    return side, side


def weight_file(folder: Path) -> Path:
    """The safetensors file, else the .bin; a folder with neither is refused with what it holds."""
    for name in (SAFETENSORS, PICKLED):
        if (folder / name).is_file():
            return folder / name
    found = sorted(p.name for p in folder.iterdir() if p.is_file() and p.name != "config.json")[:8]
    raise AtlasError(
        f"{folder} has no {SAFETENSORS} (or {PICKLED}) beside config.json"
        + (f"; it holds {', '.join(found)}" if found else "")
        + ". Save the model with save_pretrained(folder, safe_serialization=True); a variant file "
        "(…fp16.safetensors) can be renamed to diffusion_pytorch_model.safetensors"
    )


def current_names(tensors: dict[str, torch.Tensor], expected: dict[str, tuple[int, ...]]) -> dict:
    """Older attention names (query, key, value, proj_attn) as today's, with 1x1-conv weights as
    linear ones; everything else as it is."""
    out = {}
    for name, t in tensors.items():
        path, _, leaf = name.rpartition(".")
        stem, _, layer = path.rpartition(".")
        if ".attentions." in name and layer in LEGACY_ATTENTION:
            name = f"{stem}.{LEGACY_ATTENTION[layer]}.{leaf}"
            if name in tensors:
                raise AtlasError(f"the diffusers weights hold both {name} and its older name {path}.{leaf}")
            if leaf == "weight" and t.dim() == 4 and t.shape[2:] == (1, 1) and len(expected.get(name, ())) == 2:
                t = t[:, :, 0, 0]
        out[name] = t
    return out
