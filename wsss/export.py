"""Exports that segmentation trainers read: COCO annotations (compressed RLE) and overlays.

Label PNGs are written by :func:`wsss.data.images.save_label_map` (VOC palette, raw values are
class ids, 255 uncertain).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from wsss.io import atomic_path, write_json

# --------------------------------------------------------------------------------------------
# COCO


def mask_to_rle(mask: np.ndarray) -> dict:
    """Encode a binary (H, W) mask as COCO compressed RLE with ``counts`` as str (JSON-ready)."""
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def coco_annotations(
    label_map: np.ndarray,
    cams: np.ndarray,
    classes: Sequence[int],
    image_id: int,
    category_ids: Sequence[int] | None = None,
    probabilities: Sequence[float] | None = None,
) -> list[dict]:
    """One COCO annotation per class present in ``label_map`` (ids are filled in later).

    ``cams``: the image's normalised maps (N, H, W) for ``classes`` (0-based). The annotation's
    ``score`` is the classifier's probability for the class when the classifier chose the labels
    (``probabilities``), otherwise the mean map value inside the mask. ``category_id`` is
    ``category_ids[class]`` (default: class index + 1).
    """
    from pycocotools import mask as mask_utils

    annotations = []
    for row, cls in enumerate(classes):
        mask = label_map == cls + 1
        if not mask.any():
            continue
        rle = mask_to_rle(mask)
        annotations.append(
            {
                "image_id": image_id,
                "category_id": int(category_ids[cls] if category_ids else cls + 1),
                "segmentation": rle,
                "area": float(mask_utils.area(rle)),
                "bbox": [float(v) for v in mask_utils.toBbox(rle)],
                "iscrowd": 0,
                "score": round(
                    float(probabilities[row] if probabilities else cams[row][mask].mean()), 6
                ),
            }
        )
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


# --------------------------------------------------------------------------------------------
# Pictures


def _palette_rgb() -> np.ndarray:
    from wsss.data.images import voc_palette

    return np.array(voc_palette(), dtype=np.uint8).reshape(256, 3)


def colorize_label_map(label_map: np.ndarray) -> np.ndarray:
    """(H, W) label ids -> (H, W, 3) uint8 VOC colours."""
    return _palette_rgb()[label_map]


def heatmap(values: np.ndarray) -> np.ndarray:
    """(H, W) values in [0, 1] -> (H, W, 3) uint8 with matplotlib's 'jet' colour map."""
    import matplotlib

    rgba = matplotlib.colormaps["jet"](np.clip(values, 0, 1))
    return (rgba[..., :3] * 255).round().astype(np.uint8)


def map_over_image(image: np.ndarray, values: np.ndarray) -> np.ndarray:
    """An (H, W) map in [0, 1] blended half and half over an (H, W, 3) uint8 image."""
    return (0.5 * image + 0.5 * heatmap(values)).astype(np.uint8)


def overlay_panel(
    image: np.ndarray, label_map: np.ndarray, cams: np.ndarray, title: str = ""
) -> np.ndarray:
    """Side by side: the image, the mask over it, and the strongest class map over it."""
    mask_rgb = colorize_label_map(label_map)
    shown = (label_map > 0)[..., None]
    with_mask = np.where(shown, 0.45 * image + 0.55 * mask_rgb, image).astype(np.uint8)
    strongest = cams.max(axis=0) if len(cams) else np.zeros(label_map.shape, np.float32)
    with_map = map_over_image(image, strongest)
    gap = np.full((image.shape[0], 4, 3), 255, np.uint8)
    panel = np.concatenate([image, gap, with_mask, gap, with_map], axis=1)
    if not title:
        return panel
    header = Image.new("RGB", (panel.shape[1], 14), (255, 255, 255))
    ImageDraw.Draw(header).text((2, 1), title, fill=(0, 0, 0))
    return np.concatenate([np.asarray(header), panel], axis=0)


def contact_sheet(panels: list[np.ndarray], columns: int = 2) -> np.ndarray:
    """Tile panels (padded to a common size) into one picture."""
    if not panels:
        raise ValueError("no panels to tile")
    h = max(p.shape[0] for p in panels)
    w = max(p.shape[1] for p in panels)
    rows = -(-len(panels) // columns)
    sheet = np.full((rows * (h + 6), columns * (w + 6), 3), 255, np.uint8)
    for i, p in enumerate(panels):
        r, c = divmod(i, columns)
        sheet[r * (h + 6) : r * (h + 6) + p.shape[0], c * (w + 6) : c * (w + 6) + p.shape[1]] = p
    return sheet


def save_rgb(path: str | Path, array: np.ndarray) -> None:
    """Write an (H, W, 3) uint8 array as a PNG, atomically."""
    with atomic_path(path) as tmp:
        Image.fromarray(array).save(tmp, format="PNG")
