"""From maps to masks: the threshold rule, map refiners (PAR, IRN), dense CRF refinement, and
the per-image predictor that every caller uses (:class:`MaskPredictor`)."""

from wsss.masks.affinity import IrnSettings
from wsss.masks.crf import CRFFailure, CRFSettings, refine_label_map, refine_or_fail
from wsss.masks.predictor import MaskPrediction, MaskPredictor, working_size
from wsss.masks.refine import REFINERS, ParSettings, RefineSettings
from wsss.masks.threshold import IGNORE, ThresholdSettings, cam_to_label_map

__all__ = [
    "IGNORE",
    "IrnSettings",
    "REFINERS",
    "ParSettings",
    "RefineSettings",
    "CRFFailure",
    "CRFSettings",
    "MaskPrediction",
    "MaskPredictor",
    "ThresholdSettings",
    "cam_to_label_map",
    "refine_label_map",
    "refine_or_fail",
    "working_size",
]
