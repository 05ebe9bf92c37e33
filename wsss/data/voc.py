"""PASCAL VOC 2012 and the SBD-augmented set (SegmentationClassAug, train_aug), read in place.

Layout (``root`` is ``VOCdevkit/VOC2012``)::

    root/
      JPEGImages/<id>.jpg
      SegmentationClass/<id>.png        VOC's masks (palette PNG, 255 on object borders)
      SegmentationClassAug/<id>.png     optional, SBD-augmented masks (grey PNG), 10,582 train_aug
      Annotations/<id>.xml              boxes with class names, for every image
      ImageSets/Segmentation/{train,val}.txt
      ImageSets/SegmentationAug/train_aug.txt   optional (any path given in the config)

A split list has one image id per line, or DeepLab-style lines ``/JPEGImages/<id>.jpg
/SegmentationClassAug/<id>.png``. Image-level labels come from the image's mask (the first of
``masks_dirs`` that has one: values 1..20, 0 and 255 ignored), or from its Annotations XML where
no mask exists. Mask values are VOC's class ids, so evaluation uses the masks unchanged.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
from omegaconf import MISSING
from tqdm import tqdm

from wsss.data.datasets import DATASETS, DatasetSettings
from wsss.data.folder import safe_relative
from wsss.data.images import open_image
from wsss.data.split import LabelledSplit, Sample, read_text_file
from wsss.errors import DataError

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)  # fmt: skip


def _read_ids(list_path: Path) -> list[tuple[str, PurePosixPath | None, str]]:
    """(image id, explicit mask path or None, where) for each line of a split list."""
    if not list_path.is_file():
        raise DataError(f"{list_path}: split list not found")
    entries = []
    lines = read_text_file(list_path, "split list").splitlines()
    for line_no, line in enumerate(lines, start=1):
        parts = line.split()
        if not parts:
            continue
        where = f"line {line_no}"
        if len(parts) > 2:
            raise DataError(f"{list_path}: {where}: expected '<id>' or '<image> <mask>'")
        image = safe_relative(parts[0].lstrip("/"), where, list_path, inside="the VOC root")
        mask = None
        if len(parts) == 2:
            mask = safe_relative(parts[1].lstrip("/"), where, list_path, inside="the VOC root")
        entries.append((image.stem, mask, where))
    if not entries:
        raise DataError(f"{list_path}: no images listed")
    return entries


def labels_from_mask(path: Path, num_classes: int) -> tuple[int, ...]:
    """0-based class indices present in a label PNG (0 background and 255 ignored)."""
    with open_image(path, "mask") as img:
        counts = np.bincount(np.asarray(img).ravel(), minlength=256)
    present = np.flatnonzero(counts[1:255]) + 1
    if present.size and present.max() > num_classes:
        raise DataError(f"{path}: mask value {int(present.max())} is not a VOC class id (1..20)")
    return tuple(int(v) - 1 for v in present)


def labels_from_xml(path: Path, class_names: Sequence[str]) -> tuple[int, ...]:
    """0-based class indices of the objects in a VOC Annotations XML file."""
    try:
        names = {(obj.findtext("name") or "").strip() for obj in ET.parse(path).iter("object")}
    except ET.ParseError as exc:
        raise DataError(f"{path}: invalid annotation XML ({exc})") from exc
    index = {n: i for i, n in enumerate(class_names)}
    unknown = sorted(names - set(index))
    if unknown:
        raise DataError(f"{path}: unknown VOC class name(s) {unknown}")
    return tuple(sorted(index[n] for n in names))


def load_voc_split(
    root: str | os.PathLike,
    split_list: str,
    masks_dirs: Sequence[str] = ("SegmentationClass",),
    images_dir: str = "JPEGImages",
    annotations_dir: str = "Annotations",
) -> LabelledSplit:
    """Read split list ``split_list`` (relative to ``root``) of a VOC 2012 folder.

    Every image must exist; its labels come from its mask or its XML (an error names the id if
    it has neither, or if both give no class). Ground truth is used when every image has a mask.
    """
    root = Path(root).expanduser()
    if not (root / images_dir).is_dir():
        raise DataError(f"{root}: not a VOC 2012 folder (no {images_dir}/); see data/README.md")
    list_path = root / split_list
    samples, seen = [], {}
    for image_id, explicit_mask, where in tqdm(
        _read_ids(list_path), desc=f"read {split_list}", unit="img", leave=False
    ):
        if image_id in seen:
            raise DataError(
                f"{list_path}: {where}: duplicate image id {image_id!r} (also {seen[image_id]})"
            )
        seen[image_id] = where
        image_path = root / images_dir / f"{image_id}.jpg"
        candidates = [root / explicit_mask] if explicit_mask else []
        candidates += [root / d / f"{image_id}.png" for d in masks_dirs]
        mask_path = next((p for p in candidates if p.is_file()), None)
        if mask_path is not None:
            labels = labels_from_mask(mask_path, len(VOC_CLASSES))
        elif (root / annotations_dir / f"{image_id}.xml").is_file():
            labels = labels_from_xml(root / annotations_dir / f"{image_id}.xml", VOC_CLASSES)
        else:
            raise DataError(
                f"{list_path}: {where}: {image_id!r} has neither a mask in {list(masks_dirs)} "
                f"nor {annotations_dir}/{image_id}.xml to take its labels from"
            )
        if not labels:
            raise DataError(f"{list_path}: {where}: {image_id!r} contains no VOC class")
        samples.append(Sample(image_id, f"{image_id}.jpg", image_path, labels, mask_path))
    if not all(s.mask_path is not None for s in samples):
        samples = [Sample(s.image_id, s.file_name, s.image_path, s.labels, None) for s in samples]
    return LabelledSplit(VOC_CLASSES, tuple(samples), root, images_dir)


@DATASETS.register("voc")
@dataclass
class VocDataset(DatasetSettings):
    """PASCAL VOC 2012, or SBD's train_aug with ``masks_dirs`` and a train_aug list
    (``dataset=voc`` / ``dataset=voc_aug``)."""

    name: str = "voc"
    #: the VOC2012 folder (VOCdevkit/VOC2012), see data/README.md
    root: str = MISSING
    #: split name -> split list relative to ``root`` (ids, or DeepLab "image mask" lines)
    splits: dict[str, str] = field(
        default_factory=lambda: {
            "train": "ImageSets/Segmentation/train.txt",
            "eval": "ImageSets/Segmentation/val.txt",
        }
    )
    #: folders searched in order for an image's mask (labels come from it, else from the XML)
    masks_dirs: list[str] = field(default_factory=lambda: ["SegmentationClass"])

    def load(self, split, *, cache_dir=None, allow_unlabelled=False) -> LabelledSplit:
        return load_voc_split(
            Path(self.root).expanduser(), self.split_entry(split), tuple(self.masks_dirs)
        )
