"""How well a class map localises its object, and how faithful it is to the classifier.

Localisation (needs the object's ground-truth mask):

* energy-based pointing game (Score-CAM paper): share of the map's energy inside the object;
* pointing game (Zhang et al.): is the map's maximum on the object (within ``tolerance`` px);
* map-vs-mask IoU: the map thresholded at ``threshold`` against the object's mask.

Context reliance (needs the mask): the class probability once the object is removed from the
image (filled in from its surroundings). A classifier that learned the object keeps little of
it; one that learned the object's usual context (boats -> water) keeps much of it.

Faithfulness (no mask needed; Grad-CAM++ and RISE papers), from the classifier's probability of
the class:

* average drop: ``max(0, p(image) - p(image * map)) / p(image)``, averaged;
* increase in confidence: share of images where ``p(image * map) > p(image)``;
* deletion / insertion: the probability as the most salient pixels are removed from the image
  (replaced by a blurred copy) or inserted into the blurred image, 10% at a time; the area under
  each curve (lower deletion and higher insertion are better).

Maps are (H, W) arrays at image resolution, normalised to [0, 1].
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from scipy import ndimage


def energy_inside(cam: np.ndarray, mask: np.ndarray) -> float:
    """Share of the map's total value that lies inside ``mask`` (NaN for an empty map)."""
    total = float(cam.sum())
    return float(cam[mask].sum()) / total if total > 0 else float("nan")


def pointing_hit(cam: np.ndarray, mask: np.ndarray, tolerance: float = 0) -> bool:
    """Whether the map's maximum lies on the object, or within ``tolerance`` pixels (Euclidean)
    of it."""
    y, x = np.unravel_index(int(np.argmax(cam)), cam.shape)
    if mask[y, x]:
        return True
    if tolerance <= 0 or not mask.any():
        return False
    return bool(ndimage.distance_transform_edt(~mask)[y, x] <= tolerance)


def map_iou(cam: np.ndarray, mask: np.ndarray, threshold: float = 0.5) -> float:
    """IoU of ``cam >= threshold`` with the mask."""
    region = cam >= threshold
    union = np.logical_or(region, mask).sum()
    return float(np.logical_and(region, mask).sum() / union) if union else float("nan")


Probability = Callable[[torch.Tensor], torch.Tensor]
"""Maps a (N, 3, H, W) batch to (N,) probabilities of the class being explained."""


def map_only_probability(probability: Probability, image: torch.Tensor, cam: np.ndarray) -> float:
    """p(image * map): the class probability when only the map's region of ``image`` (3, H, W)
    is kept."""
    weight = torch.from_numpy(cam).to(image)[None]
    return float(probability((image * weight)[None])[0])


def average_drop(p_full: np.ndarray, p_masked: np.ndarray) -> float:
    """Mean of ``max(0, p_full - p_masked) / p_full`` over images, in percent."""
    p_full = np.asarray(p_full, float)
    drop = np.maximum(0.0, p_full - np.asarray(p_masked, float)) / np.maximum(p_full, 1e-12)
    return float(100 * drop.mean())


def increase_in_confidence(p_full: np.ndarray, p_masked: np.ndarray) -> float:
    """Share of images (percent) whose probability rises when only the map's region is kept."""
    return float(100 * np.mean(np.asarray(p_masked) > np.asarray(p_full)))


def deletion_insertion(
    probability: Probability, image: torch.Tensor, cam: np.ndarray, steps: int = 10
) -> tuple[float, float]:
    """Areas under the deletion and insertion curves (both in [0, 1]).

    Pixels are ranked by map value; at step k the top k/steps of them are taken from the
    image (deletion: replaced by a blurred copy; insertion: pasted into the blurred copy).
    """
    blurred = torch.from_numpy(ndimage.gaussian_filter(image.cpu().numpy(), sigma=(0, 5, 5))).to(
        image
    )
    order = np.argsort(-cam.ravel(), kind="stable")
    keep = torch.zeros(cam.size, dtype=torch.bool)
    deleted, inserted = [], []
    counts = np.linspace(0, cam.size, steps + 1).round().astype(int)
    for count in counts:
        keep[:] = False
        keep[torch.from_numpy(order[:count])] = True
        top = keep.view(1, *cam.shape).to(image.device)
        deleted.append(torch.where(top, blurred, image))
        inserted.append(torch.where(top, image, blurred))
    views = deleted + inserted  # scored a few at a time: a large image makes large batches
    p = torch.cat([probability(torch.stack(views[i : i + 4])) for i in range(0, len(views), 4)])
    p = p.cpu().numpy()
    x = np.linspace(0, 1, steps + 1)
    return float(np.trapezoid(p[: steps + 1], x)), float(np.trapezoid(p[steps + 1 :], x))
