"""From class activation maps to label maps: the rule that turns a map into a mask."""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from wsss.errors import ConfigError

#: label value for "uncertain" pixels in predictions and "ignore" pixels in ground truth
IGNORE = 255


RULES = ("fixed", "otsu", "mass")


@dataclass
class ThresholdSettings:
    """How normalised maps become a label map (the ``mask`` config group).

    A pixel belongs to a class where that class's map reaches its threshold (the strongest such
    map wins), and to the background where no map does. ``rule`` picks the thresholds:

    * ``fixed``: ``bg_threshold`` for every map;
    * ``otsu``: per image and class, Otsu's threshold of the map's histogram (the value that
      best splits it into two groups), which needs no parameter;
    * ``mass``: per image and class, the value above which the map holds a ``mass`` share of its
      total (the object keeps that share of the evidence).

    With ``fg_threshold`` set, pixels whose strongest map is below it (but above its threshold)
    are uncertain (255), which segmentation trainers ignore.
    """

    bg_threshold: float = 0.15
    fg_threshold: float | None = None
    #: otsu: chosen on VOC 2012 train, where it beats a fixed 0.15 (README, Real photos)
    rule: str = "otsu"
    mass: float = 0.8

    def validate(self) -> None:
        if self.rule not in RULES:
            raise ConfigError(f"mask.rule must be one of {RULES}, got {self.rule!r}")
        if not 0.0 <= self.bg_threshold <= 1.0:
            raise ConfigError(f"mask.bg_threshold must be in [0, 1], got {self.bg_threshold}")
        if self.fg_threshold is not None and not self.bg_threshold <= self.fg_threshold <= 1.0:
            raise ConfigError(
                f"mask.fg_threshold must be in [bg_threshold, 1], got {self.fg_threshold}"
            )
        if not 0.0 < self.mass <= 1.0:
            raise ConfigError(f"mask.mass must be in (0, 1], got {self.mass}")

    def describe(self) -> str:
        """The rule in a few words, for summaries: ``threshold 0.15`` or ``otsu rule``."""
        if self.rule == "fixed":
            return f"threshold {self.bg_threshold:.2f}"
        return f"mass rule {self.mass}" if self.rule == "mass" else "otsu rule"

    def thresholds(self, cams: np.ndarray) -> float | np.ndarray:
        """The rule's threshold: one float, or one per map of ``cams`` (N, H, W)."""
        if self.rule == "fixed":
            return self.bg_threshold
        if self.rule == "otsu":
            return np.array([otsu_threshold(m) for m in cams], np.float32)
        return np.array([mass_threshold(m, self.mass) for m in cams], np.float32)

    def label_map(self, cams: np.ndarray, classes: Sequence[int]) -> np.ndarray:
        """The (H, W) uint8 label map of normalised maps ``cams`` (N, H, W) for ``classes``."""
        return cam_to_label_map(cams, classes, self.thresholds(cams), self.fg_threshold)


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold of ``values`` in [0, 1]: the histogram cut that maximises the
    between-group variance (1.0, nothing kept, for a constant map)."""
    counts, edges = np.histogram(values, bins=bins, range=(0.0, 1.0))
    counts = counts.astype(np.float64)
    centres = (edges[:-1] + edges[1:]) / 2
    weight = np.cumsum(counts)  # pixels at or below each bin
    total = weight[-1]
    mean_below = np.cumsum(counts * centres)
    with np.errstate(invalid="ignore", divide="ignore"):
        m0 = mean_below / weight
        m1 = (mean_below[-1] - mean_below) / (total - weight)
        between = weight * (total - weight) * (m0 - m1) ** 2
    between = np.nan_to_num(between[:-1], nan=-1.0)
    if between.max() <= 0:
        return 1.0
    return float(edges[int(np.argmax(between)) + 1])


def mass_threshold(values: np.ndarray, share: float) -> float:
    """The largest t such that the values >= t sum to at least ``share`` of all values."""
    flat = np.sort(values.ravel())[::-1]
    total = flat.sum(dtype=np.float64)
    if total <= 0:
        return 1.0
    index = int(np.searchsorted(np.cumsum(flat, dtype=np.float64), share * total))
    return float(flat[min(index, len(flat) - 1)])


def check_class_indices(classes: Sequence[int]) -> None:
    """Refuse anything but 0-based class indices a uint8 label map can hold (0..253)."""
    for c in classes:
        if isinstance(c, bool) or not isinstance(c, numbers.Integral):
            raise ValueError(
                f"class {c!r} in {list(classes)}: classes are 0-based indices (ints); a name "
                "is turned into one by its split: split.class_names.index(name)"
            )
        if not 0 <= c <= IGNORE - 2:
            raise ValueError(
                f"class index {c}: a uint8 label map holds classes 0..{IGNORE - 2} "
                f"(value = index + 1; 0 means background, {IGNORE} uncertain)"
            )


def cam_to_label_map(
    cams: np.ndarray,
    classes: Sequence[int],
    bg_threshold: float | np.ndarray,
    fg_threshold: float | None = None,
) -> np.ndarray:
    """Turn normalised maps into a label map: the core rule every stage shares.

    ``cams``: (N, H, W) float maps in [0, 1] for the image's labelled classes ``classes``
    (0-based class indices). A pixel is background (0) where no map reaches ``bg_threshold``
    (one value, or one per map); otherwise it takes the class id (index + 1) of the strongest map
    that does. With ``fg_threshold`` set, pixels whose strongest map is below it are uncertain
    (255). Returns (H, W) uint8.
    """
    check_class_indices(classes)
    if cams.ndim != 3 or cams.shape[0] != len(classes):
        raise ValueError(f"cams must be (len(classes), H, W), got {cams.shape} for {classes}")
    per_class = np.ndim(bg_threshold) > 0
    if fg_threshold is not None and not per_class and fg_threshold < bg_threshold:
        raise ValueError(f"fg_threshold {fg_threshold} < bg_threshold {bg_threshold}")
    height, width = cams.shape[1:]
    if len(classes) == 0:
        return np.zeros((height, width), dtype=np.uint8)
    ids = np.asarray(classes, dtype=np.int64) + 1
    if per_class:  # only maps at or above their own threshold compete
        cams = np.where(cams >= np.asarray(bg_threshold).reshape(-1, 1, 1), cams, -1.0)
        bg_threshold = 0.0
    best = cams.max(axis=0)
    label_map = ids[cams.argmax(axis=0)].astype(np.uint8)
    label_map[best < bg_threshold] = 0
    if fg_threshold is not None:
        label_map[(best >= bg_threshold) & (best < fg_threshold)] = IGNORE
    return label_map
