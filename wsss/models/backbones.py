"""Backbone registry: a function per backbone, registered by name.

Contract of a registered factory: ``factory(pretrained=None, **kwargs) -> nn.Module`` whose
``forward(x)`` maps a normalised (B, 3, H, W) float batch to a (B, C, H/s, W/s) feature map, and
which has the attributes ``out_channels`` (C) and ``output_stride`` (s). ``pretrained`` is
``None`` (random init), the name of a torchvision weight enum member (``"DEFAULT"``,
``"IMAGENET1K_V1"``, ...) or the path of a local state-dict file.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import torch
import torchvision
from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d

from wsss.errors import CheckpointError, ConfigError

BackboneFactory = Callable[..., nn.Module]
_REGISTRY: dict[str, BackboneFactory] = {}


def register_backbone(name: str) -> Callable[[BackboneFactory], BackboneFactory]:
    """Decorator: make ``factory`` available as ``create_backbone(name, ...)``."""

    def decorator(factory: BackboneFactory) -> BackboneFactory:
        if name in _REGISTRY:
            raise ValueError(f"backbone {name!r} is already registered")
        _REGISTRY[name] = factory
        return factory

    return decorator


def list_backbones() -> list[str]:
    return sorted(_REGISTRY)


def create_backbone(name: str, pretrained: str | None = None, **kwargs) -> nn.Module:
    """Build a registered backbone and check that it honours the contract above."""
    if name not in _REGISTRY:
        raise ConfigError(f"unknown backbone {name!r}; available: {list_backbones()}")
    module = _REGISTRY[name](pretrained=pretrained, **kwargs)
    for attr in ("out_channels", "output_stride"):
        if not isinstance(getattr(module, attr, None), int):
            raise TypeError(f"backbone {name!r} does not define an int {attr!r}")
    return module


def freeze_batch_norm(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm2d with FrozenBatchNorm2d (fixed statistics and affine terms).

    Standard for WSSS backbones trained with small batches; the state dict stays compatible.
    """
    if isinstance(module, nn.BatchNorm2d):
        frozen = FrozenBatchNorm2d(module.num_features, eps=module.eps)
        frozen.weight.copy_(module.weight.detach())
        frozen.bias.copy_(module.bias.detach())
        frozen.running_mean.copy_(module.running_mean)
        frozen.running_var.copy_(module.running_var)
        return frozen
    for name, child in module.named_children():
        setattr(module, name, freeze_batch_norm(child))
    return module


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


# --------------------------------------------------------------------------------------------
# A small, fast CNN for CPU demos and tests (no pretrained weights).


def _conv_bn_relu(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
    )


class SmallCNN(nn.Module):
    """Seven 3x3 conv-BN-ReLU layers, output stride 8. About 1.2M parameters at width 32."""

    def __init__(self, width: int = 32):
        super().__init__()
        w = width
        self.features = nn.Sequential(
            _conv_bn_relu(3, w, 2),
            _conv_bn_relu(w, 2 * w, 2),
            _conv_bn_relu(2 * w, 2 * w, 1),
            _conv_bn_relu(2 * w, 4 * w, 2),
            _conv_bn_relu(4 * w, 4 * w, 1),
            _conv_bn_relu(4 * w, 8 * w, 1),
            _conv_bn_relu(8 * w, 8 * w, 1),
        )
        self.out_channels = 8 * w
        self.output_stride = 8

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


@register_backbone("smallcnn")
def smallcnn(pretrained: str | None = None, width: int = 32, freeze_bn: bool = False) -> nn.Module:
    model = SmallCNN(width=width)
    if pretrained:
        model.load_state_dict(load_state_dict_file(pretrained))
    return freeze_batch_norm(model) if freeze_bn else model


# --------------------------------------------------------------------------------------------
# torchvision ResNets.


class ResNetFeatures(nn.Module):
    """A torchvision ResNet without its pooling and fully connected layers."""

    def __init__(self, resnet: torchvision.models.ResNet, output_stride: int):
        super().__init__()
        self.stem = nn.Sequential(resnet.conv1, resnet.bn1, resnet.relu, resnet.maxpool)
        self.layer1, self.layer2 = resnet.layer1, resnet.layer2
        self.layer3, self.layer4 = resnet.layer3, resnet.layer4
        self.out_channels = resnet.fc.in_features
        self.output_stride = output_stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


def _torchvision_weights(arch: str, pretrained: str):
    """Resolve a weight enum member name like "IMAGENET1K_V2" for ``arch`` (e.g. "resnet50")."""
    enum = torchvision.models.get_model_weights(arch)
    try:
        return enum[pretrained] if pretrained != "DEFAULT" else enum.DEFAULT
    except KeyError:
        names = ["DEFAULT"] + [w.name for w in enum]
        raise ConfigError(
            f"unknown weights {pretrained!r} for {arch}; use one of {names} or a file path"
        ) from None


def _build_resnet(arch: str, pretrained: str | None, output_stride: int, freeze_bn: bool):
    if output_stride not in (16, 32):
        raise ConfigError(f"{arch}: output_stride must be 16 or 32, got {output_stride}")
    is_file = pretrained is not None and (
        os.sep in pretrained or "/" in pretrained or Path(pretrained).suffix in (".pt", ".pth")
    )
    weights = _torchvision_weights(arch, pretrained) if pretrained and not is_file else None
    try:
        resnet = torchvision.models.get_model(arch, weights=weights)
    except (OSError, RuntimeError) as exc:  # URLError is an OSError
        raise CheckpointError(
            f"could not download {arch} weights {weights} ({exc}). On a machine without network, "
            f"fetch {weights.url if weights else 'the file'} elsewhere and pass "
            f"model.pretrained=/path/to/file.pth, or put it in torch's hub cache "
            f"(~/.cache/torch/hub/checkpoints/)."
        ) from exc
    if is_file:
        state = load_state_dict_file(pretrained)
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        try:
            missing, unexpected = resnet.load_state_dict(state, strict=False)
        except RuntimeError as exc:  # tensor shapes differ
            raise CheckpointError(f"{pretrained}: does not match {arch} ({exc})") from exc
        missing = [k for k in missing if not k.startswith("fc.")]
        if missing or unexpected:
            raise CheckpointError(
                f"{pretrained}: does not match {arch} (missing {missing[:5]}, "
                f"unexpected {unexpected[:5]})"
            )
    if output_stride == 16:
        # As in IRN: the first block of layer4 keeps resolution (stride 1, no dilation).
        block = resnet.layer4[0]
        for conv in (block.conv1, block.conv2, block.downsample[0]):
            conv.stride = (1, 1)
    model = ResNetFeatures(resnet, output_stride)
    return freeze_batch_norm(model) if freeze_bn else model


@register_backbone("resnet18")
def resnet18(pretrained: str | None = None, output_stride: int = 16, freeze_bn: bool = False):
    return _build_resnet("resnet18", pretrained, output_stride, freeze_bn)


@register_backbone("resnet50")
def resnet50(pretrained: str | None = None, output_stride: int = 16, freeze_bn: bool = True):
    return _build_resnet("resnet50", pretrained, output_stride, freeze_bn)
