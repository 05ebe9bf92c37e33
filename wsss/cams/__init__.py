"""Class activation maps: per-class maps for each image's labelled classes, with TTA."""

from wsss.cams.cam import class_activation_maps
from wsss.cams.tta import CamMethod, multiscale_cams, normalize_cams

__all__ = ["CamMethod", "class_activation_maps", "multiscale_cams", "normalize_cams"]
