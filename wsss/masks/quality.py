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

:data:`WEIGHTS` combine them linearly into an estimate of the region's IoU, clipped to [0, 1];
an image's estimate is the mean over its classes. The weights were fitted by least squares on
the *tune* third of VOC 2012 train and are reported on the other two thirds
(``scripts/fit_quality.py``, whose output they are; README, "Which masks to trust").
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
WEIGHTS = (-0.2452, 0.1963, 0.0864, -0.0842, 0.7248, 0.314, 0.0436, -0.0378, 0.0183)
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


def fit_weights(regions: list[dict], ridge: float = 1e-3) -> tuple[float, ...]:
    """Least-squares weights (intercept first, then one per :data:`FEATURES`) predicting each
    region's IoU from its features: ``regions`` are ``{"features": {...}, "iou": float}``. A small
    ridge keeps the fit stable when a feature barely varies (the intercept is not shrunk)."""
    x = np.array([[1.0, *(r["features"][f] for f in FEATURES)] for r in regions])
    y = np.array([r["iou"] for r in regions])
    penalty = ridge * np.eye(x.shape[1])
    penalty[0, 0] = 0.0
    weights = np.linalg.solve(x.T @ x + penalty, x.T @ y)
    return tuple(round(float(w), 4) for w in weights)


def estimate(features: dict[str, float], weights=WEIGHTS) -> float:
    """The estimated IoU of one region, in [0, 1]."""
    terms = zip(weights[1:], FEATURES, strict=True)
    value = weights[0] + sum(w * features[name] for w, name in terms)
    return float(np.clip(value, 0.0, 1.0))


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
