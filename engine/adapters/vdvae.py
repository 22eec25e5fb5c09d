"""openai/vdvae checkpoints as atlas "vdvae" runs (engine/models/vdvae.py).

    run = adapt("vdvae", folder, runs_root, data={"name": "file:...", "options": {}}, hps="cifar10")

vdvae saves `torch.save(model.state_dict())` as `<prefix>-model.th` and `<prefix>-model-ema.th`
(the EMA weights, which its evaluations use, are preferred here), with a "module." prefix when
the model was wrapped for distributed training. The file says nothing about the architecture:
that comes from its hyperparameters, given as
- `hps`: one of vdvae's presets (PRESETS, from its hps.py and data.py), or a JSON object of
  settings under vdvae's names, whose "hps" (or "hparam_sets") names the preset it changes;
- `hparams.json` in the folder, the same kind of object (applied before `hps`'s JSON);
- keyword overrides (width=..., dec_blocks=...), applied last.
The atlas family keeps vdvae's parameter names, so the key map is: strip "module.", then every
name and shape must be exactly what the config implies (checked before the model is built).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from engine.adapters import Converted, check_tensors, read_json, read_torch_weights
from engine.errors import AtlasError
from engine.models import check_model_size, config_from_dict
from engine.models.vdvae import VDVAE, VDVAEConfig

_CIFAR10 = {
    "width": 384,
    "zdim": 16,
    "enc_blocks": "32x11,32d2,16x6,16d2,8x6,8d2,4x3,4d4,1x3",
    "dec_blocks": "1x1,4m1,4x2,8m4,8x5,16m8,16x10,32m16,32x21",
    "bottleneck_multiple": 0.25,
    "num_mixtures": 10,
    "custom_width_str": "",
    "no_bias_above": 64,
    "dataset": "cifar10",
}
_I32 = {
    **_CIFAR10,
    "width": 512,
    "enc_blocks": "32x15,32d2,16x9,16d2,8x8,8d2,4x6,4d4,1x6",
    "dec_blocks": "1x2,4m1,4x4,8m4,8x9,16m8,16x19,32m16,32x40",
    "dataset": "imagenet32",
}
_I64 = {
    **_I32,
    "enc_blocks": "64x11,64d2,32x20,32d2,16x9,16d2,8x8,8d2,4x7,4d4,1x5",
    "dec_blocks": "1x2,4m1,4x3,8m4,8x7,16m8,16x15,32m16,32x31,64m32,64x12",
    "dataset": "imagenet64",
}
_FFHQ256 = {
    **_I64,
    "enc_blocks": "256x3,256d2,128x8,128d2,64x12,64d2,32x17,32d2,16x7,16d2,8x5,8d2,4x5,4d4,1x4",
    "dec_blocks": "1x2,4m1,4x3,8m4,8x4,16m8,16x9,32m16,32x21,64m32,64x13,128m64,128x7,256m128",
    "dataset": "ffhq_256",
}
PRESETS = {  # vdvae's hps.py HPARAMS_REGISTRY, the architecture only
    "cifar10": _CIFAR10,
    "imagenet32": _I32,
    "imagenet64": _I64,
    "ffhq256": _FFHQ256,
    "ffhq1024": {
        **_FFHQ256,
        "width": 16,
        "num_mixtures": 2,
        "enc_blocks": "1024x1,1024d2,512x3,512d2,256x5,256d2,128x7,128d2,64x10,64d2,32x14,32d2,16x7,16d2,"
        "8x5,8d2,4x5,4d4,1x4",
        "dec_blocks": "1x2,4m1,4x3,8m4,8x4,16m8,16x9,32m16,32x20,64m32,64x14,128m64,128x7,256m128,256x2,"
        "512m256,1024m512",
        "custom_width_str": "512:32,256:64,128:512,64:512,32:512,16:512,8:512,4:512,1:512",
        "dataset": "ffhq_1024",
    },
}
DATASETS = {  # vdvae's data.py: image size, the encoder's input (pixel + shift) * scale, pixel scale, 5-bit loss
    "cifar10": {"image_size": 32, "shift": -120.63838, "scale": 1 / 64.16736, "pixel_max": 255.0},
    "imagenet32": {"image_size": 32, "shift": -116.2373, "scale": 1 / 69.37404, "pixel_max": 255.0},
    "imagenet64": {"image_size": 64, "shift": -115.92961967, "scale": 1 / 69.37404, "pixel_max": 255.0},
    "ffhq_256": {
        "image_size": 256,
        "shift": -112.8666757481,
        "scale": 1 / 69.84780273,
        "pixel_max": 255.0,
        "low_bit": True,
    },
    "ffhq_1024": {"image_size": 1024, "shift": -0.4387, "scale": 1 / 0.2743, "pixel_max": 1.0},
}
ARCHITECTURE = (
    "width",
    "zdim",
    "enc_blocks",
    "dec_blocks",
    "bottleneck_multiple",
    "num_mixtures",
    "custom_width_str",
    "no_bias_above",
    "image_size",
    "image_channels",
    "dataset",
    "shift",
    "scale",
    "pixel_max",
    "low_bit",
)
TRAINING_ONLY = {  # vdvae's other arguments (hps.py add_vae_arguments): read past, they do not shape the network
    *("seed", "port", "save_dir", "data_root", "desc", "restore_path", "restore_ema_path", "restore_log_path"),
    *("restore_optimizer_path", "ema_rate", "scale_encblock", "test_eval", "warmup_iters", "grad_clip"),
    *("skip_threshold", "lr", "lr_prior", "wd", "wd_prior", "num_epochs", "n_batch", "adam_beta1", "adam_beta2"),
    *("temperature", "iters_per_ckpt", "iters_per_print", "iters_per_save", "iters_per_images", "epochs_per_eval"),
    *("epochs_per_probe", "epochs_per_eval_save", "num_images_visualize", "num_variables_visualize"),
    *("num_temperatures_visualize", "local_rank", "mpi_size", "rank", "logdir"),
}


def convert(folder: Path, hps: str | None = None, checkpoint: str | None = None, **overrides) -> Converted:
    """The vdvae checkpoint in `folder` as a "vdvae" family config and state dict. `hps` is a
    preset name or a JSON object of settings (see the module docstring); without it and without
    a preset named in hparams.json, "cifar10". `checkpoint` names the weight file in `folder`."""
    folder = Path(folder)
    settings, name = hyperparameters(folder, hps, overrides)
    config = config_from_dict("vdvae", settings)
    check_model_size("vdvae", config)
    path = weight_file(folder, checkpoint)
    tensors = read_torch_weights(path, "the vdvae checkpoint")
    tensors, stripped = without_module_prefix(tensors, path.name)
    check_against(tensors, config, name, path.name)
    notes = [
        f"weights from {path.name} ({'the EMA average' if 'ema' in path.name else 'not the EMA average'})",
        f"architecture of vdvae's {name!r} hyperparameters" + (" with changes" if name != config.hps else ""),
        f"inputs in [0, 1] enter the encoder as (x * {config.pixel_max:g} + {config.shift:g}) * {config.scale:.6g}; "
        "the ELBO is in nats per image (vdvae reports nats per dimension)",
    ]
    if stripped:
        notes.append("the 'module.' prefix of a distributed-training wrapper was removed from every name")
    return Converted(
        family="vdvae",
        model=config.to_dict(),
        weights={k: v.float().contiguous() for k, v in tensors.items()},
        source=f"openai/vdvae checkpoint {path.name} ({name})",
        notes=notes,
    )


def hyperparameters(folder: Path, hps: str | None, overrides: dict) -> tuple[dict, str]:
    """The VDVAEConfig values the options and folder describe, and what they are called."""
    layers = []
    file = folder / "hparams.json"
    if file.is_file():
        layers.append(read_json(file, "vdvae's hyperparameters"))
    if isinstance(hps, str) and hps.strip().startswith("{"):
        try:
            layers.append(json.loads(hps))
        except ValueError as err:
            raise AtlasError(f"hps is not valid JSON ({err}); give a preset name or a JSON object") from err
        if not isinstance(layers[-1], dict):
            raise AtlasError("hps must be a preset name or a JSON object of vdvae settings")
        hps = None
    elif hps is not None and not isinstance(hps, str):
        raise AtlasError(f"hps must be a preset name ({', '.join(PRESETS)}) or a JSON object, got {hps!r}")
    layers.append(overrides)
    named = [layer.get("hps") or layer.get("hparam_sets") for layer in layers[:-1]]
    base = hps or next((b for b in reversed(named) if b), None) or "cifar10"  # a name given here wins over a file's
    if not isinstance(base, str) or base not in PRESETS:
        raise AtlasError(
            f"vdvae has no hyperparameter set {base!r}; its sets are {', '.join(PRESETS)} "
            "(or give every setting: width, zdim, enc_blocks, dec_blocks, ...)"
        )
    merged = dict(PRESETS[base])
    for layer in layers:
        unknown = sorted(set(layer) - set(ARCHITECTURE) - TRAINING_ONLY - {"hps", "hparam_sets"})
        if unknown:
            raise AtlasError(
                f"unknown vdvae setting(s) {', '.join(unknown)}; the network's settings are {', '.join(ARCHITECTURE)}"
            )
        if "dataset" in layer and (not isinstance(layer["dataset"], str) or layer["dataset"] not in DATASETS):
            raise AtlasError(f"vdvae has no dataset {layer['dataset']!r}; its datasets are {', '.join(DATASETS)}")
        merged.update({k: v for k, v in layer.items() if k in ARCHITECTURE})
    values = resolved(merged)
    changed = values != resolved(PRESETS[base])
    channels = values.pop("image_channels")
    if channels != 3:
        raise AtlasError(f"vdvae's likelihood is over RGB images; image_channels must be 3, got {channels!r}")
    side = values.pop("image_size")
    values.pop("dataset")
    values["input_shape"] = (3, side, side)
    values["hps"] = base + (" (changed)" if changed else "")
    return values, base


def resolved(settings: dict) -> dict:
    """A preset with changes, its dataset's facts filled in where not given."""
    return {
        "image_channels": 3,
        **DATASETS[settings["dataset"]],
        **{k: v for k, v in settings.items() if k in ARCHITECTURE},
    }


def weight_file(folder: Path, checkpoint: str | None) -> Path:
    """The weight file to read: `checkpoint` (a file name in `folder`), else the one
    `*model-ema.th`, else the one `*model.th`; `latest-` wins over vdvae's `iter-N-` copies."""
    if checkpoint is not None:
        if not isinstance(checkpoint, str) or Path(checkpoint).name != checkpoint or checkpoint in ("", ".", ".."):
            raise AtlasError(f"checkpoint must be the name of a file in {folder}, got {checkpoint!r}")
        return folder / checkpoint
    for suffix in ("model-ema.th", "model.th"):
        found = sorted(p for p in folder.iterdir() if p.is_file() and p.name.endswith(suffix))
        if suffix == "model.th":
            found = [p for p in found if not p.name.endswith("model-ema.th")]
        latest = [p for p in found if p.name.startswith("latest")]
        if len(found) == 1 or len(latest) == 1:
            return (latest or found)[0]
        if found:
            raise AtlasError(
                f"{folder} holds several vdvae checkpoints ({', '.join(p.name for p in found[:4])}); "
                "name one with checkpoint=..."
            )
    raise AtlasError(f"no vdvae checkpoint in {folder}: expected a file ending in model-ema.th or model.th")


def without_module_prefix(tensors: dict[str, torch.Tensor], what: str) -> tuple[dict[str, torch.Tensor], bool]:
    """The state dict without the "module." of torch's DistributedDataParallel, which vdvae
    strips when it restores (train_helpers.restore_params); all names or none must have it."""
    prefixed = [k.startswith("module.") for k in tensors]
    if not any(prefixed):
        return tensors, False
    if not all(prefixed):
        raise AtlasError(f"{what}: some tensor names start with 'module.' and some do not; is it one model's weights?")
    return {k[len("module.") :]: v for k, v in tensors.items()}, True


def expected_shapes(config: VDVAEConfig) -> dict[str, tuple[int, ...]]:
    """Every tensor name of vdvae's VAE for this config and its shape (the model on the meta
    device: names and shapes, no storage)."""
    with torch.device("meta"):
        model = VDVAE(config)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def check_against(tensors: dict[str, torch.Tensor], config: VDVAEConfig, hps: str, what: str) -> None:
    """Every name and shape exactly as the config implies, floating point and finite; the
    likely cause (width, zdim, mixtures, block counts) named first."""
    expected = expected_shapes(config)
    said = f"hps {hps}" + (" with your changes" if "changed" in config.hps else "")
    probes = [
        ("encoder.in_conv.weight", 0, "width", config.width, "its width is"),
        ("decoder.dec_blocks.0.z_proj.weight", 1, "zdim", config.zdim, "its zdim is"),
        ("decoder.out_net.out_conv.weight", 0, "num_mixtures", 10 * config.num_mixtures, "its output has"),
    ]
    for name, dim, key, want, phrase in probes:
        got = tensors.get(name)
        if got is not None and got.dim() > dim and got.shape[dim] != want:
            found = got.shape[dim] // 10 if key == "num_mixtures" else got.shape[dim]
            said_value = want // 10 if key == "num_mixtures" else want
            raise AtlasError(
                f"{what}: {phrase} {found} ({name} {tuple(got.shape)}) but {said} says {key}={said_value}; "
                f"pass the hyperparameters it was trained with (another hps, or {key}={found})"
            )
    for part, key in (("encoder.enc_blocks", "enc_blocks"), ("decoder.dec_blocks", "dec_blocks")):
        have = {int(k.split(".")[2]) for k in tensors if k.startswith(part + ".") and k.split(".")[2].isdigit()}
        want = {int(k.split(".")[2]) for k in expected if k.startswith(part + ".")}
        if have and max(have) != max(want):
            raise AtlasError(
                f"{what}: it has {max(have) + 1} {key} but {said} says {max(want) + 1} "
                f"({getattr(config, key)!r}); pass the block string it was trained with"
            )
    check_tensors(tensors, expected, what, said, "is it a vdvae model-ema.th or model.th of these hyperparameters?")
