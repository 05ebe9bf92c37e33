"""MS-COCO 2014/2017 read in place: an images folder plus an instances JSON file.

Image-level labels are the categories with at least one non-crowd instance in the image; images
without one are left out (they carry no class to localise) and counted in the log. Ground-truth
semantic maps for evaluation are painted from the instance masks: instances in decreasing area
(so a small object on a large one stays visible), then crowd regions not covered by an instance
set to 255 (ignored). Classes keep COCO's category ids and names for export; label PNG values are
the contiguous indices 1..K in the order of the category ids.
"""

from __future__ import annotations

import json
import logging
import os
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from omegaconf import MISSING

from wsss.data.datasets import DATASETS, DatasetSettings
from wsss.data.folder import safe_relative
from wsss.data.split import LabelledSplit, Sample, read_text_file
from wsss.errors import ConfigError, DataError

log = logging.getLogger(__name__)


def _segmentation_rle(segmentation, height: int, width: int) -> dict:
    """Any COCO segmentation (polygons, uncompressed or compressed RLE) as compressed RLE."""
    from pycocotools import mask as mask_utils

    if isinstance(segmentation, list):  # polygons, possibly in several parts
        return mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    if isinstance(segmentation.get("counts"), list):  # uncompressed RLE
        return mask_utils.frPyObjects(segmentation, height, width)
    return segmentation


def paint_instances(
    instances: Iterable[tuple[int, bool, object]], height: int, width: int, where: object
) -> np.ndarray:
    """A (height, width) uint8 label map from ``(label value, is crowd, segmentation)`` triples:
    instances in decreasing area (a small object on a large one stays visible), then crowd
    regions not covered by an instance set to 255. ``where`` names the source in errors."""
    from pycocotools import mask as mask_utils

    label_map = np.zeros((height, width), np.uint8)
    crowd = np.zeros((height, width), bool)
    painted = []
    for value, is_crowd, segmentation in instances:
        try:
            mask = mask_utils.decode(_segmentation_rle(segmentation, height, width)).astype(bool)
        except (TypeError, ValueError, KeyError) as exc:
            raise DataError(f"{where}: unreadable segmentation ({exc})") from exc
        if is_crowd:
            crowd |= mask
        else:
            painted.append((int(mask.sum()), value, mask))
    covered = np.zeros((height, width), bool)
    for _, value, mask in sorted(painted, key=lambda item: -item[0]):
        label_map[mask] = value
        covered |= mask
    label_map[crowd & ~covered] = 255
    return label_map


class CocoGroundTruth:
    """Paints a sample's semantic label map from its instances (picklable, for data workers)."""

    def __init__(self, instances: dict[str, list[tuple[int, bool, object]]], sizes: dict):
        #: image id -> [(class index + 1, is crowd, segmentation)], sizes: id -> (height, width)
        self.instances = instances
        self.sizes = sizes

    def __call__(self, sample: Sample) -> np.ndarray:
        height, width = self.sizes[sample.image_id]
        instances = self.instances.get(sample.image_id, [])
        return paint_instances(instances, height, width, sample.image_path)


def load_coco_split(images: str | os.PathLike, annotations: str | os.PathLike) -> LabelledSplit:
    """Read a COCO instances file whose ``file_name`` entries live in folder ``images``."""
    images, annotations = Path(images).expanduser(), Path(annotations).expanduser()
    if not images.is_dir():
        raise DataError(f"{images}: COCO images folder not found")
    data = _read_instances_file(annotations)
    categories = sorted(data["categories"], key=lambda c: c["id"])
    if not categories:
        raise DataError(f"{annotations}: no categories")
    if len(categories) > 254:
        raise DataError(f"{annotations}: {len(categories)} categories do not fit a uint8 label map")
    by_coco_id = _index_images(data["images"], images, annotations)
    instances, labels = _group_annotations(data["annotations"], by_coco_id, categories, annotations)

    samples, sizes = [], {}
    for image_id, rel, height, width in by_coco_id.values():
        if not labels[image_id]:
            continue
        sizes[image_id] = (height, width)
        sorted_labels = tuple(sorted(labels[image_id]))
        samples.append(
            Sample(image_id, rel.as_posix(), images / rel, sorted_labels, None, (height, width))
        )
    dropped = len(by_coco_id) - len(samples)
    if dropped:
        log.info("%s: %d of %d images have no non-crowd instance and are left out",
                 annotations, dropped, len(by_coco_id))  # fmt: skip
    if not samples:
        raise DataError(f"{annotations}: no image has a non-crowd instance")
    return LabelledSplit(
        tuple(c["name"] for c in categories),
        tuple(samples),
        images,
        images_dir=".",
        category_ids=tuple(c["id"] for c in categories),
        paint_ground_truth=CocoGroundTruth(dict(instances), sizes),
    )


def _read_instances_file(annotations: Path) -> dict:
    if not annotations.is_file():
        raise DataError(f"{annotations}: COCO annotations file not found")
    try:
        data = json.loads(read_text_file(annotations, "annotations file"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{annotations}: invalid JSON ({exc})") from exc
    missing = [k for k in ("images", "annotations", "categories") if k not in data]
    if missing:
        raise DataError(f"{annotations}: not a COCO instances file (no {missing})")
    return data


def _index_images(entries: list[dict], images: Path, annotations: Path) -> dict:
    """COCO image id -> (image id, path relative to ``images``, height, width); a path that
    leaves ``images``, a repeated id or two ids for one file are errors."""
    by_coco_id = {}
    for image in entries:
        rel = safe_relative(
            str(image.get("file_name", "")), f"image {image.get('id')}", annotations,
            inside=str(images),
        )  # fmt: skip
        if image["id"] in by_coco_id:
            raise DataError(f"{annotations}: duplicate image id {image['id']}")
        by_coco_id[image["id"]] = (str(rel.with_suffix("")), rel, int(image["height"]),
                                   int(image["width"]))  # fmt: skip
    seen_ids = {}
    for coco_id, (image_id, rel, _, _) in by_coco_id.items():
        if image_id in seen_ids:
            raise DataError(
                f"{annotations}: images {seen_ids[image_id]} and {coco_id} share file {rel}"
            )
        seen_ids[image_id] = coco_id
    return by_coco_id


def _group_annotations(
    entries: list[dict], by_coco_id: dict, categories: list[dict], annotations: Path
) -> tuple[dict[str, list], dict[str, set[int]]]:
    """Per image id: its instances (label, crowd, segmentation) and its non-crowd classes."""
    category_index = {c["id"]: i for i, c in enumerate(categories)}
    instances: dict[str, list] = defaultdict(list)
    labels: dict[str, set[int]] = defaultdict(set)
    for ann in entries:
        if ann.get("image_id") not in by_coco_id:
            raise DataError(
                f"{annotations}: annotation {ann.get('id')} names unknown image "
                f"{ann.get('image_id')}"
            )
        if ann.get("category_id") not in category_index:
            raise DataError(
                f"{annotations}: annotation {ann.get('id')} has unknown category "
                f"{ann.get('category_id')}"
            )
        image_id = by_coco_id[ann["image_id"]][0]
        cls = category_index[ann["category_id"]]
        crowd = bool(ann.get("iscrowd", 0))
        instances[image_id].append((cls + 1, crowd, ann["segmentation"]))
        if not crowd:
            labels[image_id].add(cls)
    return instances, labels


@dataclass
class CocoSplit:
    """One split of a COCO dataset: both paths relative to the dataset's ``root`` (or
    absolute)."""

    images: str = MISSING
    annotations: str = MISSING


@DATASETS.register("coco")
@dataclass
class CocoDataset(DatasetSettings):
    """MS-COCO, or any COCO-format instances file (``dataset=coco``)."""

    name: str = "coco"
    #: the COCO folder; split paths are relative to it
    root: str | None = None
    #: one images folder + instances file used for every split (overrides ``splits``)
    images: str | None = None
    annotations: str | None = None
    splits: dict[str, CocoSplit] = field(
        default_factory=lambda: {
            "train": CocoSplit("train2017", "annotations/instances_train2017.json"),
            "eval": CocoSplit("val2017", "annotations/instances_val2017.json"),
        }
    )

    def load(self, split, *, cache_dir=None, allow_unlabelled=False) -> LabelledSplit:
        if self.images or self.annotations:
            if not (self.images and self.annotations):
                raise ConfigError("dataset.images and dataset.annotations must be given together")
            return load_coco_split(self.images, self.annotations)
        if not self.root:
            raise ConfigError(
                "dataset=coco needs dataset.root=<COCO folder> or dataset.images=<folder> "
                "dataset.annotations=<instances json>"
            )
        root = Path(self.root).expanduser()
        paths = self.split_entry(split)
        return load_coco_split(root / paths.images, root / paths.annotations)
