"""Target layers that do not output a (B, C, h, w) map: token sequences and channels-last maps.

Transformers output tokens: (B, N, C), where the first tokens may be class, distillation or
register tokens (ViT, DeiT, EVA, CLIP), and the rest lie on a grid of patches. Swin and some
ConvNeXt variants output (B, h, w, C). :func:`feature_map` turns such an output into the
(B, C, h, w) map every CAM method works on, finding the grid where the model tells it (timm's
``num_prefix_tokens``, ``patch_embed.patch_size`` and ``grid_size``, ``output_fmt``), or with a
user's ``reshape`` callable, as pytorch-grad-cam's ``reshape_transform``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

Reshape = Callable[[torch.Tensor], torch.Tensor]

HELP = (
    "pass reshape=<callable turning the layer's output into (B, C, h, w)> to compute_cams, as "
    "pytorch-grad-cam's reshape_transform, or pick a layer that outputs (B, C, h, w)"
)


def _find(model: nn.Module, attribute: str):
    """The first value of ``attribute`` on ``model`` or one of its submodules (an adapter may
    wrap the timm model), or None."""
    for module in model.modules():
        if hasattr(module, attribute):
            return getattr(module, attribute)
    return None


def _patch_embed(model: nn.Module) -> nn.Module | None:
    for module in model.modules():
        if hasattr(module, "patch_size") and hasattr(module, "grid_size"):
            return module
    return None


def fit_to_patches(images: torch.Tensor, model: nn.Module) -> torch.Tensor:
    """``images`` resized (bilinear) to the nearest multiple of the model's patch size, which a
    timm transformer with ``dynamic_img_size`` needs; the patch grid then covers exactly the
    image, so maps upsampled to the image's size stay aligned. Unchanged for other models."""
    embed = _patch_embed(model)
    if embed is None:
        return images
    (ph, pw), (h, w) = (int(v) for v in embed.patch_size), images.shape[-2:]
    size = (max(ph, round(h / ph) * ph), max(pw, round(w / pw) * pw))
    if size == (h, w):
        return images
    return torch.nn.functional.interpolate(images, size, mode="bilinear", align_corners=False)


def token_grid(
    model: nn.Module, tokens: int, image_size: tuple[int, int]
) -> tuple[int, tuple[int, int]]:
    """(prefix tokens, (h, w) grid) of a (B, ``tokens``, C) output for an input of
    ``image_size``: the model's grid when its patch tokens fill it, else the image size over
    the patch size (models with ``dynamic_img_size``), else a square grid."""
    prefix = _find(model, "num_prefix_tokens")
    if prefix is None:  # count the special tokens the model holds
        prefix = sum(_find(model, name) is not None for name in ("cls_token", "dist_token")) + int(
            getattr(_find(model, "reg_token"), "shape", [0, 0])[1] or 0
        )
    patches = tokens - int(prefix)
    candidates = []
    embed = _patch_embed(model)
    if embed is not None:
        candidates.append(tuple(int(v) for v in embed.grid_size))
        ph, pw = (int(v) for v in embed.patch_size)
        candidates.append((image_size[0] // ph, image_size[1] // pw))
        # after fit_to_patches
        candidates.append((max(1, round(image_size[0] / ph)), max(1, round(image_size[1] / pw))))
    side = math.isqrt(max(patches, 0))
    candidates.append((side, side))
    for grid in candidates:
        if grid[0] * grid[1] == patches and patches > 0:
            return int(prefix), grid
    raise ValueError(
        f"cannot tell the token grid of a target layer output of {tokens} tokens "
        f"({prefix} prefix tokens assumed, input {image_size[0]}x{image_size[1]}); {HELP}"
    )


def channels_last(model: nn.Module, layer: nn.Module | None) -> bool:
    """Whether ``layer`` outputs (B, h, w, C): the innermost module around it (itself included)
    that declares an ``output_fmt`` (timm's Swin: "NHWC") says so. A layer that merely contains
    such a model (wsss's backbone wrapper, which permutes) is not channels-last."""
    names = {id(m): name for name, m in model.named_modules()}
    if layer is None or id(layer) not in names:
        return getattr(model, "output_fmt", None) == "NHWC"
    path = names[id(layer)]
    prefixes = [""] + [".".join(path.split(".")[: i + 1]) for i in range(path.count(".") + 1)]
    declared = None
    for prefix in prefixes if path else [""]:
        module = model.get_submodule(prefix) if prefix else model
        declared = getattr(module, "output_fmt", declared)
    return str(declared) == "NHWC"


def feature_map(
    output: torch.Tensor,
    model: nn.Module,
    image_size: tuple[int, int],
    reshape: Reshape | None = None,
    layer: nn.Module | None = None,
) -> torch.Tensor:
    """The target ``layer``'s ``output`` as a (B, C, h, w) feature map.

    (B, C, h, w) is kept as it is, unless the layer is channels-last (:func:`channels_last`,
    timm's Swin), whose (B, h, w, C) is permuted; (B, N, C) tokens lose their prefix tokens and
    are laid on their grid (:func:`token_grid`); ``reshape`` overrides all of this.
    """
    if reshape is not None:
        mapped = reshape(output)
        if not isinstance(mapped, torch.Tensor) or mapped.ndim != 4:
            shape = getattr(mapped, "shape", type(mapped).__name__)
            raise ValueError(f"reshape must return a (B, C, h, w) tensor, got {shape}")
        return mapped
    if not isinstance(output, torch.Tensor):
        raise ValueError(f"the target layer must output a tensor, got {type(output).__name__}")
    if output.ndim == 4:
        return output.permute(0, 3, 1, 2) if channels_last(model, layer) else output
    if output.ndim == 3:
        batch, tokens, channels = output.shape
        prefix, (h, w) = token_grid(model, tokens, image_size)
        return output[:, prefix:].transpose(1, 2).reshape(batch, channels, h, w)
    raise ValueError(
        f"target layer must output a (B, C, h, w) map, (B, h, w, C) or (B, N, C) tokens; got "
        f"{tuple(output.shape)}; {HELP}"
    )
