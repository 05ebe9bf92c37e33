"""Build small datasets in the real VOC 2012 (+SBD) and COCO layouts from the synthetic one.

The synthetic dataset's images and exact masks are rewritten as the real formats store them:
JPEGs, VOC palette masks with 255 borders, grey SBD masks, Annotations XML, split lists (plain and
DeepLab style), and a COCO instances file with polygons, RLE, a crowd region and non-contiguous
category ids.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from wsss.data import load_split, save_label_map
from wsss.data.voc import VOC_CLASSES
from wsss.export import mask_to_rle

#: synthetic class k (1-based) becomes this COCO category id
COCO_IDS = (2, 5, 9, 11, 13, 17)


def _with_borders(mask: np.ndarray) -> np.ndarray:
    """VOC's convention: a 255 band where the label changes."""
    edges = ndimage.maximum_filter(mask, 3) != ndimage.minimum_filter(mask, 3)
    return np.where(edges, 255, mask).astype(np.uint8)


def _xml(names: list[str]) -> str:
    objects = "".join(f"<object><name>{n}</name><difficult>0</difficult></object>" for n in names)
    return f"<annotation><filename>x.jpg</filename>{objects}</annotation>"


def make_voc(source: Path, dest: Path) -> Path:
    """A VOC2012 folder: the synthetic train split becomes train / train_aug, eval becomes val.

    Every third train image has no SegmentationClass mask (only an SBD mask, or for one image only
    its XML), as in the real VOC, where most train_aug images exist only in SBD.
    """
    for folder in ("JPEGImages", "SegmentationClass", "SegmentationClassAug", "Annotations"):
        (dest / folder).mkdir(parents=True, exist_ok=True)
    (dest / "ImageSets" / "Segmentation").mkdir(parents=True, exist_ok=True)
    (dest / "ImageSets" / "SegmentationAug").mkdir(parents=True, exist_ok=True)
    lists: dict[str, list[str]] = {"train": [], "val": [], "train_aug": []}
    for split_name, voc_name in (("train", "train"), ("eval", "val")):
        split = load_split(source, f"{split_name}.csv")
        for i, sample in enumerate(split.samples):
            image_id = f"2008_{split_name}{i:04d}"
            Image.open(sample.image_path).convert("RGB").save(
                dest / "JPEGImages" / f"{image_id}.jpg", quality=95
            )
            mask = np.asarray(Image.open(sample.mask_path))
            names = [VOC_CLASSES[c] for c in sample.labels]
            (dest / "Annotations" / f"{image_id}.xml").write_text(_xml(names))
            if voc_name == "val" or i % 3 != 0:
                save_label_map(dest / "SegmentationClass" / f"{image_id}.png", _with_borders(mask))
                lists[voc_name].append(image_id)
            if voc_name == "train" and i != 3:
                Image.fromarray(mask).save(dest / "SegmentationClassAug" / f"{image_id}.png")
            if voc_name == "train":
                lists["train_aug"].append(image_id)
    for name in ("train", "val"):
        path = dest / "ImageSets" / "Segmentation" / f"{name}.txt"
        path.write_text("\n".join(lists[name]) + "\n")
    deeplab = [
        f"/JPEGImages/{i}.jpg /SegmentationClassAug/{i}.png" if i != "2008_train0003" else i
        for i in lists["train_aug"]
    ]
    (dest / "ImageSets" / "SegmentationAug" / "train_aug.txt").write_text("\n".join(deeplab) + "\n")
    return dest


def _polygon(mask: np.ndarray) -> list[float]:
    """The bounding-box polygon of a mask (x, y pairs, COCO's pixel-edge convention)."""
    ys, xs = np.nonzero(mask)
    x0, y0, x1, y1 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
    return [float(v) for v in (x0, y0, x1, y0, x1, y1, x0, y1)]


def make_coco(source: Path, dest: Path) -> Path:
    """``dest/train2017``, ``dest/val2017`` and ``dest/annotations/instances_*2017.json``.

    One instance per class and connected component: RLE for most, a box polygon for triangles
    (class 3, so its ground truth differs from the synthetic mask). In each split, image 0 has
    only crowd regions (so it is left out) and image 1's first region is a crowd.
    """
    (dest / "annotations").mkdir(parents=True, exist_ok=True)
    categories = [{"id": c, "name": f"c{c}", "supercategory": "x"} for c in COCO_IDS]
    for split_name, coco_name in (("train", "train2017"), ("eval", "val2017")):
        (dest / coco_name).mkdir(exist_ok=True)
        split = load_split(source, f"{split_name}.csv")
        images, annotations = [], []
        for i, sample in enumerate(split.samples):
            file_name = f"{i:012d}.jpg"
            image = Image.open(sample.image_path).convert("RGB")
            image.save(dest / coco_name / file_name, quality=95)
            images.append(
                {"id": 1000 + i, "file_name": file_name, "width": image.width,
                 "height": image.height}
            )  # fmt: skip
            mask = np.asarray(Image.open(sample.mask_path))
            first = len(annotations)
            for value in np.unique(mask):
                if value in (0, 255):
                    continue
                components, count = ndimage.label(mask == value)
                for k in range(1, count + 1):
                    part = components == k
                    # image 0: crowd only (left out); image 1: its first region is a crowd
                    crowd = i == 0 or (i == 1 and len(annotations) == first)
                    segmentation = _polygon(part) if value == 3 and not crowd else mask_to_rle(part)
                    annotations.append(
                        {"id": len(annotations) + 1, "image_id": 1000 + i,
                         "category_id": COCO_IDS[value - 1],
                         "segmentation": [segmentation] if isinstance(segmentation, list)
                         else segmentation,
                         "iscrowd": int(crowd), "area": float(part.sum()), "bbox": [0, 0, 1, 1]}
                    )  # fmt: skip
        data = {"images": images, "annotations": annotations, "categories": categories}
        (dest / "annotations" / f"instances_{coco_name}.json").write_text(json.dumps(data))
    return dest
