"""One small record per finished image: what makes a run resumable and shardable.

``generate_pseudo_masks`` writes ``records/<id>.json`` (atomically) after an image's mask: its
COCO image entry and annotations, its score contributions (sparse confusion counts), and any
skip or CRF failure. A rerun skips images that have a record; ranks under ``torchrun`` write
records for their own images. :func:`merge_records` then builds the run's files from the records
in split order, so a resumed or sharded run writes exactly what one uninterrupted process would.
``run.json`` holds the settings the records were made with; a rerun with other settings is
refused instead of mixing two runs.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from wsss.data.folder import LabelledSplit, Sample
from wsss.errors import ConfigError, DataError
from wsss.evaluation import ConfusionMatrix, ThresholdSweep
from wsss.export import contact_sheet, save_rgb, write_coco
from wsss.io import output_path, write_json

log = logging.getLogger(__name__)

RECORDS = "records"


def record_path(out_dir: Path, image_id: str, create: bool = False) -> Path:
    return output_path(out_dir, RECORDS, image_id, ".json", create)


def write_record(out_dir: Path, image_id: str, record: dict) -> None:
    write_json(record_path(out_dir, image_id, create=True), record)


def has_record(out_dir: Path, image_id: str) -> bool:
    return record_path(out_dir, image_id).is_file()


def check_run_settings(out_dir: Path, fingerprint: dict) -> bool:
    """Write ``run.json``, or check it against ``fingerprint``; True if the folder holds records
    of an earlier run with the same settings (which will be reused)."""
    path = out_dir / "run.json"
    if path.is_file():
        previous = json.loads(path.read_text())
        if previous != json.loads(json.dumps(fingerprint)):
            changed = sorted(k for k in fingerprint if previous.get(k) != fingerprint[k])
            raise ConfigError(
                f"{out_dir} holds an earlier run made with other settings ({changed}); "
                "resume it with the same ones, or write to a new folder"
            )
        return (out_dir / RECORDS).is_dir()
    write_json(path, fingerprint)
    return False


def remove_partial_files(out_dir: Path) -> int:
    """Delete temporary files a killed run left behind (complete files are never temporary:
    see :func:`wsss.io.atomic_path`); returns how many."""
    partial = [p for p in out_dir.rglob(".*.tmp") if p.is_file()]
    for path in partial:
        path.unlink(missing_ok=True)
    return len(partial)


@dataclass
class MergedRun:
    """What the records of a run add up to."""

    images: int = 0
    annotations: int = 0
    skipped: list[dict] = field(default_factory=list)
    crf_failures: list[dict] = field(default_factory=list)
    predicted_labels: int = 0
    confusion: ConfusionMatrix | None = None
    raw_confusion: ConfusionMatrix | None = None
    sweep: ThresholdSweep | None = None
    outputs: dict[str, str] = field(default_factory=dict)


def merge_records(
    out_dir: Path,
    split: LabelledSplit,
    overlay_ids: Sequence[str],
    with_crf: bool,
    extra_skipped: Sequence[dict] = (),
) -> MergedRun:
    """Build annotations.json, skipped.json, crf_failures.json and the contact sheet from the
    records of every image of ``split``, in split order; sum their scores."""
    num_labels = len(split.class_names) + 1
    merged = MergedRun(skipped=list(extra_skipped))
    skipped_files = {entry["file"] for entry in merged.skipped}
    evaluate = split.has_masks
    if evaluate:
        merged.confusion = ConfusionMatrix(num_labels)
        merged.raw_confusion = ConfusionMatrix(num_labels) if with_crf else None
        merged.sweep = ThresholdSweep(num_labels)
    images, annotations, missing = [], [], []
    sample: Sample
    for sample in tqdm(split.samples, desc="merge records", unit="img", leave=False):
        path = record_path(out_dir, sample.image_id)
        if not path.is_file():
            missing.append(sample.image_id)
            continue
        record = json.loads(path.read_text())
        if "skipped" in record:
            if str(sample.image_path) not in skipped_files:  # not already skipped in training
                merged.skipped.append({"file": str(sample.image_path), "reason": record["skipped"]})
            continue
        merged.images += 1
        images.append(record["image"])
        annotations += record["annotations"]
        merged.predicted_labels += bool(record.get("predicted"))
        if record.get("crf_failure"):
            merged.crf_failures.append(
                {"image": str(sample.image_path), "error": record["crf_failure"]}
            )
        if evaluate:
            scores = record["scores"]
            merged.confusion.add_sparse(scores["masks"])
            if merged.raw_confusion is not None:
                merged.raw_confusion.add_sparse(scores["threshold_rule"])
            merged.sweep.add_sparse(scores["sweep"])
    if missing:
        raise DataError(
            f"{out_dir}: {len(missing)} images have no record (first: {missing[:3]}); "
            "rerun the same command to finish them"
        )
    merged.annotations = len(annotations)
    write_coco(
        out_dir / "annotations.json",
        images,
        annotations,
        split.class_names,
        category_ids=split.coco_category_ids,
    )
    merged.outputs = {
        "masks": str(out_dir / "masks"),
        "annotations": str(out_dir / "annotations.json"),
    }
    if merged.skipped:
        write_json(out_dir / "skipped.json", merged.skipped)
        merged.outputs["skipped"] = str(out_dir / "skipped.json")
    if merged.crf_failures:
        write_json(out_dir / "crf_failures.json", merged.crf_failures)
        merged.outputs["crf_failures"] = str(out_dir / "crf_failures.json")
    panels = []
    for image_id in overlay_ids:
        path = out_dir / "overlays" / f"{image_id}.png"
        if path.is_file():
            with Image.open(path) as img:
                panels.append(np.asarray(img.convert("RGB")))
    if panels:
        save_rgb(out_dir / "overlays" / "contact_sheet.png", contact_sheet(panels))
        merged.outputs["contact_sheet"] = str(out_dir / "overlays" / "contact_sheet.png")
    return merged
