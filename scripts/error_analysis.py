"""Where the pseudo-masks' errors are: which kind, for which class, near the boundary or inside.

For each ``--run`` (a ``generate_masks`` run folder of a dataset with masks), over the images of
``--split``, every pixel the masks get wrong (uncertain 255 pixels of a CRF run are counted as
background, as a trainer that ignores them learns nothing there, and VOC's 255 border pixels are
left out) falls in one of three kinds, counted per true class:

- **spill**: the mask says an object where the truth is background (precision's loss);
- **missed**: the truth is an object, the mask says background (recall's loss);
- **confused**: the truth is an object, the mask says another class.

Each count is split into pixels within ``--band`` pixels of a true class boundary (where any two
truth labels meet) and pixels farther inside, which says whether the errors are edges (a CRF's or
boundary network's job) or whole regions (the maps' job). Shares are of all the pixels the split
holds, so the three kinds add up to the pixel error of the masks.

With ``--boundary-net`` (the ``affinity.pt`` of IRN's walk), the network's own boundary map is
scored against the true class boundaries: precision and recall, within ``--band`` pixels, of
the map cut at 0.3, 0.5 and 0.7.

    python scripts/error_analysis.py --run outputs/bench_voc/masks_seed \\
        --run outputs/bench_voc/masks_preset --split tune \\
        --override dataset=voc --override dataset.root=../shared/voc2012 \\
        --override ++dataset.splits.tune=outputs/bench_voc/lists/tune.txt
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch.nn.functional as F
from _results import save_result  # scripts/, beside this file
from PIL import Image
from scipy import ndimage
from tqdm import tqdm

from wsss.cli.config import compose_config
from wsss.data import load_image
from wsss.engine.run_folder import RunFolder
from wsss.masks import IrnSettings, at_working_size

KINDS = ("spill", "missed", "confused")
#: where the boundary network's map is cut to count its boundaries (it is a probability)
THRESHOLDS = (0.3, 0.5, 0.7)


def boundary_band(truth: np.ndarray, band: int) -> np.ndarray:
    """Pixels within ``band`` pixels (chessboard distance) of a place where two truth labels
    meet (ignore pixels count as a label, so VOC's object outlines are boundaries)."""
    edges = np.zeros(truth.shape, bool)
    across = truth[:, 1:] != truth[:, :-1]  # both pixels of each change are on the boundary
    edges[:, 1:] |= across
    edges[:, :-1] |= across
    down = truth[1:, :] != truth[:-1, :]
    edges[1:, :] |= down
    edges[:-1, :] |= down
    return _within(edges, band)


def _within(mask: np.ndarray, band: int) -> np.ndarray:
    """Pixels within ``band`` pixels (chessboard distance) of ``mask``."""
    if band <= 0:  # binary_dilation repeats until nothing changes at 0 iterations
        return mask
    return ndimage.binary_dilation(mask, structure=np.ones((3, 3), bool), iterations=band)


def error_counts(pred: np.ndarray, truth: np.ndarray, near: np.ndarray, num_labels: int):
    """(kind, class, near?) pixel counts of one image, as an array (3, num_labels, 2), and the
    number of scored pixels. ``pred`` 255 counts as background; truth 255 is not scored."""
    pred = np.where(pred == 255, 0, pred)
    valid = truth != 255
    counts = np.zeros((len(KINDS), num_labels, 2), np.int64)
    kinds = (
        (truth == 0) & (pred > 0),  # spill: charged to the class the mask wrongly says
        (truth > 0) & (pred == 0),
        (truth > 0) & (pred > 0) & (pred != truth),
    )
    for k, wrong in enumerate(kinds):
        wrong &= valid
        owner = pred if k == 0 else truth
        for side, where in ((0, wrong & near), (1, wrong & ~near)):
            counts[k, :, side] += np.bincount(owner[where], minlength=num_labels)[:num_labels]
    return counts, int(valid.sum())


def analyse(folder: RunFolder, split, band: int) -> dict:
    num_labels = len(split.class_names) + 1
    total = np.zeros((len(KINDS), num_labels, 2), np.int64)
    pixels = near_pixels = 0
    for sample in tqdm(split.samples, desc=f"errors of {folder.root.name}", unit="img"):
        truth = split.ground_truth(sample)
        pred = np.asarray(Image.open(folder.mask(sample.image_id)))
        near = boundary_band(truth, band)
        counts, scored = error_counts(pred, truth, near, num_labels)
        total += counts
        pixels += scored
        near_pixels += int((near & (truth != 255)).sum())
    overall = {
        kind: {"share": total[k].sum() / pixels, "near_boundary": total[k, :, 0].sum() / pixels}
        for k, kind in enumerate(KINDS)
    }
    classes = {
        name: {kind: total[k, c + 1].sum() / pixels for k, kind in enumerate(KINDS)}
        for c, name in enumerate(split.class_names)
    }
    return {"images": len(split.samples), "pixels": pixels,
            "band_share_of_pixels": near_pixels / pixels, "overall": overall,
            "classes": classes}  # fmt: skip


def boundary_scores(edge: np.ndarray, truth: np.ndarray, band: int, thresholds) -> np.ndarray:
    """Per threshold, (boundary pixels predicted, those within ``band`` pixels of a true
    boundary, true boundary pixels, those within ``band`` of a predicted one) of one image:
    ``edge`` is the boundary map at the truth's size, the true boundaries are where two truth
    labels meet (VOC's 255 outlines included)."""
    true = boundary_band(truth, 0)
    near_true = _within(true, band)
    rows = []
    for t in thresholds:
        found = edge > t
        near_found = _within(found, band)
        rows.append((found.sum(), (found & near_true).sum(), true.sum(), (true & near_found).sum()))
    return np.array(rows, np.int64)


def boundary_quality(checkpoint: Path, split, max_side: int, band: int, thresholds) -> dict:
    """The boundary network's map (``IrnSettings.boundary`` at the working size, brought to the
    photo's size) against the true class boundaries: precision and recall at each threshold,
    within ``band`` pixels."""
    irn = IrnSettings(checkpoint=str(checkpoint))
    total = np.zeros((len(thresholds), 4), np.int64)
    for sample in tqdm(split.samples, desc="boundary network", unit="img"):
        image = load_image(sample.image_path)
        truth = split.ground_truth(sample, size=image.shape[:2])
        edge = irn.boundary(at_working_size(image, max_side))
        edge = F.interpolate(edge[None, None], truth.shape, mode="bilinear")[0, 0].numpy()
        total += boundary_scores(edge, truth, band, thresholds)
    return {
        f"{t:.2f}": {"precision": int(hit) / max(1, int(found)),
                     "recall": int(seen) / max(1, int(true))}
        for t, (found, hit, true, seen) in zip(thresholds, total, strict=True)
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, action="append", required=True, help="a run folder")
    parser.add_argument("--split", default="tune")
    parser.add_argument("--band", type=int, default=5, help="pixels from a true boundary")
    parser.add_argument(
        "--boundary-net", type=Path, default=None, help="also score this affinity.pt's map"
    )
    parser.add_argument("--override", action="append", default=[], help="Hydra override")
    parser.add_argument("--json", type=Path, default=None, help="(default: results/)")
    args = parser.parse_args()
    config = compose_config("evaluate", args.override)
    split = config.dataset.load(args.split, cache_dir=Path(config.cache_dir))
    runs = {run.name: analyse(RunFolder(run), split, args.band) for run in args.run}

    first = next(iter(runs.values()))
    print(f"\n{first['images']} {args.split!r} images; errors as shares of their "
          f"{first['pixels']} pixels ({first['band_share_of_pixels']:.1%} of them within "
          f"{args.band} px of a true boundary)")  # fmt: skip
    print("| run | spill (near boundary) | missed (near boundary) | confused (near boundary) |")
    print("| --- | --- | --- | --- |")
    for name, r in runs.items():
        cells = [f"{r['overall'][k]['share']:.3f} ({r['overall'][k]['near_boundary']:.3f})"
                 for k in KINDS]  # fmt: skip
        print(f"| {name} | " + " | ".join(cells) + " |")
    print("\nper class (spill / missed / confused, shares of all pixels):")
    print("| class | " + " | ".join(runs) + " |")
    print("| --- |" + " --- |" * len(runs))
    for c in split.class_names:
        cells = ["/".join(f"{r['classes'][c][k]:.4f}" for k in KINDS) for r in runs.values()]
        print(f"| {c} | " + " | ".join(cells) + " |")
    figures = {"split": args.split, "band": args.band, "runs": runs}
    if args.boundary_net:
        max_side = compose_config("generate_masks", args.override).cam.max_side
        scores = boundary_quality(args.boundary_net, split, max_side, args.band, THRESHOLDS)
        print(f"\nthe boundary network's map against the true class boundaries (within "
              f"{args.band} px), by threshold:")  # fmt: skip
        print("| threshold | precision | recall |\n| --- | --- | --- |")
        for t, row in scores.items():
            print(f"| {t} | {row['precision']:.3f} | {row['recall']:.3f} |")
        figures["boundary_network"] = {"checkpoint": str(args.boundary_net), "by_threshold": scores}
    print(f"figures: {save_result('error_analysis', figures, args.json)}")


if __name__ == "__main__":
    main()
