"""Classifiers that are not wsss's own, made to take what wsss feeds every model: RGB floats in
[0, 1], (B, 3, H, W). ``explain`` and :func:`wsss.cams.compute_cams` work on them."""

from __future__ import annotations

from pathlib import Path

import torch
import torchvision
from torch import nn

from wsss.errors import ConfigError, MissingDependencyError
from wsss.models.tokens import fit_to_patches
from wsss.models.weights import IMAGENET_MEAN, IMAGENET_STD, create_timm_model, load_state_dict_file


class Normalized(nn.Module):
    """``model`` behind a fixed input normalisation: takes RGB in [0, 1], like wsss classifiers.
    The wrapped model is ``.model``, so its layers are ``model.<name>`` from outside."""

    def __init__(self, model: nn.Module, mean=IMAGENET_MEAN, std=IMAGENET_STD):
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(fit_to_patches((x - self.mean) / self.std, self.model))


def _is_checkpoint_file(weights: str | None) -> bool:
    return bool(weights) and Path(weights).suffix in (".pt", ".pth")


def torchvision_classifier(name: str, weights: str | None) -> tuple[Normalized, list[str], str]:
    """A torchvision classifier, its class names (from the weight enum, known offline) and its
    last feature layer (``layer4`` for ResNets; None where wsss cannot tell).

    ``weights``: a weight enum name ("DEFAULT", "IMAGENET1K_V2", ...: downloaded once), a local
    state-dict file, or None (random weights).
    """
    try:
        enum = torchvision.models.get_model_weights(name)
    except (ValueError, KeyError):
        raise ConfigError(f"unknown torchvision model {name!r}") from None
    names = list(enum.DEFAULT.meta["categories"])
    if _is_checkpoint_file(weights):
        model = torchvision.models.get_model(name)
        model.load_state_dict(load_state_dict_file(weights))
    elif weights:
        try:
            member = enum.DEFAULT if weights == "DEFAULT" else enum[weights]
        except KeyError:
            choices = ["DEFAULT"] + [w.name for w in enum]
            raise ConfigError(
                f"unknown weights {weights!r} for {name}; use one of {choices}"
            ) from None
        names = list(member.meta["categories"])
        try:
            model = torchvision.models.get_model(name, weights=member)
        except (OSError, RuntimeError) as exc:
            raise ConfigError(
                f"could not download {name} weights {member} ({exc}); pass weights=/path/to.pth"
            ) from exc
    else:
        model = torchvision.models.get_model(name)  # random weights: for tests
    layer = "layer4" if hasattr(model, "layer4") else None
    return Normalized(model), names, layer


def timm_classifier(name: str, weights: str | None) -> tuple[Normalized, list[str], str]:
    """A timm classifier, its class names, and its last feature layer (from ``feature_info``).

    ``weights``: "DEFAULT" (timm's pretrained weights, downloaded once), a local checkpoint
    file, or None (random weights).
    """
    try:
        from timm.data import ImageNetInfo
    except ImportError as exc:
        raise MissingDependencyError("timm models need timm: pip install -e '.[timm]'") from exc
    checkpoint = weights if _is_checkpoint_file(weights) else ""
    try:
        model = create_timm_model(name, weights == "DEFAULT", checkpoint_path=checkpoint)
    except RuntimeError as exc:  # unknown model name, unreachable hub, bad checkpoint
        raise ConfigError(f"timm model {name!r}: {exc}") from exc
    if model.num_classes == 1000:
        info = ImageNetInfo()
        names = [info.index_to_description(i).split(",")[0] for i in range(1000)]
    else:
        names = [f"class_{i}" for i in range(model.num_classes)]
    # The last feature stage: for a ViT or DeiT the last block's output, before the final norm.
    layer = model.feature_info[-1]["module"]
    config = model.pretrained_cfg
    return Normalized(model, config["mean"], config["std"]), names, layer
