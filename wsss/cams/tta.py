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

#: at most this many input pixels go through the model in one pass: the images of a batch are
#: split into smaller groups at the large scales, so memory is bounded whatever the batch size
#: (2 views of a VOC photo at scale 2.0, 1000x750 each, fill one pass)
PIXELS_PER_PASS = 2_000_000


def multiscale_cams(
    method: CamMethod,
    images: torch.Tensor,
    targets: Sequence[Sequence[int]],
    scales: Sequence[float] = (1.0, 0.5, 1.5, 2.0),
    flip: bool = True,
    pixels_per_pass: int = PIXELS_PER_PASS,
) -> list[torch.Tensor]:
    """Sum of each target's maps over ``scales`` (and their mirror images), at input resolution.

    ``images``: (B, 3, H, W). Each scale's maps are upsampled bilinearly to (H, W) before summing;
    flipped maps are flipped back first. Returns one (len(targets[i]), H, W) tensor per image,
    not yet normalised (see :func:`normalize_cams`). Images are independent, so a scale's views
    are computed in groups of at most ``pixels_per_pass`` input pixels (at least one image).
    """
    if not scales:
        raise ValueError("at least one scale is needed")
    batch, _, height, width = images.shape
    totals = [images.new_zeros((len(t), height, width)) for t in targets]
    for scale in scales:
        size = (max(1, round(height * scale)), max(1, round(width * scale)))
        views_per_image = 2 if flip else 1
        group = max(1, pixels_per_pass // (views_per_image * size[0] * size[1]))
        for start in range(0, batch, group):
            part = images[start : start + group]
            scaled = (
                part
                if size == (height, width)
                else F.interpolate(part, size=size, mode="bilinear", align_corners=False)
            )
            views, view_targets = scaled, list(targets[start : start + group])
            if flip:
                views = torch.cat([scaled, scaled.flip(-1)])
                view_targets = view_targets * 2
            maps = method(views, view_targets)
            for j, cam in enumerate(maps):
                if cam.numel() == 0:
                    continue
                up = upsample_cams(cam, (height, width))
                if j >= len(part):
                    up = up.flip(-1)
                totals[start + j % len(part)] += up
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
