"""Write a wsss labels CSV (``file,labels``) from label masks, e.g. PASCAL VOC's SegmentationClass.

An image's labels are the classes present in its mask (0 and 255 are not classes). Example, for
VOC 2012 (see data/README.md)::

    python scripts/labels_from_masks.py --root VOCdevkit/VOC2012 \
        --list ImageSets/Segmentation/train.txt --masks SegmentationClass \
        --image-suffix .jpg --out VOCdevkit/VOC2012/train.csv
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from wsss.data import VOC_CLASSES, load_label_map
from wsss.data.folder import read_class_names, write_labels_csv
from wsss.errors import DataError


def labels_from_masks(
    root: Path, ids: list[str], masks_dir: str, image_suffix: str, class_names: tuple[str, ...]
) -> list[tuple[str, list[str]]]:
    rows = []
    for image_id in tqdm(ids, desc="reading masks", unit="mask"):
        mask = load_label_map(root / masks_dir / f"{image_id}.png")
        present = [int(v) for v in np.unique(mask) if v not in (0, 255)]
        if any(v > len(class_names) for v in present):
            raise DataError(f"{root / masks_dir / image_id}.png: class id above {len(class_names)}")
        if present:  # images showing no object cannot be used for image-level training
            rows.append((f"{image_id}{image_suffix}", [class_names[v - 1] for v in present]))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, required=True, help="dataset root")
    parser.add_argument("--list", required=True, help="text file of image ids, relative to root")
    parser.add_argument("--masks", default="SegmentationClass", help="mask folder under root")
    parser.add_argument("--image-suffix", default=".jpg")
    parser.add_argument("--classes", default=None, help="classes.txt (default: the 20 VOC classes)")
    parser.add_argument("--out", type=Path, required=True, help="CSV to write")
    args = parser.parse_args(argv)
    classes = read_class_names(args.classes) if args.classes else VOC_CLASSES
    ids = [
        line.strip() for line in (args.root / args.list).read_text().splitlines() if line.strip()
    ]
    try:
        rows = labels_from_masks(args.root, ids, args.masks, args.image_suffix, classes)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    write_labels_csv(args.out, rows)
    classes_file = args.out.parent / "classes.txt"
    if not classes_file.exists():  # the folder reader takes the class order from it
        classes_file.write_text("\n".join(classes) + "\n")
    print(f"wrote {len(rows)} of {len(ids)} images to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
