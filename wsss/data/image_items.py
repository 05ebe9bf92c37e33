"""Images one at a time, from files or a folder or a split, fitted to a size: what ``explain``
reads (generation reads in batches: :mod:`wsss.data.batches`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from wsss.data.images import load_image
from wsss.data.split import LabelledSplit
from wsss.errors import DataError


@dataclass
class ImageItem:
    """One image on its own: uint8 (H, W, 3), its id, and its labels and mask when known."""

    image_id: str
    image: np.ndarray
    labels: tuple[int, ...] | None = None
    mask: np.ndarray | None = None


IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


def resized(
    image: np.ndarray, long_side: int | None, resample=Image.BILINEAR, shrink_only=False
) -> np.ndarray:
    """``image`` (or a label map, with ``Image.NEAREST``) with its long side ``long_side``
    (with ``shrink_only``, only when it is longer)."""
    if not long_side or (shrink_only and max(image.shape[:2]) <= long_side):
        return image
    h, w = image.shape[:2]
    scale = long_side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(Image.fromarray(image).resize(size, resample))


def image_files(path: Path) -> list[tuple[str, Path]]:
    """(image id, file) for an image file, or for every image under a folder."""
    if path.is_file():
        return [(path.stem, path)]
    if not path.is_dir():
        raise DataError(f"{path}: no such image or folder")
    files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataError(f"{path}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) found")
    return [(p.relative_to(path).with_suffix("").as_posix(), p) for p in files]


def items_from_files(
    files: Sequence[tuple[str, Path]], long_side: int | None = None, max_side: int | None = None
):
    """Items of image files (no labels, no masks), read as they are consumed, resized
    to ``long_side``, or else shrunk to at most ``max_side`` (the maps' working resolution:
    measurements on them then stay bounded on large photos)."""
    for image_id, path in files:
        yield ImageItem(image_id, _fitted(load_image(path), long_side, max_side))


def items_from_split(
    split: LabelledSplit, long_side: int | None = None, max_side: int | None = None
):
    """Items of a split's images with their labels and, when it has them, masks
    (sized as in :func:`items_from_files`)."""
    for sample in split.samples:
        image = load_image(sample.image_path)
        mask = split.ground_truth(sample, image.shape[:2]) if split.has_masks else None
        image = _fitted(image, long_side, max_side)
        if mask is not None:  # masks follow the image, by nearest neighbour
            mask = _fitted(mask, long_side, max_side, Image.NEAREST)
        yield ImageItem(sample.image_id, image, sample.labels, mask)


def _fitted(image, long_side, max_side, resample=Image.BILINEAR) -> np.ndarray:
    if long_side:
        return resized(image, long_side, resample)
    return resized(image, max_side, resample, shrink_only=True)
