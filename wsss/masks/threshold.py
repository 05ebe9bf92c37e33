"""From class activation maps to label maps: the rule that turns a map into a mask."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from wsss.errors import ConfigError

#: label value for "uncertain" pixels in predictions and "ignore" pixels in ground truth
IGNORE = 255


@dataclass
class ThresholdSettings:
    """How normalised maps become a label map (the ``mask`` config group).

    A pixel is background where every map is below ``bg_threshold``, otherwise the class of the
    strongest map; with ``fg_threshold`` set, pixels whose strongest map lies between the two
    are uncertain (255), which segmentation trainers ignore.
    """

    bg_threshold: float = 0.15
    fg_threshold: float | None = None

    def validate(self) -> None:
        if not 0.0 <= self.bg_threshold <= 1.0:
            raise ConfigError(f"mask.bg_threshold must be in [0, 1], got {self.bg_threshold}")
        if self.fg_threshold is not None and not self.bg_threshold <= self.fg_threshold <= 1.0:
            raise ConfigError(
                f"mask.fg_threshold must be in [bg_threshold, 1], got {self.fg_threshold}"
            )

    def label_map(self, cams: np.ndarray, classes: Sequence[int]) -> np.ndarray:
        """The (H, W) uint8 label map of normalised maps ``cams`` (N, H, W) for ``classes``."""
        return cam_to_label_map(cams, classes, self.bg_threshold, self.fg_threshold)


def cam_to_label_map(
    cams: np.ndarray, classes: Sequence[int], bg_threshold: float, fg_threshold: float | None = None
) -> np.ndarray:
    """Turn normalised maps into a label map: the core rule every stage shares.

    ``cams``: (N, H, W) float maps in [0, 1] for the image's labelled classes ``classes``
    (0-based class indices). A pixel is background (0) where every map is below
    ``bg_threshold``; otherwise it takes the class id (index + 1) of the strongest map. With
    ``fg_threshold`` set, pixels whose strongest map lies in [bg_threshold, fg_threshold) are
    uncertain (255). Returns (H, W) uint8.
    """
    if cams.ndim != 3 or cams.shape[0] != len(classes):
        raise ValueError(f"cams must be (len(classes), H, W), got {cams.shape} for {classes}")
    if fg_threshold is not None and fg_threshold < bg_threshold:
        raise ValueError(f"fg_threshold {fg_threshold} < bg_threshold {bg_threshold}")
    height, width = cams.shape[1:]
    if len(classes) == 0:
        return np.zeros((height, width), dtype=np.uint8)
    ids = np.asarray(classes, dtype=np.int64) + 1
    best = cams.max(axis=0)
    label_map = ids[cams.argmax(axis=0)].astype(np.uint8)
    label_map[best < bg_threshold] = 0
    if fg_threshold is not None:
        label_map[(best >= bg_threshold) & (best < fg_threshold)] = IGNORE
    return label_map
