"""Class activation maps: per-class maps for each image's labelled classes, with TTA.

``compute_cams`` is the entry point for every method (CAM, Grad-CAM, Grad-CAM++, XGrad-CAM,
LayerCAM, HiResCAM, Score-CAM) on any classifier; each method is a settings class in
:data:`CAM_METHODS`. ``multiscale_cams`` adds scales and flips; ``normalize_cams`` and
``upsample_cams`` prepare maps for thresholding.
"""

from wsss.cams.compute import METHODS, cam_method, compute_cams, method_settings
from wsss.cams.engines import class_activation_maps
from wsss.cams.methods import (
    CAM_METHODS,
    GRADIENT_FORMULAS,
    CamSettings,
    ClassifierCam,
    GradientCam,
    ScoreCam,
    gradient_method,
)
from wsss.cams.tta import CamMethod, multiscale_cams, normalize_cams, upsample_cams

__all__ = [
    "CAM_METHODS",
    "GRADIENT_FORMULAS",
    "METHODS",
    "CamMethod",
    "CamSettings",
    "ClassifierCam",
    "GradientCam",
    "ScoreCam",
    "cam_method",
    "class_activation_maps",
    "compute_cams",
    "gradient_method",
    "method_settings",
    "multiscale_cams",
    "normalize_cams",
    "upsample_cams",
]
