"""Map refiners: from CAM seeds to maps that cover whole objects (the ``refine`` config group).

A :data:`REFINERS` entry is a dataclass deriving from :class:`RefineSettings` whose
:meth:`~RefineSettings.refine` turns an image's normalised maps into refined maps in [0, 1] at the
same size; the label map is then the strongest refined map where it reaches the background
score (the refiner's ``bg_threshold`` when it sets one, else the ``mask`` group's rule), and the
dense CRF, when configured, refines that.

* ``par``: training-free pixel-adaptive refinement (PAR, as in AFA and ToCo);
* ``irn``: IRN's inter-pixel relation network and random walk (:mod:`wsss.masks.random_walk`,
  trained by ``python -m wsss.train_affinity``);
* ``superpixels``: each map averaged within SLIC superpixels of the image, so that a mask
  follows the image's regions (a precision step: spill that crosses a colour edge is cut).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import MISSING

from wsss.errors import ConfigError
from wsss.registry import Registry

REFINERS: Registry[type[RefineSettings]] = Registry("map refiner")


@dataclass
class RefineSettings:
    """Base of every refiner's settings: ``name`` is its registered name; ``bg_threshold``,
    when set, is the background score its refined maps are compared with (None: the ``mask``
    group's rule)."""

    name: str = MISSING
    bg_threshold: float | None = None

    def validate(self) -> None:
        if type(self) is not REFINERS.get(self.name):
            raise ConfigError(f"refine.name={self.name!r} does not go with {type(self).__name__}")
        if self.bg_threshold is not None and not 0 <= self.bg_threshold <= 1:
            raise ConfigError(f"refine.bg_threshold must be in [0, 1], got {self.bg_threshold}")

    def refine(self, image: np.ndarray, cams: np.ndarray, classes: Sequence[int]) -> np.ndarray:
        """Refined (N, H, W) float32 maps in [0, 1] of ``image`` (H, W, 3) uint8, from its
        normalised maps ``cams`` (N, H, W) for ``classes``."""
        raise NotImplementedError


# --------------------------------------------------------------------------------------------
# PAR


def _offsets(dilations: Sequence[int]) -> list[tuple[int, int]]:
    """The 8 neighbours of a pixel at each dilation: (dy, dx)."""
    ring = [(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)]
    return [(dy * d, dx * d) for d in dilations for dy, dx in ring]


def _neighbours(x: torch.Tensor, offsets: list[tuple[int, int]]) -> torch.Tensor:
    """(C, K, H, W): each pixel's value at every offset, edges replicated."""
    pad = max(max(abs(dy), abs(dx)) for dy, dx in offsets)
    padded = F.pad(x[None], (pad, pad, pad, pad), mode="replicate")[0]
    height, width = x.shape[-2:]
    return torch.stack(
        [
            padded[:, pad + dy : pad + dy + height, pad + dx : pad + dx + width]
            for dy, dx in offsets
        ],
        dim=1,
    )


def par_affinity(
    image: torch.Tensor, dilations: Sequence[int], w1: float, w2: float
) -> tuple[torch.Tensor, list[tuple[int, int]]]:
    """PAR's affinity of every pixel to its neighbours, (K, H, W), rows summing to 1 + w2.

    ``softmax_j(-(|I_i - I_j| / sigma_i / w1)^2)`` (colour differences averaged over RGB;
    ``sigma_i`` the standard deviation of the neighbours' colours) plus ``w2`` times the same
    softmax of the neighbours' distances.
    """
    offsets = _offsets(dilations)
    near = _neighbours(image, offsets)  # (3, K, H, W)
    colour = ((near - image[:, None]).abs() / (near.std(dim=1, keepdim=True) + 1e-8) / w1) ** 2
    colour = -colour.mean(dim=0)  # (K, H, W)
    distance = torch.tensor([float(np.hypot(dy, dx)) for dy, dx in offsets])
    position = -((distance / (distance.std() + 1e-8) / w1) ** 2)
    affinity = torch.softmax(colour, dim=0) + w2 * torch.softmax(position, dim=0)[:, None, None]
    return affinity, offsets


@REFINERS.register("par")
@dataclass
class ParSettings(RefineSettings):
    """Pixel-adaptive refinement: the maps, on an image of ``scale`` times the working size, are
    averaged ``iterations`` times over each pixel's 8 neighbours at ``dilations``, weighted by
    :func:`par_affinity`; then brought back to full size and divided by their maximum."""

    name: str = "par"
    dilations: list[int] = field(default_factory=lambda: [1, 2, 4, 8, 12, 24])
    iterations: int = 10
    w1: float = 0.3
    w2: float = 0.01
    scale: float = 0.5

    def validate(self) -> None:
        super().validate()
        if not self.dilations or min(self.dilations) < 1 or self.iterations < 1:
            raise ConfigError("refine.dilations must be >= 1 and refine.iterations >= 1")
        if not 0 < self.scale <= 1 or self.w1 <= 0 or self.w2 < 0:
            raise ConfigError("refine.scale must be in (0, 1], refine.w1 > 0, refine.w2 >= 0")

    def refine(self, image, cams, classes):
        if len(cams) == 0:
            return cams
        height, width = cams.shape[1:]
        size = (max(1, round(height * self.scale)), max(1, round(width * self.scale)))
        x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float() / 255
        x = F.interpolate(x[None], size, mode="bilinear", antialias=True, align_corners=False)[0]
        maps = torch.from_numpy(cams).float()[None]
        maps = F.interpolate(maps, size, mode="bilinear", antialias=True, align_corners=False)[0]
        affinity, offsets = par_affinity(x, self.dilations, self.w1, self.w2)
        for _ in range(self.iterations):
            maps = (_neighbours(maps, offsets) * affinity[None]).sum(dim=1)
        maps = F.interpolate(maps[None], (height, width), mode="bilinear", align_corners=False)[0]
        peak = maps.flatten(1).amax(dim=1).clamp_min(1e-8)
        return (maps / peak[:, None, None]).numpy().astype(np.float32)


# --------------------------------------------------------------------------------------------
# Superpixels


@REFINERS.register("superpixels")
@dataclass
class SuperpixelSettings(RefineSettings):
    """Each map replaced by ``mix`` times its mean within the image's SLIC superpixels (about
    ``segments`` of them, of ``compactness``; scikit-image's SLIC on the image in CIELAB) plus
    ``1 - mix`` times itself, then divided by its maximum."""

    name: str = "superpixels"
    segments: int = 200
    compactness: float = 10.0
    mix: float = 1.0

    def validate(self) -> None:
        super().validate()
        if self.segments < 1 or self.compactness <= 0:
            raise ConfigError("refine.segments must be >= 1 and refine.compactness > 0")
        if not 0 <= self.mix <= 1:
            raise ConfigError(f"refine.mix must be in [0, 1], got {self.mix}")

    def refine(self, image, cams, classes):
        if len(cams) == 0:
            return cams
        regions = superpixels(image, self.segments, self.compactness)
        return region_means(cams, regions, self.mix)


def superpixels(image: np.ndarray, segments: int, compactness: float) -> np.ndarray:
    """(H, W) int labels 0..R-1 of SLIC superpixels of ``image`` (H, W, 3) uint8."""
    from skimage.segmentation import slic

    regions = slic(image, n_segments=segments, compactness=compactness, start_label=0)
    return np.unique(regions, return_inverse=True)[1].reshape(regions.shape)


def region_means(cams: np.ndarray, regions: np.ndarray, mix: float = 1.0) -> np.ndarray:
    """``cams`` (N, H, W) with each pixel's value replaced by ``mix`` times its region's mean
    plus ``1 - mix`` times itself, each map then divided by its maximum."""
    flat = regions.ravel()
    sizes = np.bincount(flat).astype(np.float64)
    out = np.empty(cams.shape, np.float32)
    for k, cam in enumerate(cams):
        means = np.bincount(flat, weights=cam.ravel()) / sizes
        out[k] = mix * means[regions] + (1 - mix) * cam
    peak = out.reshape(len(out), -1).max(axis=1).clip(min=1e-8)
    return out / peak[:, None, None]
