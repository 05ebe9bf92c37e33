"""The original class activation map (Zhou et al., CVPR 2016)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from wsss.models.classifier import CAMClassifier


def check_targets(targets: Sequence[Sequence[int]], batch: int, num_classes: int) -> None:
    """Raise a clear error for a target list that does not fit the batch or the classifier."""
    if len(targets) != batch:
        raise ValueError(f"got {len(targets)} target lists for a batch of {batch} images")
    for i, classes in enumerate(targets):
        bad = [c for c in classes if not 0 <= int(c) < num_classes]
        if bad:
            raise ValueError(f"image {i}: class indices {bad} out of range [0, {num_classes})")


def class_activation_maps(
    model: CAMClassifier, images: torch.Tensor, targets: Sequence[Sequence[int]]
) -> list[torch.Tensor]:
    """CAM of each target class: ReLU(sum_k w_k^c f_k(x, y)) at the feature map's resolution.

    ``images``: (B, 3, H, W) floats in [0, 1]. ``targets[i]``: class indices for image i.
    Returns one (len(targets[i]), h, w) float tensor per image, after ReLU and before any
    normalisation or upsampling. Only the requested classes' maps are computed.
    """
    check_targets(targets, images.shape[0], model.num_classes)
    with torch.inference_mode():
        features = model.forward_features(images)
        weights = model.cam_weights
        return [
            torch.relu(torch.einsum("kc,chw->khw", weights[list(classes)], features[i]))
            for i, classes in enumerate(targets)
        ]
