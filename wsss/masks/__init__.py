"""From maps to masks: the threshold rule, map refiners (PAR, IRN's random walk, superpixels), the
dense CRF, and the per-image predictor that every caller uses (:class:`MaskPredictor`)."""

from wsss.masks.crf import CRFFailure, CRFSettings, crf_label_map, crf_label_maps
from wsss.masks.predictor import (
    MaskPrediction,
    MaskPredictor,
    at_working_size,
    label_rule,
    working_size,
)
from wsss.masks.random_walk import IrnSettings
from wsss.masks.refine import REFINERS, ParSettings, RefineSettings, SuperpixelSettings
from wsss.masks.threshold import IGNORE, ThresholdSettings, cam_to_label_map

__all__ = [
    "IGNORE",
    "IrnSettings",
    "REFINERS",
    "ParSettings",
    "RefineSettings",
    "SuperpixelSettings",
    "CRFFailure",
    "CRFSettings",
    "MaskPrediction",
    "MaskPredictor",
    "ThresholdSettings",
    "cam_to_label_map",
    "crf_label_map",
    "crf_label_maps",
    "label_rule",
    "working_size",
    "at_working_size",
]
