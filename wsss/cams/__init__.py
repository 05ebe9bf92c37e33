"""Class activation maps: per-class maps for each image's labelled classes, with TTA.

``compute_cams`` is the entry point for every method (CAM, Grad-CAM, Grad-CAM++, XGrad-CAM,
LayerCAM, HiResCAM, Score-CAM) on any classifier; ``multiscale_cams`` adds scales and flips;
``normalize_cams`` and ``upsample_cams`` prepare maps for thresholding.
"""

from wsss.cams.cam import class_activation_maps
from wsss.cams.compute import METHODS, cam_method, compute_cams
from wsss.cams.tta import CamMethod, multiscale_cams, normalize_cams, upsample_cams

__all__ = [
    "METHODS",
    "CamMethod",
    "cam_method",
    "class_activation_maps",
    "compute_cams",
    "multiscale_cams",
    "normalize_cams",
    "upsample_cams",
]
