"""How much to trust a pseudo-mask, estimated without ground truth.

For each labelled class of an image, signals the pipeline has or gets for a few forward passes:

* ``probability``: the classifier's probability of the class on the image;
* ``kept``: its probability when only the mask's region is kept (the rest set to the mean
  colour), relative to ``probability``: a faithful region holds the evidence;
* ``removed``: its probability with the region filled in from its surroundings, relative to
  ``probability``: a region that is all background (a boat mask that is all water) leaves the
  class its evidence;
* ``score``: the mean normalised map inside the region; ``map_share``: the share of the map's
  total inside it;
* ``area``: the region's share of the image; ``parts``: log(1 + its connected regions);
* ``uncertain``: where the CRF runs disagreed (255) among the pixels the class's map wins.

:data:`WEIGHTS` combine them linearly into an estimate of the region's IoU, clipped to [0, 1].
An image's estimate is a second linear model (:data:`IMAGE_WEIGHTS`) of what its regions say
together (:data:`IMAGE_FEATURES`): their estimates' mean and minimum, the share of the image
they cover (spill over the background is the largest error of the masks), their number and
their uncertain shares. Both were fitted by least squares on the *tune* third of VOC 2012 train
and are reported on the other two thirds and on a user-sized folder (``scripts/fit_quality.py``,
whose output they are; README, "Which masks to trust").
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage

from wsss.masks.threshold import IGNORE

FEATURES = (
    "probability",
    "kept",
    "removed",
    "score",
    "map_share",
    "area",
    "parts",
    "uncertain",
)

#: intercept first, then one weight per feature: the output of scripts/fit_quality.py on the
#: preset's (LPCAM + CRF) run of scripts/bench_voc.py, least squares on the 488 tune images of
#: VOC 2012 train (results/fit_quality.json)
WEIGHTS = (-0.1284, 0.2231, 0.1056, -0.0707, 0.6219, 0.4339, -0.0721, -0.0575, -0.0084)
#: what an image's estimate is made from (:func:`image_features`)
IMAGE_FEATURES = (
    "estimate_mean",
    "estimate_min",
    "foreground",
    "classes",
    "uncertain_mean",
    "uncertain_min",
)
#: intercept first, then one weight per image feature: scripts/fit_quality.py's second fit, on
#: the same images (results/fit_quality.json)
IMAGE_WEIGHTS = (0.7339, 0.4376, 0.1113, -0.7294, -0.0135, -0.4503, -0.0344)
#: the long side of the image the probabilities are measured on (cheap, and enough to tell)
PROBE_SIDE = 256


def remove_object(image: torch.Tensor, mask: np.ndarray, sigma: float = 6.0) -> torch.Tensor:
    """``image`` (3, H, W) with the (slightly dilated) ``mask`` filled from its surroundings by
    normalised convolution: a blur of the rest of the image, weighted by what is left."""
    keep = (~ndimage.binary_dilation(mask, iterations=2)).astype(np.float32)
    pixels = image.cpu().numpy()
    filled = ndimage.gaussian_filter(pixels * keep, (0, sigma, sigma))
    weight = ndimage.gaussian_filter(keep, sigma)
    filled = filled / np.maximum(weight, 1e-6)
    return torch.from_numpy(np.where(keep > 0, pixels, filled)).to(image)


def fit_weights(
    rows: list[dict], features: tuple[str, ...] = FEATURES, ridge: float = 1e-3
) -> tuple[float, ...]:
    """Least-squares weights (intercept first, then one per name of ``features``) predicting
    each row's IoU from its features: ``rows`` are ``{"features": {...}, "iou": float}`` (regions
    with :data:`FEATURES`, or images with :data:`IMAGE_FEATURES`). A small ridge keeps the fit
    stable when a feature barely varies (the intercept is not shrunk)."""
    x = np.array([[1.0, *(r["features"][f] for f in features)] for r in rows])
    y = np.array([r["iou"] for r in rows])
    penalty = ridge * np.eye(x.shape[1])
    penalty[0, 0] = 0.0
    weights = np.linalg.solve(x.T @ x + penalty, x.T @ y)
    return tuple(round(float(w), 4) for w in weights)


def _linear(features: dict[str, float], weights, names: tuple[str, ...]) -> float:
    value = weights[0] + sum(w * features[n] for w, n in zip(weights[1:], names, strict=True))
    return float(np.clip(value, 0.0, 1.0))


def estimate(features: dict[str, float], weights=WEIGHTS) -> float:
    """The estimated IoU of one region, in [0, 1]."""
    return _linear(features, weights, FEATURES)


def image_features(regions: list[dict[str, float]]) -> dict[str, float]:
    """:data:`IMAGE_FEATURES` of an image from its regions' features, each with its
    ``estimate``."""
    estimates = [r["estimate"] for r in regions]
    uncertain = [r["uncertain"] for r in regions]
    return {
        "estimate_mean": float(np.mean(estimates)),
        "estimate_min": float(np.min(estimates)),
        "foreground": float(sum(r["area"] for r in regions)),
        "classes": float(len(regions)),
        "uncertain_mean": float(np.mean(uncertain)),
        "uncertain_min": float(np.min(uncertain)),
    }


def image_estimate(regions: list[dict[str, float]], weights=IMAGE_WEIGHTS) -> float:
    """The estimated IoU of an image's mask (mean over the background and its classes, as the
    image's true IoU is), in [0, 1], from its regions' features (each with its ``estimate``);
    0 for an image without regions."""
    if not regions:
        return 0.0
    return _linear(image_features(regions), weights, IMAGE_FEATURES)


def _probe(image: np.ndarray, mask: np.ndarray) -> tuple[torch.Tensor, np.ndarray]:
    """The image as a (3, h, w) float tensor in [0, 1], and the mask, at the probe size."""
    x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float() / 255
    height, width = image.shape[:2]
    scale = min(1.0, PROBE_SIDE / max(height, width))
    size = (max(1, round(height * scale)), max(1, round(width * scale)))
    if size != (height, width):
        x = torch.nn.functional.interpolate(x[None], size, mode="bilinear", antialias=True)[0]
        rows = (np.arange(size[0]) * height // size[0]).clip(0, height - 1)
        cols = (np.arange(size[1]) * width // size[1]).clip(0, width - 1)
        mask = mask[np.ix_(rows, cols)]
    return x, mask


@torch.no_grad()
def region_features(
    model: torch.nn.Module,
    image: np.ndarray,
    cams: np.ndarray,
    classes,
    mask: np.ndarray,
    device: torch.device | str = "cpu",
) -> dict[int, dict[str, float]]:
    """:data:`FEATURES` of each class's region in ``mask`` (H, W) label map, for a classifier
    ``model`` taking RGB in [0, 1]; ``cams`` are the normalised maps (N, H, W) the mask came
    from. One forward pass of 1 + 2 N small images."""
    if not len(classes):
        return {}
    x, small = _probe(image, mask)
    mean = torch.tensor((0.485, 0.456, 0.406)).view(3, 1, 1)  # zero after normalisation
    views = [x]
    for cls in classes:
        region = torch.from_numpy(small == cls + 1)
        views.append(torch.where(region, x, mean))
        views.append(remove_object(x, small == cls + 1))
    probabilities = torch.sigmoid(model(torch.stack(views).to(device)).float()).cpu()
    strongest = cams.argmax(axis=0) if len(cams) else None
    features = {}
    for row, cls in enumerate(classes):
        region = mask == cls + 1
        p = float(probabilities[0, cls])
        cam = cams[row]
        total = float(cam.sum())
        wins = strongest == row
        uncertain = (mask == IGNORE) & wins
        _, parts = ndimage.label(region)
        features[int(cls)] = {
            "probability": p,
            "kept": min(2.0, float(probabilities[1 + 2 * row, cls]) / max(p, 1e-6)),
            "removed": min(2.0, float(probabilities[2 + 2 * row, cls]) / max(p, 1e-6)),
            "score": float(cam[region].mean(dtype=np.float64)) if region.any() else 0.0,
            "map_share": float(cam[region].sum(dtype=np.float64)) / total if total > 0 else 0.0,
            "area": float(region.mean()),
            "parts": float(np.log1p(parts)),
            "uncertain": float(uncertain.sum() / max(1, uncertain.sum() + region.sum())),
        }
    return features
