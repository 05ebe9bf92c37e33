"""Classifiers whose maps become masks: a backbone registry and the GAP + 1x1 CAM classifier."""

from wsss.models.backbones import create_backbone, list_backbones, register_backbone
from wsss.models.classifier import (
    CAMClassifier,
    LoadedClassifier,
    ModelSpec,
    create_classifier,
    load_checkpoint,
    save_checkpoint,
)

__all__ = [
    "CAMClassifier",
    "LoadedClassifier",
    "ModelSpec",
    "create_backbone",
    "create_classifier",
    "list_backbones",
    "load_checkpoint",
    "register_backbone",
    "save_checkpoint",
]
