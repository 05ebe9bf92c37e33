"""What every dataset reader returns: the samples of one split and its class names."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from wsss.data.images import load_label_map
from wsss.errors import DataError

#: how every labels file, class list and split list is read, whatever the locale: UTF-8, with or
#: without the byte-order mark spreadsheets write ("CSV UTF-8")
TEXT_ENCODING = "utf-8-sig"


def read_text_file(path: Path, what: str) -> str:
    """The text of ``path`` (a labels file, class list, split list or annotations file), read
    as UTF-8 whatever the locale; a DataError naming the file if it is not UTF-8 text."""
    try:
        return path.read_text(encoding=TEXT_ENCODING)
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{path}: the {what} is not UTF-8 text ({exc}); save it as UTF-8 (a spreadsheet's "
            "'CSV UTF-8')"
        ) from exc


@dataclass(frozen=True)
class Sample:
    """One image of a split.

    ``file_name`` is the file path relative to the images folder (POSIX separators); ``image_id``
    is the same without its suffix and names every output written for the image. ``labels`` are
    0-based class indices, sorted (empty: to be predicted). ``size`` is the (height, width) the
    annotations expect, where the format records it (COCO).
    """

    image_id: str
    file_name: str
    image_path: Path
    labels: tuple[int, ...]
    mask_path: Path | None
    size: tuple[int, int] | None = None


@dataclass(frozen=True)
class LabelledSplit:
    """The samples of one split plus the class names (index i is class id i + 1 in masks).

    Ground truth comes from each sample's ``mask_path`` or, for formats that store instances
    rather than label images (COCO), from ``paint_ground_truth(sample) -> (H, W) uint8``.
    ``category_ids`` are the ids exported to COCO files for the classes (default 1..K); a COCO
    source keeps its own.
    """

    class_names: tuple[str, ...]
    samples: tuple[Sample, ...]
    root: Path
    images_dir: str = "images"
    category_ids: tuple[int, ...] | None = None
    paint_ground_truth: Callable[[Sample], np.ndarray] | None = None

    @property
    def images_root(self) -> Path:
        return self.root / self.images_dir

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def has_masks(self) -> bool:
        if not self.samples:
            return False
        return self.paint_ground_truth is not None or all(
            s.mask_path is not None for s in self.samples
        )

    @property
    def coco_category_ids(self) -> tuple[int, ...]:
        return self.category_ids or tuple(range(1, len(self.class_names) + 1))

    def ground_truth(self, sample: Sample, size: tuple[int, int] | None = None) -> np.ndarray:
        """The (H, W) uint8 ground-truth label map of ``sample`` (0 background, 255 ignored);
        ``size`` (height, width) is checked against it."""
        if self.paint_ground_truth is not None:
            label_map = self.paint_ground_truth(sample)
            if size is not None and label_map.shape != tuple(size):
                raise DataError(
                    f"{sample.image_path}: annotations are for {label_map.shape[1]}x"
                    f"{label_map.shape[0]} (WxH) but the image is {size[1]}x{size[0]}"
                )
            return label_map
        if sample.mask_path is None:
            raise DataError(f"{sample.image_path}: no ground-truth mask")
        label_map = load_label_map(sample.mask_path, size)
        top = len(self.class_names)
        values = np.unique(label_map)
        wrong = [int(v) for v in values if top < v < 255]
        if wrong:
            raise DataError(
                f"{sample.mask_path}: mask values {wrong[:5]} are neither a class (1..{top}), "
                "background (0) nor ignored (255); is it the mask of another dataset, or an RGB "
                "rendering of one?"
            )
        return label_map
