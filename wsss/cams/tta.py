"""Test-time augmentation for any CAM method: multi-scale plus horizontal flip, summed.

A *method* is any callable ``method(images, targets) -> list[(n_i, h, w) tensor]`` returning raw
(non-negative, un-normalised) maps at feature resolution, such as
``functools.partial(class_activation_maps, model)``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

CamMethod = Callable[[torch.Tensor, Sequence[Sequence[int]]], list[torch.Tensor]]


def multiscale_cams(
    method: CamMethod,
    images: torch.Tensor,
    targets: Sequence[Sequence[int]],
    scales: Sequence[float] = (1.0, 0.5, 1.5, 2.0),
    flip: bool = True,
) -> list[torch.Tensor]:
    """Sum of each target's maps over ``scales`` (and their mirror images), at input resolution.

    ``images``: (B, 3, H, W). Each scale's maps are upsampled bilinearly to (H, W) before summing;
    flipped maps are flipped back first. Returns one (len(targets[i]), H, W) tensor per image,
    not yet normalised (see :func:`normalize_cams`).
    """
    if not scales:
        raise ValueError("at least one scale is needed")
    batch, _, height, width = images.shape
    totals = [images.new_zeros((len(t), height, width)) for t in targets]
    for scale in scales:
        size = (max(1, round(height * scale)), max(1, round(width * scale)))
        scaled = (
            images
            if size == (height, width)
            else F.interpolate(images, size=size, mode="bilinear", align_corners=False)
        )
        views, view_targets = scaled, list(targets)
        if flip:
            views = torch.cat([scaled, scaled.flip(-1)])
            view_targets = view_targets * 2
        maps = method(views, view_targets)
        for j, cam in enumerate(maps):
            if cam.numel() == 0:
                continue
            up = upsample_cams(cam, (height, width))
            if j >= batch:
                up = up.flip(-1)
            totals[j % batch] += up
    return totals


def normalize_cams(cams: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Divide each class map (N, H, W) by its maximum, so that every map peaks at ~1."""
    if cams.numel() == 0:
        return cams
    return cams / (cams.flatten(1).amax(dim=1).view(-1, 1, 1) + eps)


def upsample_cams(cams: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinearly resize (N, h, w) maps to (N, *size) (half-pixel centres, as image resizers)."""
    if cams.shape[-2:] == tuple(size):
        return cams
    return F.interpolate(cams[None], size=size, mode="bilinear", align_corners=False)[0]
