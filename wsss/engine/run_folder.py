"""The layout of a ``generate_masks`` run folder, and the records that make a run resumable.

    <run>/
      masks/<id>.png        label PNG per image (VOC palette; 0 bg, 1..K, 255 uncertain)
      annotations.json      COCO instances file
      overlays/<id>.png     overlay pictures of a sample of images, and contact_sheet.png
      cams/<id>.npz         (export.save_cams) float16 normalised maps and their classes
      thumbs/<id>.jpg       (export.quality) the review page's thumbnails
      report.html           (export.quality) the review page, and report_data.js its data
      records/<id>.json     one small record per finished image (below)
      run.json              what determines the outputs (settings, classifier digest, split)
      metrics.json, threshold_sweep.png, summary.json, skipped.json, crf_failures.json

``generate_pseudo_masks`` writes an image's record (:class:`ImageRecord`, atomically) after its
mask: its COCO image entry and annotations, its labels, quality estimate and score contributions
(sparse confusion counts), and any CRF failure; an unusable image gets a :class:`SkippedImage`.
A rerun skips images that have a record; ranks under ``torchrun`` write records for their own
images. The run's files are then built from the records in split order, so a resumed
or sharded run writes exactly what one uninterrupted process would. ``run.json`` holds the
settings the records were made with; a rerun with other settings is refused instead of mixing
two runs. Every id-derived path is checked to stay inside its folder.
"""

from __future__ import annotations

import json
import logging
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from wsss.errors import ConfigError, DataError
from wsss.io import atomic_path, output_path, write_json

log = logging.getLogger(__name__)


@dataclass
class ImageRecord:
    """What a run knows of one finished image (``records/<id>.json``).

    ``image``: its COCO image entry (id, file_name, width, height); ``annotations``: its COCO
    annotations; ``labels``: the 0-based classes it was labelled with; ``probabilities``: the
    classifier's, when the classifier chose them (``predicted``); ``crf_failure``: why the CRF
    failed on it (its mask from before the CRF was kept); ``empty_mask``: labelled, but the mask
    holds none of its classes; ``quality``: ``{"image": estimate, "classes": {name: {feature: value,
    "estimate": ...}}}`` (``export.quality``); ``scores``: sparse confusion counts of its mask, of
    the threshold rule's mask (with a CRF) and of the threshold sweep (with ground truth).
    """

    image: dict
    annotations: list[dict]
    labels: list[int]
    probabilities: list[float] | None = None
    predicted: bool = False
    crf_failure: str | None = None
    empty_mask: bool = False
    quality: dict | None = None
    scores: dict | None = None

    def to_json(self) -> dict:
        return {
            "image": self.image,
            "annotations": self.annotations,
            "labels": self.labels,
            "probabilities": self.probabilities,
            "predicted": self.predicted,
            "crf_failure": self.crf_failure,
            "empty_mask": self.empty_mask,
            "quality": self.quality,
            "scores": self.scores,
        }


@dataclass
class SkippedImage:
    """The record of an image left out as unusable (``on_bad_image=skip``), and why."""

    reason: str

    def to_json(self) -> dict:
        return {"skipped": self.reason}


def record_from_json(data: object) -> ImageRecord | SkippedImage:
    """The record a ``records/<id>.json`` file holds; a ValueError for anything else."""
    if isinstance(data, dict) and "skipped" in data:
        return SkippedImage(str(data["skipped"]))
    if not isinstance(data, dict) or "image" not in data:
        raise ValueError("record without an image entry")
    return ImageRecord(**{k: v for k, v in data.items() if k in ImageRecord.__dataclass_fields__})


def save_maps(path: Path, cams: np.ndarray, classes) -> None:
    """Write an image's normalised maps (float16) and their 0-based classes, atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, cams=cams.astype(np.float16), classes=np.array(classes, np.int64))


def load_maps(path: Path, classes) -> np.ndarray:
    """An image's saved maps (float32), checked to be for ``classes``."""
    try:
        with np.load(path) as data:
            cams, stored = data["cams"].astype(np.float32), tuple(data["classes"].tolist())
    except (OSError, KeyError, ValueError) as exc:
        raise DataError(f"{path}: unreadable CAM cache file ({exc})") from exc
    if stored != tuple(classes):
        raise DataError(f"{path}: maps are for classes {stored}, the labels say {classes}")
    return cams


class RunFolder:
    """Paths of one run folder; nothing is created until asked (``create=True``)."""

    MASKS, CAMS, OVERLAYS, RECORDS, THUMBS = "masks", "cams", "overlays", "records", "thumbs"

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"RunFolder({str(self.root)!r})"

    # Per-image files, under their folder whatever the image id.
    def mask(self, image_id: str, create: bool = False) -> Path:
        return output_path(self.root, self.MASKS, image_id, ".png", create)

    def cams(self, image_id: str, create: bool = False) -> Path:
        return output_path(self.root, self.CAMS, image_id, ".npz", create)

    def overlay(self, image_id: str, create: bool = False) -> Path:
        return output_path(self.root, self.OVERLAYS, image_id, ".png", create)

    def record(self, image_id: str, create: bool = False) -> Path:
        return output_path(self.root, self.RECORDS, image_id, ".json", create)

    def thumb(self, image_id: str, create: bool = False) -> Path:
        return output_path(self.root, self.THUMBS, image_id, ".jpg", create)

    # Run-level files.
    @property
    def masks_dir(self) -> Path:
        return self.root / self.MASKS

    @property
    def cams_dir(self) -> Path:
        return self.root / self.CAMS

    @property
    def annotations(self) -> Path:
        return self.root / "annotations.json"

    @property
    def contact_sheet(self) -> Path:
        return self.root / self.OVERLAYS / "contact_sheet.png"

    @property
    def report(self) -> Path:
        return self.root / "report.html"

    @property
    def report_data(self) -> Path:
        return self.root / "report_data.js"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.json"

    @property
    def sweep_plot(self) -> Path:
        return self.root / "threshold_sweep.png"

    @property
    def summary(self) -> Path:
        return self.root / "summary.json"

    @property
    def skipped(self) -> Path:
        return self.root / "skipped.json"

    @property
    def crf_failures(self) -> Path:
        return self.root / "crf_failures.json"

    @property
    def fingerprint(self) -> Path:
        """``run.json``: what determines the run's outputs (:meth:`check_fingerprint`)."""
        return self.root / "run.json"

    # Records.
    def has_record(self, image_id: str) -> bool:
        return self.record(image_id).is_file()

    def write_record(self, image_id: str, record: ImageRecord | SkippedImage) -> None:
        write_json(self.record(image_id, create=True), record.to_json())

    def read_record(self, image_id: str) -> ImageRecord | SkippedImage:
        """The image's record (a ValueError or OSError when it is damaged or missing)."""
        return record_from_json(json.loads(self.record(image_id).read_text()))

    def write_maps(self, image_id: str, cams: np.ndarray, classes) -> None:
        save_maps(self.cams(image_id, create=True), cams, classes)

    def read_maps(self, image_id: str, classes) -> np.ndarray:
        return load_maps(self.cams(image_id), classes)

    def finished_images(self) -> int:
        """How many images have a record of finished work (skipped images do not count)."""
        records = self.root / self.RECORDS
        count = 0
        for path in records.rglob("*.json") if records.is_dir() else ():
            try:
                count += isinstance(record_from_json(json.loads(path.read_text())), ImageRecord)
            except (OSError, ValueError, TypeError):
                continue  # a damaged record is no finished work
        return count

    def check_record(self, image_id: str, with_cams: bool = False) -> str | None:
        """What is wrong with an image's record and the files it vouches for (its mask, and its
        maps when ``with_cams``), or None when they are sound."""
        try:
            data = json.loads(self.record(image_id).read_text())
        except (OSError, ValueError) as exc:
            return f"unreadable record ({exc})"
        try:
            record = record_from_json(data)
        except (ValueError, TypeError) as exc:
            return str(exc)
        if isinstance(record, SkippedImage):
            return None
        paths = [self.mask(image_id)] + ([self.cams(image_id)] if with_cams else [])
        for path in paths:
            try:
                if path.suffix == ".npz":
                    with zipfile.ZipFile(path) as archive:
                        broken = archive.testzip()
                    if broken is not None:
                        return f"damaged maps {path} ({broken})"
                else:
                    with Image.open(path) as img:
                        img.load()
            except (OSError, ValueError, zipfile.BadZipFile, SyntaxError) as exc:
                return f"missing or damaged {path} ({exc})"
        return None

    def check_fingerprint(self, fingerprint: dict) -> bool:
        """Write ``run.json``, or check it against ``fingerprint``; True if the folder holds
        records of an earlier run with the same settings (which will be reused).

        A folder whose earlier run finished no image (it stopped on bad input, say) does not
        hold it against new settings: its records of skips are dropped and the run starts
        afresh."""
        if self.fingerprint.is_file():
            previous = json.loads(self.fingerprint.read_text())
            if previous != json.loads(json.dumps(fingerprint)):
                if self.finished_images() == 0:
                    log.info("%s: the earlier run finished no image; starting afresh", self.root)
                    shutil.rmtree(self.root / self.RECORDS, ignore_errors=True)
                    write_json(self.fingerprint, fingerprint)
                    return False
                changed = ", ".join(_differences(previous, json.loads(json.dumps(fingerprint))))
                raise ConfigError(
                    f"{self.root} holds an earlier run made with other settings ({changed}); "
                    "resume it with the same ones, or write to a new folder"
                )
            return (self.root / self.RECORDS).is_dir()
        write_json(self.fingerprint, fingerprint)
        return False

    def remove_partial_files(self) -> int:
        """Delete temporary files a killed run left behind (complete files are never temporary:
        see :func:`wsss.io.atomic_path`); returns how many."""
        partial = [p for p in self.root.rglob(".*.tmp") if p.is_file()]
        for path in partial:
            path.unlink(missing_ok=True)
        return len(partial)


def _differences(old: object, new: object, prefix: str = "") -> list[str]:
    """The dotted keys where two JSON values differ, with both values (``crf.iterations: 10 ->
    5``); a few at most."""
    if isinstance(old, dict) and isinstance(new, dict):
        found = []
        for key in sorted(set(old) | set(new)):
            found += _differences(old.get(key), new.get(key), f"{prefix}{key}.")
        return found[:5]
    if old != new:
        return [f"{prefix.rstrip('.')}: {_brief(old)} -> {_brief(new)}"]
    return []


def _brief(value: object) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."
