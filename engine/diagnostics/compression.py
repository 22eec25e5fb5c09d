"""Keeping the top of a hierarchy: ladder reconstructions and the compression view of seed004
App. G.

- `ladder`: decode x with its top n latent groups from the posterior q and the rest drawn
  from the prior at a temperature ("ladder reconstructions" of the DCT-VAE repo; App. G at
  temperature 0.1). For a DCT-VAE the context is the first group: n = 1 keeps f(x) only;
  n = 0 draws the context from its diffusion prior too. The rate is what the kept groups
  cost: the KL of each kept Gaussian layer to its conditional prior, and for the context its
  code length -L_DDGM(f(x)) under the diffusion prior (every step, a bound, its noise
  drawn from a fixed seed so that the same x always costs the same).
- `psnr` (max value 1, as the repo's helper), `jpeg` and `jpeg_at_psnr`: Pillow's JPEG at a
  quality, or at the lowest quality whose PSNR reaches a target (App. G matches JPEG's PSNR
  to the DCT-VAE's), with its rate in bits per pixel from the size of the coded scan (the
  tables in the file's headers, fixed per quality, are left out).
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from engine.diagnostics.similarity import ms_ssim
from engine.errors import AtlasError
from engine.models.hvae import HVAE, gaussian_kl


@dataclass
class Reconstruction:
    images: torch.Tensor  # (n, C, H, W) in [0, 1]
    psnr: np.ndarray  # (n,) dB
    ms_ssim: np.ndarray  # (n,)
    bits_per_pixel: np.ndarray  # (n,) the rate of what was kept, per pixel (H x W)
    what: str  # what was kept, in words


def psnr(x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    """Peak signal-to-noise ratio in dB per image of (n, ...) tensors in [0, 1]."""
    mse = (x.double() - y.double()).flatten(1).pow(2).mean(1).clamp_min(1e-12)
    return (10 * torch.log10(1.0 / mse)).cpu().numpy()


def groups_of(model: HVAE) -> list[str]:
    """The latent groups of an HVAE from the top down (a DCT-VAE's context first)."""
    return [g.name for g in model.latent_groups]


def _scored(x: torch.Tensor, images: torch.Tensor, bits: torch.Tensor | np.ndarray, what: str) -> Reconstruction:
    pixels = x.shape[-2] * x.shape[-1]
    bits = bits.cpu().numpy() if isinstance(bits, torch.Tensor) else np.asarray(bits, dtype=float)
    return Reconstruction(
        images=images.cpu(),
        psnr=psnr(x, images),
        ms_ssim=ms_ssim(x.double(), images.double()).cpu().numpy(),
        bits_per_pixel=bits / pixels,
        what=what,
    )


@torch.no_grad()
def ladder(
    model: HVAE, x: torch.Tensor, n_top: int, temperature: float = 1.0, generator: torch.Generator | None = None
) -> Reconstruction:
    """Decode x (n, C, H, W) with its top `n_top` latent groups from q (posterior draws; the
    context is f(x)) and the groups below from their priors at `temperature`."""
    if not isinstance(model, HVAE):
        raise AtlasError("ladder reconstructions need a hierarchical VAE (family 'hvae' or 'dctvae')")
    groups = groups_of(model)
    if not 0 <= n_top <= len(groups):
        raise AtlasError(f"n_top must be between 0 and {len(groups)} (the model's latent groups), got {n_top}")
    if not (math.isfinite(temperature) and temperature >= 0):
        raise AtlasError(f"temperature must be a finite number >= 0, got {temperature}")
    has_context = len(groups) > len(model.names)  # a DCT-VAE: the context is groups[0]
    kept_layers = n_top - 1 if has_context else n_top
    n = x.shape[0]
    acts = model.bottom_up(x)
    options, bits = {}, torch.zeros(n, dtype=torch.float64, device=x.device)
    if has_context:
        if n_top == 0:
            options["context"] = model.context.decode(model.sample_context(n, temperature, generator))
        else:  # every step of the bound, with fixed noise: the same x costs the same
            bits -= model.context_log_prior(acts["context"], fixed_noise=True).double() / math.log(2)
    use = [i < max(kept_layers, 0) for i in range(len(model.names))]
    params, layers = model.top_down(acts, n, use_posterior=use, temperature=temperature, generator=generator, **options)
    for layer in layers:
        if layer["q"] is not None:
            bits += gaussian_kl(layer["q"], layer["p"]).double() / math.log(2)
    kept = ", ".join(groups[:n_top]) if n_top else "nothing"
    return _scored(x, model.likelihood.mean(params), bits, f"{kept} from q; the rest from p at t = {temperature:g}")


def _jpeg_one(image: np.ndarray, quality: int) -> tuple[np.ndarray, int]:
    """One (C, H, W) image in [0, 1] through JPEG at `quality` (4:4:4, as the repo's PIL call
    with subsampling=0): the decoded image and the file's size in bytes."""
    pixels = np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)
    pil = Image.fromarray(pixels[0]) if pixels.shape[0] == 1 else Image.fromarray(pixels.transpose(1, 2, 0))
    buffer = io.BytesIO()
    pil.save(buffer, format="JPEG", quality=int(quality), subsampling=0)
    data = buffer.getvalue()
    decoded = np.asarray(Image.open(io.BytesIO(data)), dtype=np.float64) / 255.0
    decoded = decoded[None] if decoded.ndim == 2 else decoded.transpose(2, 0, 1)
    return decoded, scan_bytes(data)


def scan_bytes(data: bytes) -> int:
    """The entropy-coded data of a baseline JPEG file: from the end of the start-of-scan
    header to the end-of-image marker. The headers before it (quantisation and Huffman
    tables, about 300 bytes) are the same for every image of a quality and would swamp a
    16 x 16 image's rate, as a model's weights would swamp its own."""
    start = data.find(b"\xff\xda")
    if start < 0 or not data.endswith(b"\xff\xd9"):
        raise AtlasError("not a baseline JPEG: no start-of-scan or end-of-image marker")
    header = int.from_bytes(data[start + 2 : start + 4], "big")
    return len(data) - 2 - (start + 2 + header)


def jpeg(x: torch.Tensor, quality: int | list[int]) -> Reconstruction:
    """x (n, C, H, W) in [0, 1], C = 1 or 3, through Pillow's JPEG at `quality` (1-95, one or
    one per image); the rate counts the entropy-coded scan, not the headers (`scan_bytes`)."""
    if x.dim() != 4 or x.shape[1] not in (1, 3):
        raise AtlasError(f"JPEG takes images (n, 1 or 3, H, W), got shape {tuple(x.shape)}")
    qualities = [quality] * len(x) if isinstance(quality, int) else list(quality)
    if len(qualities) != len(x) or any(not 1 <= int(q) <= 95 for q in qualities):
        raise AtlasError(f"JPEG quality must be 1-95, one per image; got {qualities}")
    out, sizes = zip(*(_jpeg_one(img, q) for img, q in zip(x.double().cpu().numpy(), qualities)))
    images = torch.as_tensor(np.stack(out))
    return _scored(x.cpu(), images, 8.0 * np.array(sizes, dtype=float), f"JPEG at quality {qualities[0]}")


def jpeg_at_psnr(x: torch.Tensor, target: np.ndarray | float) -> tuple[Reconstruction, np.ndarray]:
    """Per image, JPEG at the lowest quality whose PSNR reaches `target` dB (95 when none
    does): the reconstructions and the qualities. PSNR rises with quality except for small
    wiggles, so this is a scan over 1-95 and the first to reach the target is taken."""
    targets = np.broadcast_to(np.asarray(target, dtype=float), (len(x),))
    qualities = []
    for img, t in zip(x.double().cpu().numpy(), targets):
        chosen = 95
        for q in range(1, 96):
            decoded, _ = _jpeg_one(img, q)
            if psnr(torch.as_tensor(img[None]), torch.as_tensor(decoded[None]))[0] >= t:
                chosen = q
                break
        qualities.append(chosen)
    result = jpeg(x, qualities)
    result.what = "JPEG at the lowest quality reaching the target PSNR"
    return result, np.array(qualities)
