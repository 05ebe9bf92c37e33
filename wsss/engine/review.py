"""Applying a review to a run: the masks a reviewer rejected (``rejected.json`` from the review
page) and those below a quality estimate are left out of the COCO file and the label PNGs."""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from wsss.data.images import load_label_map, save_label_map
from wsss.engine.run_folder import RunFolder
from wsss.errors import ConfigError, DataError
from wsss.export.report import Rejections
from wsss.io import atomic_path, write_json
from wsss.masks.threshold import IGNORE

log = logging.getLogger(__name__)


@dataclass
class ReviewResult:
    images: int
    annotations: int
    rejected_images: int
    rejected_annotations: int


def apply_review(
    run: Path, out: Path, rejections: Rejections | None = None, min_quality: float | None = None
) -> ReviewResult:
    """Write ``out/annotations.json`` and ``out/masks/`` from run folder ``run`` without the
    rejected images, and with the rejected (or lower than ``min_quality``) annotations removed:
    their pixels become 255 (ignored) in the label PNGs, so a trainer learns nothing there."""
    source, target = RunFolder(run), RunFolder(out)
    if source.root.resolve() == target.root.resolve():
        raise ConfigError(
            f"{out}: the reviewed masks would overwrite the run they come from; write them to "
            "another folder (hydra.run.dir=...)"
        )
    if min_quality is not None and not 0 <= min_quality <= 1:
        raise ConfigError(f"min_quality must be in [0, 1] (an estimated IoU), got {min_quality}")
    rejections = rejections or Rejections()
    check_rejections(rejections, run)
    coco = json.loads(source.annotations.read_text(encoding="utf-8"))
    names = {c["id"]: c["name"] for c in coco["categories"]}
    by_image = {image["id"]: Path(image["file_name"]).with_suffix("").as_posix()
                for image in coco["images"]}  # fmt: skip
    kept_images = [i for i in coco["images"] if not rejections.rejects(by_image[i["id"]])]
    kept_ids = {i["id"] for i in kept_images}
    kept, dropped = [], {}
    for ann in coco["annotations"]:
        if ann["image_id"] not in kept_ids:
            continue
        image_id, name = by_image[ann["image_id"]], names[ann["category_id"]]
        low = min_quality is not None and ann.get("quality", 1.0) < min_quality
        if rejections.rejects(image_id, name) or low:
            dropped.setdefault(image_id, set()).add(ann["category_id"])
        else:
            kept.append(ann)
    ids = [i + 1 for i in range(len(kept))]
    numbered = [{**a, "id": n} for a, n in zip(kept, ids, strict=True)]
    write_json(target.annotations, {**coco, "images": kept_images, "annotations": numbered})
    for image in tqdm(kept_images, desc="reviewed masks", unit="img", leave=False):
        image_id = by_image[image["id"]]
        mask_path = source.mask(image_id)
        if not mask_path.is_file():
            raise DataError(f"{mask_path}: missing mask of a finished run")
        destination = target.mask(image_id, create=True)
        if image_id in dropped:  # the classes' category ids are their label values + 0..K
            label_map = load_label_map(mask_path)
            values = _label_values(coco, dropped[image_id])
            label_map[np.isin(label_map, values)] = IGNORE
            with atomic_path(destination) as tmp:
                save_label_map(tmp, label_map)
        else:
            with atomic_path(destination) as tmp:
                shutil.copyfile(mask_path, tmp)
    result = ReviewResult(
        len(kept_images),
        len(kept),
        len(coco["images"]) - len(kept_images),
        sum(len(v) for v in dropped.values()),
    )
    log.info("review: %s", result)
    return result


def _label_values(coco: dict, category_ids: set[int]) -> list[int]:
    """The label-PNG values of COCO categories: their position in the file's categories + 1."""
    order = [c["id"] for c in coco["categories"]]
    return [order.index(c) + 1 for c in category_ids]


def check_rejections(rejections: Rejections, run: str | Path) -> None:
    """Refuse rejections not saved for run folder ``run``: saved by another run's review page
    (its ``run`` name), or naming images the run does not have or classes an image does not
    carry. Applied, they would silently leave out nothing."""
    source = RunFolder(run)
    name = source.root.resolve().name
    if rejections.run is not None and rejections.run != name:
        raise DataError(
            f"the rejections were saved by the review page of run {rejections.run!r}, not of "
            f'{run} ({name!r}); if that folder was renamed, set "run" in the file to {name!r}'
        )
    if not source.annotations.is_file():
        raise DataError(f"{run}: no annotations.json (is this a finished generate_masks run?)")
    coco = json.loads(source.annotations.read_text(encoding="utf-8"))
    class_names = [c["name"] for c in coco["categories"]]
    images = {Path(image["file_name"]).with_suffix("").as_posix() for image in coco["images"]}
    named = rejections.images | {image for image, _ in rejections.annotations}
    what = []
    unknown_images = sorted(named - images)
    if unknown_images:
        what.append(f"{len(unknown_images)} images it does not have ({unknown_images[:3]})")
    unknown_classes = sorted({c for _, c in rejections.annotations} - set(class_names))
    if unknown_classes:
        what.append(f"classes it does not have ({unknown_classes[:3]})")
    not_carried = sorted(
        (image, c)
        for image, c in rejections.annotations
        if image in images
        and c in class_names
        and source.has_record(image)  # (an exported run keeps no records)
        and c not in {class_names[i] for i in source.read_record(image).labels}
    )
    if not_carried:
        what.append(f"classes their images do not carry ({not_carried[:3]})")
    if what:
        raise DataError(
            f"the rejections name {' and '.join(what)}; were they saved from {run}'s review "
            "page (report.html)?"
        )
