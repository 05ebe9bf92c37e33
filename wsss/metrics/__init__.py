"""Metrics: mIoU of label maps and the threshold sweep (segmentation), classifier mAP
(classification), and how well a map localises and explains (maps)."""

from wsss.metrics.classification import APResult, average_precision
from wsss.metrics.segmentation import DEFAULT_SWEEP, ConfusionMatrix, ThresholdSweep

__all__ = ["DEFAULT_SWEEP", "APResult", "ConfusionMatrix", "ThresholdSweep", "average_precision"]
