"""The CAM classifier: backbone -> global average pooling -> bias-free 1x1 classifier.

This is the architecture of the CAM paper (and IRN): the class score is a linear function of the
pooled features, so the same weights applied at every position give the class activation map.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from wsss.errors import CheckpointError
from wsss.io import save_torch
from wsss.models.backbones import create_backbone
from wsss.models.weights import IMAGENET_MEAN, IMAGENET_STD

CHECKPOINT_FORMAT = "wsss-classifier"
CHECKPOINT_VERSION = 1


@dataclass
class ModelSpec:
    """Everything needed to rebuild a classifier (the ``model`` config group; stored in
    checkpoints).

    ``backbone`` is a :data:`~wsss.models.BACKBONES` name; ``pretrained`` is None, a weight name
    ("DEFAULT", "IMAGENET1K_V2", ...) or a state-dict path; ``backbone_kwargs`` go to the
    backbone factory (e.g. ``output_stride``).
    """

    backbone: str = "smallcnn"
    pretrained: str | None = None
    backbone_kwargs: dict[str, Any] = field(default_factory=dict)


class CAMClassifier(nn.Module):
    """Backbone + GAP + bias-free 1x1 conv. Input: (B, 3, H, W) RGB floats in [0, 1].

    ``forward`` returns (B, K) class scores (logits). ``forward_features`` returns the
    (B, C, h, w) final feature map; ``cam_weights`` is the (K, C) classifier matrix, so that
    ``einsum("kc,bchw->bkhw", cam_weights, features)`` is the CAM of every class.
    """

    def __init__(self, backbone: nn.Module, num_classes: int):
        super().__init__()
        self.backbone = backbone
        self.classifier = nn.Conv2d(backbone.out_channels, num_classes, 1, bias=False)
        # The normalisation the backbone's weights expect (ImageNet's unless it says otherwise).
        mean = getattr(backbone, "input_mean", IMAGENET_MEAN)
        std = getattr(backbone, "input_std", IMAGENET_STD)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    @property
    def num_classes(self) -> int:
        return self.classifier.out_channels

    @property
    def output_stride(self) -> int:
        return self.backbone.output_stride

    @property
    def cam_weights(self) -> torch.Tensor:
        return self.classifier.weight.flatten(1)

    def get_classifier(self) -> nn.Conv2d:
        return self.classifier

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        return self.backbone((images - self.mean) / self.std)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        pooled = features.mean(dim=(2, 3), keepdim=True)
        return self.classifier(pooled).flatten(1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(images))


def create_classifier(spec: ModelSpec, num_classes: int) -> CAMClassifier:
    backbone = create_backbone(spec.backbone, pretrained=spec.pretrained, **spec.backbone_kwargs)
    return CAMClassifier(backbone, num_classes)


def save_checkpoint(
    path: str | os.PathLike,
    model: CAMClassifier,
    spec: ModelSpec,
    class_names: list[str] | tuple[str, ...],
    metrics: dict[str, float] | None = None,
    extra: dict[str, Any] | None = None,
) -> None:
    """Write a checkpoint (plain tensors and Python types only), atomically. ``extra``: what a
    stage adds beside the classifier (ReCAM's class weights), read back by that stage."""
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "model": asdict(spec),
        "class_names": list(class_names),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "metrics": dict(metrics or {}),
    }
    if extra:
        payload["extra"] = extra
    save_torch(path, payload)


@dataclass
class LoadedClassifier:
    model: CAMClassifier
    spec: ModelSpec
    class_names: tuple[str, ...]
    metrics: dict[str, float]


def load_checkpoint(path: str | os.PathLike) -> LoadedClassifier:
    """Load a wsss checkpoint with ``weights_only=True``; clear errors for anything else."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{path}: corrupt or unsafe checkpoint ({exc})") from exc
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{path}: not a wsss classifier checkpoint (write one with python -m wsss.train)"
        )
    if payload.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(f"{path}: unsupported checkpoint version {payload.get('version')}")
    spec = ModelSpec(**payload["model"])
    # The weights come from the checkpoint; do not fetch pretrained ones again.
    model = create_classifier(
        ModelSpec(spec.backbone, None, spec.backbone_kwargs), len(payload["class_names"])
    )
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not fit {spec.backbone} ({exc})") from exc
    model.eval()
    return LoadedClassifier(model, spec, tuple(payload["class_names"]), payload.get("metrics", {}))


def weights_digest(model: nn.Module) -> str:
    """A short digest of a model's weights: two runs with the same digest used the same model."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]
