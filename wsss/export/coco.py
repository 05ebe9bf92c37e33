"""COCO annotations that instance and semantic trainers read: compressed RLE or polygons.

Label PNGs are written by :func:`wsss.data.images.save_label_map` (VOC palette, raw values are
class ids, 255 uncertain).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from wsss.export.settings import INSTANCE_MODES
from wsss.io import write_json


def mask_to_rle(mask: np.ndarray) -> dict:
    """Encode a binary (H, W) mask as COCO compressed RLE with ``counts`` as str (JSON-ready)."""
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def mask_to_polygons(mask: np.ndarray, tolerance: float = 0.01) -> list[list[float]]:
    """Outline a binary (H, W) mask as COCO polygons ``[[x1, y1, x2, y2, ...], ...]``.

    One polygon per 4-connected region (pixels that touch only at a corner are two regions: an
    outline cannot pass through a corner), each with at least 3 points, in COCO's pixel-edge
    coordinates (pixel (x, y) covers [x, x + 1] x [y, y + 1]): the outline runs along pixel
    edges, with corners cut by half a pixel, so it rasterises back to the same pixels. Polygons
    cannot carry holes (COCO unions them), so holes are filled. ``tolerance`` (pixels) simplifies
    the outline; the default only drops collinear points.
    """
    from scipy import ndimage
    from skimage.measure import approximate_polygon, find_contours

    polygons = []
    components, count = ndimage.label(mask)  # 4-connected, as find_contours outlines them
    for index in range(1, count + 1):
        filled = ndimage.binary_fill_holes(components == index)
        # Pad so the outline closes at the border; level 0.5 runs between pixel centres.
        contours = find_contours(np.pad(filled, 1).astype(np.float32), 0.5)
        outline = max(contours, key=len)
        outline = approximate_polygon(outline, tolerance) if tolerance > 0 else outline
        if len(outline) > 1 and np.array_equal(outline[0], outline[-1]):
            outline = outline[:-1]
        if len(outline) < 3:  # a one-pixel sliver: its pixel square
            ys, xs = np.nonzero(filled)
            x0, y0, x1, y1 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
            polygons.append([float(v) for v in (x0, y0, x1, y0, x1, y1, x0, y1)])
            continue
        # (row, col) of the padded array, on pixel centres -> (x, y) on pixel edges
        xy = outline[:, ::-1] - 1 + 0.5
        polygons.append([round(float(v), 2) for v in xy.ravel()])
    return polygons


def coco_annotations(
    label_map: np.ndarray,
    cams: np.ndarray,
    classes: Sequence[int],
    image_id: int,
    category_ids: Sequence[int] | None = None,
    probabilities: Sequence[float] | None = None,
    polygons: bool = False,
    instances: str = "class",
    quality: dict[int, float] | None = None,
) -> list[dict]:
    """COCO annotations for the classes in ``label_map`` (annotation ids are filled in later).

    ``instances="class"``: one annotation per class present (semantic); ``"component"``: one
    per 8-connected region of a class (an instance per blob, for instance trainers).
    ``polygons``: segmentation as polygons (holes filled) instead of compressed RLE; area and
    bbox are those of the segmentation as written. ``cams``: the image's normalised maps
    (N, H, W) for ``classes`` (0-based). ``score`` is the classifier's probability for the class
    when the classifier chose the labels (``probabilities``), otherwise the mean map value inside
    the region. ``category_id`` is ``category_ids[class]`` (default: class index + 1).
    ``quality``: class index -> the estimated quality written into its annotations.
    """
    from pycocotools import mask as mask_utils
    from scipy import ndimage

    if instances not in INSTANCE_MODES:
        raise ValueError(f"instances must be one of {INSTANCE_MODES}, got {instances!r}")
    height, width = label_map.shape
    annotations = []
    for row, cls in enumerate(classes):
        mask = label_map == cls + 1
        if not mask.any():
            continue
        regions = [mask]
        if instances == "component":
            components, count = ndimage.label(mask, structure=np.ones((3, 3)))
            regions = [components == i for i in range(1, count + 1)]
        for region in regions:
            if polygons:
                segmentation = mask_to_polygons(region)
                rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
            else:
                segmentation = rle = mask_to_rle(region)
            if probabilities:
                score = probabilities[row]
            else:  # in float64, so a mean over millions of pixels keeps its 6 decimals
                score = cams[row][region].mean(dtype=np.float64)
            annotations.append(
                {
                    "image_id": image_id,
                    "category_id": int(category_ids[cls] if category_ids else cls + 1),
                    "segmentation": segmentation,
                    "area": float(mask_utils.area(rle)),
                    "bbox": [float(v) for v in mask_utils.toBbox(rle)],
                    "iscrowd": 0,
                    "score": round(float(score), 6),
                }
            )
            if quality is not None:
                annotations[-1]["quality"] = round(quality[cls], 4)
    return annotations


def coco_categories(
    class_names: Sequence[str], category_ids: Sequence[int] | None = None
) -> list[dict]:
    ids = category_ids or range(1, len(class_names) + 1)
    return [
        {"id": int(i), "name": n, "supercategory": "object"}
        for i, n in zip(ids, class_names, strict=True)
    ]


def write_coco(
    path: str | os.PathLike,
    images: list[dict],
    annotations: list[dict],
    class_names: Sequence[str],
    description: str = "wsss pseudo-masks",
    category_ids: Sequence[int] | None = None,
) -> None:
    """Write a COCO instances file, numbering annotations 1..N in the order given."""
    numbered = [{**ann, "id": i} for i, ann in enumerate(annotations, start=1)]
    write_json(
        path,
        {
            "info": {"description": description},
            "images": images,
            "annotations": numbered,
            "categories": coco_categories(class_names, category_ids),
        },
    )
