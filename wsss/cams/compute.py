"""``compute_cams``: every method of the CAM family, for every target class of a batch at once."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from wsss.cams.methods import CAM_METHODS, CamSettings
from wsss.cams.tta import CamMethod
from wsss.errors import ConfigError
from wsss.models.tokens import Reshape

METHODS = tuple(CAM_METHODS.names())


def method_settings(method: str, **options) -> CamSettings:
    """The settings of CAM method ``method`` with its own ``options`` (e.g. ``top_channels``
    for Score-CAM); a ConfigError (a ValueError) for an unknown method or option."""
    if method not in CAM_METHODS:
        raise ConfigError(f"unknown CAM method {method!r}; choose one of {METHODS}")
    try:
        settings = CAM_METHODS.get(method)(method=method, **options)
    except TypeError as exc:  # an option the method does not have
        raise ConfigError(f"CAM method {method!r}: {exc}") from None
    settings.validate()
    return settings


def compute_cams(
    model: nn.Module,
    images: torch.Tensor,
    targets: Sequence[Sequence[int]],
    method: str = "gradcam",
    target_layer: nn.Module | str | None = None,
    reshape: Reshape | None = None,
    **options,
) -> list[torch.Tensor]:
    """Class activation maps of any classifier, for each image's target classes.

    Args:
        model: any ``nn.Module`` mapping ``images`` to (B, K) class scores (logits), e.g. a
            torchvision or timm classifier, or a wsss :class:`~wsss.models.CAMClassifier`.
        images: (B, 3, H, W) float tensor, as the model expects it.
        targets: one list of class indices per image.
        method: one of :data:`METHODS`. ``"cam"`` needs a wsss CAMClassifier (it reads the
            classifier weights); the others work on any model.
        target_layer: the module (or its dotted name) whose output is the feature map. Defaults
            to ``model.backbone`` for a wsss CAMClassifier. Its output may be (B, C, h, w),
            channels-last (B, h, w, C) as Swin's, or (B, N, C) tokens as a ViT's, whose grid
            and class / distillation / register tokens are found from the model (timm's
            ``num_prefix_tokens`` and ``patch_embed``).
        reshape: a callable turning the layer's output into (B, C, h, w), for layouts the
            model does not describe (as pytorch-grad-cam's ``reshape_transform``).
        options: the method's own options, e.g. ``score_batch_size`` (masked images per forward
            pass) and ``top_channels`` (score just the N most active channels) for Score-CAM.

    Returns:
        one float tensor (len(targets[i]), h, w) per image: the raw maps at the layer's
        resolution, after ReLU, before any normalisation or upsampling.

    The model's train/eval modes (restored per module) and the grad mode are left as they
    were, and no hook remains attached. Gradient methods backpropagate only from the scores to
    the target layer.
    """
    settings = method_settings(method, **options)
    return settings.compute(model, images, targets, target_layer, reshape)


def cam_method(
    model: nn.Module, method: str, target_layer=None, reshape: Reshape | None = None, **options
) -> CamMethod:
    """``compute_cams`` bound to a model and method: ``f(images, targets) -> maps``, the form
    the test-time augmentation (:func:`~wsss.cams.multiscale_cams`) takes."""
    settings = method_settings(method, **options)
    return lambda images, targets: settings.compute(model, images, targets, target_layer, reshape)
