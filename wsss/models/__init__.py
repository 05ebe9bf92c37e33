"""Classifiers whose maps become masks: the backbone registry, the GAP + 1x1 CAM classifier, and
adapters for torchvision and timm classifiers."""

from wsss.models.adapters import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Normalized,
    timm_classifier,
    torchvision_classifier,
)
from wsss.models.backbones import BACKBONES, create_backbone, list_backbones, register_backbone
from wsss.models.classifier import (
    CAMClassifier,
    LoadedClassifier,
    ModelSpec,
    create_classifier,
    load_checkpoint,
    save_checkpoint,
)

__all__ = [
    "BACKBONES",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "CAMClassifier",
    "LoadedClassifier",
    "ModelSpec",
    "Normalized",
    "create_backbone",
    "create_classifier",
    "list_backbones",
    "load_checkpoint",
    "register_backbone",
    "save_checkpoint",
    "timm_classifier",
    "torchvision_classifier",
]
