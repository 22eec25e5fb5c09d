"""Latents as every family passes them: {group name: tensor (..., *group.shape)}, checked
once here, and the groups flattened to one vector (..., total size) and back.

    z = checked_latents(model, z)                   # names and sizes, or an AtlasError
    flat = flatten_latents(z, model.latent_groups)  # (..., sum of group sizes)
    z = split_latents(flat, model.latent_groups)
"""

from __future__ import annotations

import torch

from engine.errors import AtlasError
from engine.models.base import LatentGroup, LatentModel, Latents


def _listed(names: list[str], most: int = 8) -> str:
    shown = ", ".join(names[:most])
    return shown + (f", ... ({len(names)} in all)" if len(names) > most else "")


def checked_latents(model: LatentModel, z: Latents | torch.Tensor) -> Latents:
    """`z` as {group: (..., *group.shape)} in the order of model.latent_groups, after checking
    that it names every group and nothing else, that each tensor ends in its group's shape and
    that the leading shapes broadcast together. A lone tensor stands for a one-group model's latents."""
    groups = model.latent_groups
    names = [g.name for g in groups]
    family = type(model).__name__
    if not isinstance(z, dict):
        if len(groups) != 1:
            got = f"a tensor of shape {tuple(z.shape)}" if isinstance(z, torch.Tensor) else type(z).__name__
            raise AtlasError(
                f"this {family} has {len(groups)} latent groups; pass latents as a dict {{{_listed(names)}: tensor}}, "
                f"got {got}"
            )
        z = {names[0]: z}
    if set(z) != set(names):
        missing = [n for n in names if n not in z]
        unknown = sorted(set(z) - set(names))
        parts = ([f"missing {_listed(missing)}"] if missing else []) + (
            [f"unknown {_listed(unknown)}"] if unknown else []
        )
        raise AtlasError(f"this {family} takes latents for the groups {_listed(names)}; {'; '.join(parts)}")
    for g in groups:
        t = z[g.name]
        if t.dim() < len(g.shape) or tuple(t.shape[t.dim() - len(g.shape) :]) != g.shape:
            raise AtlasError(
                f"{g.name} latents must have shape (..., {', '.join(map(str, g.shape))}), got {tuple(t.shape)}"
            )
    leading_shape(z, groups)
    return {name: z[name] for name in names}


def leading_shape(z: Latents, groups: list[LatentGroup]) -> tuple[int, ...]:
    """The leading (sample, chain, batch) shape the groups' tensors broadcast to."""
    leads = [tuple(z[g.name].shape[: z[g.name].dim() - len(g.shape)]) for g in groups]
    try:
        return tuple(torch.broadcast_shapes(*leads))
    except RuntimeError as err:
        shapes = ", ".join(f"{g.name} {lead}" for g, lead in zip(groups, leads))
        raise AtlasError(f"the latent groups' leading shapes do not match: {shapes}") from err


def flatten_latents(z: Latents, groups: list[LatentGroup]) -> torch.Tensor:
    """{group: (..., *group.shape)} -> (..., sum of group sizes), the groups in the given order."""
    lead = leading_shape(z, groups)
    return torch.cat([z[g.name].expand(*lead, *g.shape).reshape(*lead, g.size) for g in groups], -1)


def split_latents(flat: torch.Tensor, groups: list[LatentGroup]) -> Latents:
    """The inverse of flatten_latents: (..., sum of group sizes) -> {group: (..., *group.shape)}."""
    total = sum(g.size for g in groups)
    if flat.shape[-1] != total:
        raise AtlasError(f"a flat latent vector of these groups has {total} entries, got shape {tuple(flat.shape)}")
    parts = flat.split([g.size for g in groups], dim=-1)
    return {g.name: part.reshape(*part.shape[:-1], *g.shape) for g, part in zip(groups, parts)}
