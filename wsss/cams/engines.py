"""How maps are computed: one forward pass per batch, then the classifier weights (CAM), a
backward pass through the head per target rank (gradient methods), or masked forward passes
(Score-CAM). The per-method formulas are in :mod:`wsss.cams.methods`."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from wsss.cams._capture import LayerCapture
from wsss.models.tokens import Reshape, feature_map

#: f(A, G) -> maps before ReLU: A (C, h, w) activation, G (n, C, h, w) gradients of n classes
GradientFormula = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def check_target_classes(targets: Sequence[Sequence[int]], batch: int, num_classes: int) -> None:
    """Raise a clear error for a target list that does not fit the batch or the classifier."""
    if len(targets) != batch:
        raise ValueError(f"got {len(targets)} target lists for a batch of {batch} images")
    for i, classes in enumerate(targets):
        bad = [c for c in classes if not 0 <= int(c) < num_classes]
        if bad:
            raise ValueError(f"image {i}: class indices {bad} out of range [0, {num_classes})")


def class_scores(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """``model(images)``, checked to be (B, K) class scores."""
    scores = model(images)
    if not isinstance(scores, torch.Tensor) or scores.ndim != 2 or len(scores) != len(images):
        shape = getattr(scores, "shape", type(scores).__name__)
        raise ValueError(
            f"the model must return class scores of shape (B, K) for B images; got {shape}"
        )
    return scores


def class_activation_maps(
    model: nn.Module,
    images: torch.Tensor,
    targets: Sequence[Sequence[int]],
    weights: torch.Tensor | None = None,
) -> list[torch.Tensor]:
    """CAM (Zhou et al., CVPR 2016) of each target class: ReLU(sum_k w_k^c f_k(x, y)) at the
    feature map's resolution, for a classifier exposing ``forward_features`` and
    ``cam_weights`` (a GAP + linear head, such as wsss's CAMClassifier).

    ``images``: (B, 3, H, W) floats in [0, 1]. ``targets[i]``: class indices for image i.
    Returns one (len(targets[i]), h, w) float tensor per image, after ReLU and before any
    normalisation or upsampling. Only the requested classes' maps are computed. ``weights``:
    (K, C) class weights in place of ``cam_weights`` (ReCAM's, say).
    """
    if not (hasattr(model, "cam_weights") and hasattr(model, "forward_features")):
        raise ValueError(
            "method 'cam' needs a classifier with a GAP + linear head exposing "
            "forward_features and cam_weights (a wsss CAMClassifier); use 'gradcam' for "
            "other models (identical up to scale for such a head)"
        )
    check_target_classes(targets, images.shape[0], model.num_classes)
    with torch.inference_mode():
        features = model.forward_features(images)
        weights = model.cam_weights if weights is None else weights.to(features)
        return [
            torch.relu(torch.einsum("kc,chw->khw", weights[list(classes)], features[i]))
            for i, classes in enumerate(targets)
        ]


def gradient_cams(
    model: nn.Module,
    images: torch.Tensor,
    targets: Sequence[Sequence[int]],
    layer: nn.Module,
    formula: GradientFormula,
    reshape: Reshape | None = None,
) -> list[torch.Tensor]:
    """One forward pass for the batch; one backward (through the head only) per target rank.
    A token or channels-last layer output is laid out as a map (:func:`feature_map`), its
    gradient alike."""
    with LayerCapture(layer, differentiable=True) as capture, torch.no_grad():
        scores = class_scores(model, images)
    activation = capture.take()
    check_target_classes(targets, len(images), scores.shape[1])
    if not scores.requires_grad:
        raise ValueError("the class scores do not depend on the target layer's output")

    def to_map(tensor: torch.Tensor) -> torch.Tensor:
        return feature_map(tensor, model, tuple(images.shape[2:]), reshape, layer)

    rounds = max((len(t) for t in targets), default=0)
    gradients: list[list[torch.Tensor]] = [[] for _ in targets]
    for j in range(rounds):
        # Images are independent in eval mode, so the gradient of the sum of each image's j-th
        # target score gives every image's own gradient in one backward pass.
        rows = [i for i, t in enumerate(targets) if len(t) > j]
        cols = [int(targets[i][j]) for i in rows]
        with torch.enable_grad():  # the caller may be inside no_grad()
            total = scores[rows, cols].sum()
        (grad,) = torch.autograd.grad(total, activation, retain_graph=j < rounds - 1)
        grad = to_map(grad)
        for i in rows:
            gradients[i].append(grad[i])
    activation = to_map(activation.detach())
    maps = []
    for i, classes in enumerate(targets):
        if not classes:
            maps.append(activation.new_zeros((0, *activation.shape[2:])))
            continue
        maps.append(torch.relu(formula(activation[i], torch.stack(gradients[i]))))
    return maps


def score_cams(
    model: nn.Module,
    images: torch.Tensor,
    targets: Sequence[Sequence[int]],
    layer: nn.Module,
    batch_size: int,
    top_channels: int | None,
    reshape: Reshape | None = None,
) -> list[torch.Tensor]:
    """Score-CAM, all target classes of an image scored by the same masked forward passes.

    Each activation map is upsampled to the input size and min-max normalised to [0, 1]; the
    input times that mask is scored, and a channel's score for class c is the logit of c for the
    masked input minus the logit for the baseline (a black image). Weights are the softmax of the
    scores over channels. A constant map masks nothing, so its masked input is the image itself:
    its score is known from the unmasked pass and no forward is spent on it. ``top_channels``
    keeps only the N channels of highest mean activation (a faster approximation).
    """
    height, width = images.shape[2:]
    with LayerCapture(layer) as capture, torch.inference_mode():
        logits = class_scores(model, images)
        activations = feature_map(capture.take(), model, (height, width), reshape, layer)
        baseline = class_scores(model, torch.zeros_like(images[:1]))[0]
    check_target_classes(targets, len(images), logits.shape[1])
    maps = []
    for i, classes in enumerate(targets):
        A = activations[i]
        if not classes:
            maps.append(A.new_zeros((0, *A.shape[1:])))
            continue
        cls = torch.as_tensor(list(classes), device=A.device)
        channels = torch.arange(A.shape[0], device=A.device)
        if top_channels is not None and top_channels < len(channels):
            channels = A.mean(dim=(1, 2)).topk(top_channels).indices.sort().values
        flat = A[channels].flatten(1)
        constant = flat.amax(dim=1) == flat.amin(dim=1)
        scores = (logits[i, cls] - baseline[cls]).repeat(len(channels), 1)  # constant channels
        varying = torch.nonzero(~constant).flatten()
        with torch.inference_mode():
            for start in range(0, len(varying), batch_size):
                rows = varying[start : start + batch_size]
                up = F.interpolate(
                    A[channels[rows]][:, None],
                    size=(height, width),
                    mode="bilinear",
                    align_corners=False,
                )
                lo = up.amin(dim=(2, 3), keepdim=True)
                hi = up.amax(dim=(2, 3), keepdim=True)
                masks = (up - lo) / (hi - lo)
                # channels_last inputs run convolutions 1.3-1.6x faster on CPU (oneDNN) and are
                # at least as fast on GPU; the model itself is left untouched.
                masked = (images[i : i + 1] * masks).contiguous(memory_format=torch.channels_last)
                masked_logits = class_scores(model, masked)
                scores[rows] = masked_logits[:, cls] - baseline[cls]
            weights = torch.softmax(scores, dim=0)  # (channels, n): over channels, per class
            maps.append(torch.relu(torch.einsum("kn,khw->nhw", weights, A[channels])))
    return maps
