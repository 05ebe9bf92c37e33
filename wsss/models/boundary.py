"""IRN's boundary network (Ahn et al., CVPR 2019) on any wsss backbone, and its checkpoint.

:class:`BoundaryNet`: boundary heads (1x1 conv + GroupNorm + ReLU on each of the frozen
backbone's levels, fused by a 1x1 conv) predicting a class-boundary map B at stride 4. It is
trained by ``python -m wsss.train_affinity`` (:mod:`wsss.engine.boundary_training`) and used by
the random walk (:mod:`wsss.masks.random_walk`); its checkpoint holds the backbone it was
trained with and loads with ``weights_only=True``.
"""

from __future__ import annotations

import functools
import os
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from wsss.errors import CheckpointError
from wsss.io import save_torch
from wsss.models.classifier import CAMClassifier, ModelSpec, create_classifier
from wsss.models.tokens import feature_map

CHECKPOINT_FORMAT = "wsss-affinity"
CHECKPOINT_VERSION = 1
STRIDE = 4  # the boundary map's stride, as IRN's


class BoundaryNet(nn.Module):
    """Boundary map B (B, 1, ceil(H / 4), ceil(W / 4)) in [0, 1] of RGB images in [0, 1], from
    the features of ``classifier``'s backbone at every level it lists: frozen (IRN's way), or
    trained with the heads when ``train_backbone`` (its batch-norm statistics stay frozen)."""

    def __init__(self, classifier: CAMClassifier, width: int = 32, train_backbone: bool = False):
        super().__init__()
        self.classifier = classifier
        self.train_backbone = train_backbone
        for p in self.classifier.parameters():
            p.requires_grad_(False)
        if train_backbone:
            for p in self.classifier.backbone.parameters():
                p.requires_grad_(True)
        with torch.no_grad():
            channels = [f.shape[1] for f in self.levels(torch.zeros(1, 3, 64, 64))]
        self.heads = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(c, width, 1, bias=False), nn.GroupNorm(4, width), nn.ReLU(inplace=True)
            )
            for c in channels
        )
        self.fuse = nn.Conv2d(width * len(channels), 1, 1)
        self.width = width

    def levels(self, images: torch.Tensor) -> list[torch.Tensor]:
        """The backbone's features at each of its levels, as (B, C, h, w) maps."""
        backbone = self.classifier.backbone
        modules = backbone.feature_levels()
        found: dict[int, torch.Tensor] = {}
        hooks = [
            m.register_forward_hook(lambda _m, _i, out, k=k: found.__setitem__(k, out))
            for k, m in enumerate(modules)
        ]
        try:
            self.classifier.eval()  # batch-norm statistics stay the pretrained ones
            with torch.set_grad_enabled(self.train_backbone and torch.is_grad_enabled()):
                self.classifier.forward_features(images)
        finally:
            for hook in hooks:
                hook.remove()
        size = tuple(images.shape[2:])
        return [feature_map(found[k], backbone, size, layer=modules[k]) for k in sorted(found)]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        height, width = (-(-s // STRIDE) for s in images.shape[2:])
        features = [
            F.interpolate(head(f), (height, width), mode="bilinear", align_corners=False)
            for head, f in zip(self.heads, self.levels(images), strict=True)
        ]
        return torch.sigmoid(self.fuse(torch.cat(features, dim=1)))

    def train(self, mode: bool = True) -> BoundaryNet:
        super().train(mode)
        self.classifier.eval()  # the backbone is never in training mode
        return self


def save_boundary_net(
    path: str | os.PathLike, net: BoundaryNet, spec: ModelSpec, classes, metrics
) -> None:
    """Write ``net`` (the ``affinity.pt`` of ``wsss.train_affinity`` and of IRN's cached stage)
    with the classifier's model spec and classes it was trained on."""
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "model": asdict(spec),
        "class_names": list(classes),
        "width": net.width,
        "state_dict": {k: v.detach().cpu() for k, v in net.state_dict().items()},
        "metrics": dict(metrics),
    }
    save_torch(path, payload)


@functools.lru_cache(maxsize=2)
def load_boundary_net(path: str) -> BoundaryNet:
    """A trained :class:`BoundaryNet` (loaded with ``weights_only=True``), in eval mode."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise CheckpointError(f"{file}: affinity checkpoint not found (train one with "
                              "python -m wsss.train_affinity)")  # fmt: skip
    try:
        payload = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{file}: corrupt or unsafe checkpoint ({exc})") from exc
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{file}: not a wsss affinity checkpoint")
    spec = ModelSpec(**payload["model"])
    classifier = create_classifier(
        ModelSpec(spec.backbone, None, spec.backbone_kwargs), len(payload["class_names"])
    )
    net = BoundaryNet(classifier, payload["width"])
    try:
        net.load_state_dict(payload["state_dict"])
    except RuntimeError as exc:
        raise CheckpointError(f"{file}: weights do not fit ({exc})") from exc
    return net.eval()
