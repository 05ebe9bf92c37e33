"""Scoring a finished run folder against a split's ground truth."""

from __future__ import annotations

from pathlib import Path

from tqdm import tqdm

from wsss.data.images import load_label_map
from wsss.data.split import LabelledSplit
from wsss.engine.run_folder import RunFolder
from wsss.errors import DataError
from wsss.metrics import ConfusionMatrix, ThresholdSweep


def evaluate_run(
    run_dir: Path, split: LabelledSplit
) -> tuple[ConfusionMatrix, ThresholdSweep | None]:
    """The confusion matrix of the run's masks over ``split``, and a threshold sweep over its
    saved maps (None when the run saved none)."""
    folder = RunFolder(run_dir)
    if not folder.masks_dir.is_dir():
        raise DataError(f"{run_dir}: no masks/ folder (is this a generate_masks run folder?)")
    if not split.has_masks:
        raise DataError(f"{split.root}: the split has no ground-truth masks")
    num_labels = len(split.class_names) + 1
    confusion = ConfusionMatrix(num_labels)
    sweep = ThresholdSweep(num_labels) if folder.cams_dir.is_dir() else None
    for sample in tqdm(split.samples, desc="evaluate", unit="img"):
        truth = split.ground_truth(sample)
        confusion.update(load_label_map(folder.mask(sample.image_id), truth.shape), truth)
        if sweep is not None:
            cams = folder.read_maps(sample.image_id, sample.labels)
            sweep.update(cams, sample.labels, truth)
    return confusion, sweep
