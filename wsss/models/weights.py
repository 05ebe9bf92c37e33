"""Weights and the libraries that bring them: ImageNet's input statistics, state-dict files
(loaded with ``weights_only=True``), and timm (an optional dependency) with its models by name."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from wsss.errors import CheckpointError, MissingDependencyError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def load_state_dict_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Load a state dict saved with ``torch.save`` (safely: ``weights_only=True``)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(f"{path}: weights file not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt or unsafe files
        raise CheckpointError(f"{path}: cannot load weights ({exc})") from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: not a state dict of tensors")
    return state


def load_leaving_out_head(
    module: nn.Module, state: dict[str, torch.Tensor], head: tuple[str, ...]
) -> tuple[list[str], list[str]]:
    """Load ``state`` into ``module`` with a classification head left out on both sides (the
    top-level names in ``head``: a classifier's whole state dict into a backbone, or a backbone's
    weights into a classifier whose head is new). Returns the other (missing, unexpected) keys for
    the caller to refuse; raises RuntimeError where tensor shapes differ."""
    outside = [k for k in state if k.split(".")[0] in head]
    missing, unexpected = module.load_state_dict(
        {k: v for k, v in state.items() if k not in outside}, strict=False
    )
    return [k for k in missing if k.split(".")[0] not in head], unexpected


def is_weights_file(pretrained: str | None) -> bool:
    """Whether a ``pretrained`` value names a file (a path) rather than a weight name."""
    return pretrained is not None and (
        os.sep in pretrained or "/" in pretrained or Path(pretrained).suffix in (".pt", ".pth")
    )


def import_timm():
    try:
        import timm
    except ImportError as exc:
        raise MissingDependencyError(
            "this backbone needs timm: pip install -e '.[timm]' (or pip install timm)"
        ) from exc
    return timm


def create_timm_model(name: str, pretrained: bool = False, **kwargs) -> nn.Module:
    """``timm.create_model``, asking transformers for ``dynamic_img_size`` (any input size, its
    patch grid following the image) where the model takes that argument."""
    timm = import_timm()
    try:
        return timm.create_model(name, pretrained=pretrained, dynamic_img_size=True, **kwargs)
    except TypeError:  # a CNN: it takes any size already
        return timm.create_model(name, pretrained=pretrained, **kwargs)
