"""Fit and measure the quality estimate of wsss.masks.quality on a run with ground truth.

Reads a ``generate_masks`` run (``export.quality`` on: its records hold every region's
features) of a dataset with masks. Two least-squares fits over the ``--tune`` images: the region
weights (each region's true IoU on its features), then the image weights (each image's true IoU
on :data:`~wsss.masks.quality.IMAGE_FEATURES`, from its regions estimated with the first fit).
Everything is reported on the ``--report`` images, which the fits never see:

- the Spearman correlation between the image estimate and the image's true IoU (mean over
  background and its classes), and the same for the existing ``score`` (the mean map value in
  the mask) alone;
- the mIoU of the kept images when the worst 10%, 20% and 30% by the estimate are dropped,
  against dropping as many by ``score`` and at random (mean of 20 draws).

It prints the weights in the form of ``wsss.masks.quality.WEIGHTS`` and ``IMAGE_WEIGHTS``.
With ``--tune`` and ``--report`` the same split (a folder's run, to see how VOC's weights
transfer), the fit is in-sample and labelled so, and the drops follow wsss's weights. For VOC
(the lists are scripts/bench_voc.py's)::

    python scripts/fit_quality.py --run outputs/bench_voc/masks_preset \\
        --override dataset=voc --override dataset.root=../shared/voc2012 \\
        --override ++dataset.splits.tune=outputs/bench_voc/lists/tune.txt \\
        --override ++dataset.splits.report=outputs/bench_voc/lists/report.txt
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from _results import save_result  # scripts/, beside this file
from scipy.stats import spearmanr
from tqdm import tqdm

from wsss.cli.config import compose_config
from wsss.data.images import load_label_map
from wsss.engine.run_folder import ImageRecord, RunFolder
from wsss.masks.quality import (
    FEATURES,
    IMAGE_FEATURES,
    IMAGE_WEIGHTS,
    WEIGHTS,
    estimate,
    fit_weights,
    image_estimate,
    image_features,
)
from wsss.masks.threshold import IGNORE
from wsss.metrics import ConfusionMatrix


def iou(prediction: np.ndarray, truth: np.ndarray, value: int) -> float:
    valid = truth != IGNORE
    p, t = (prediction == value) & valid, (truth == value) & valid
    union = (p | t).sum()
    return float((p & t).sum() / union) if union else 1.0


def collect(folder: RunFolder, split) -> list[dict]:
    """Per image: its regions' features and true IoUs, its true IoU, and its confusion counts."""
    images = []
    for sample in tqdm(split.samples, desc=f"read {len(split)} records", leave=False):
        record = folder.read_record(sample.image_id)
        if (
            not isinstance(record, ImageRecord)
            or not record.quality
            or not record.quality["classes"]
        ):
            continue  # no record yet, or no estimate: no class
        truth = split.ground_truth(sample)
        prediction = load_label_map(folder.mask(sample.image_id), truth.shape)
        regions = []
        for name, features in record.quality["classes"].items():
            value = split.class_names.index(name) + 1
            regions.append({"features": features, "iou": iou(prediction, truth, value)})
        ious = [iou(prediction, truth, 0)] + [r["iou"] for r in regions]
        scores = [a["score"] for a in record.annotations]
        images.append({
            "regions": regions,
            "iou": float(np.mean(ious)),
            "score": float(np.mean(scores)) if scores else 0.0,
            "counts": record.scores["masks"],
        })  # fmt: skip
    return images


def image_rows(images: list[dict], weights, image_weights=None) -> list[dict]:
    """Per image: its :data:`IMAGE_FEATURES` from its regions estimated with ``weights``, its true
    IoU and, with ``image_weights``, its estimate."""
    rows = []
    for image in images:
        regions = [{**r["features"], "estimate": estimate(r["features"], weights)}
                   for r in image["regions"]]  # fmt: skip
        row = {"features": image_features(regions), "iou": image["iou"]}
        if image_weights is not None:
            row["estimate"] = image_estimate(regions, image_weights)
        rows.append(row)
    return rows


def kept_miou(images: list[dict], order: np.ndarray, drop: float, num_labels: int) -> float:
    """mIoU of the images left once the first ``drop`` share of ``order`` is dropped."""
    matrix = ConfusionMatrix(num_labels)
    for i in order[int(round(drop * len(order))) :]:
        matrix.add_sparse(images[i]["counts"])
    return matrix.miou


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, required=True, help="a run with export.quality")
    parser.add_argument("--tune", default="tune")
    parser.add_argument("--report", default="report")
    parser.add_argument("--override", action="append", default=[], help="Hydra override")
    parser.add_argument("--json", type=Path, default=None, help="(default: results/)")
    args = parser.parse_args()
    config = compose_config("evaluate", args.override)
    folder = RunFolder(args.run)
    cache = Path(config.cache_dir)
    tune = collect(folder, config.dataset.load(args.tune, cache_dir=cache))
    split = config.dataset.load(args.report, cache_dir=cache)
    report = collect(folder, split)
    weights = fit_weights([r for image in tune for r in image["regions"]])
    image_weights = fit_weights(image_rows(tune, weights), IMAGE_FEATURES)
    num_labels = len(split.class_names) + 1

    truth = np.array([image["iou"] for image in report])
    fitted = image_rows(report, weights, image_weights)
    estimated = np.array([row["estimate"] for row in fitted])
    shipped = np.array([row["estimate"] for row in image_rows(report, WEIGHTS, IMAGE_WEIGHTS)])
    mean_of_regions = np.array([row["features"]["estimate_mean"] for row in fitted])
    score = np.array([image["score"] for image in report])
    regions = [r for image in report for r in image["regions"]]
    region_est = [estimate(r["features"], weights) for r in regions]
    print(
        f"\nfitted on {len(tune)} {args.tune!r} images, reported on {len(report)} {args.report!r}"
    )
    print(f"WEIGHTS = {weights}  # intercept, then {', '.join(FEATURES)}")
    print(f"IMAGE_WEIGHTS = {image_weights}  # intercept, then {', '.join(IMAGE_FEATURES)}")
    print("\n| signal | Spearman with the image's IoU (report) |")
    print("| --- | --- |")
    fitted_here = "fitted here" if args.tune != args.report else "fitted here, in-sample: no result"
    rho = {
        "fitted": spearmanr(estimated, truth)[0],
        "shipped": spearmanr(shipped, truth)[0],
        "mean_of_regions": spearmanr(mean_of_regions, truth)[0],
        "score": spearmanr(score, truth)[0],
        "per_annotation": spearmanr(region_est, [r["iou"] for r in regions])[0],
    }
    print(f"| quality estimate ({fitted_here}) | {rho['fitted']:.3f} |")
    print(f"| quality estimate (wsss's WEIGHTS, IMAGE_WEIGHTS) | {rho['shipped']:.3f} |")
    print(f"| mean of the regions' estimates ({fitted_here}) | {rho['mean_of_regions']:.3f} |")
    print(f"| score alone (mean map value in the masks) | {rho['score']:.3f} |")
    print(f"(per annotation: {rho['per_annotation']:.3f})")
    figures = {
        "tune_images": len(tune), "report_images": len(report), "weights": list(weights),
        "image_weights": list(image_weights), "spearman": rho, "kept_miou": {},
    }  # fmt: skip
    rng = np.random.default_rng(0)
    # in-sample, the fit would rank its own images: the drops follow wsss's weights instead
    ranked, by = (shipped, "wsss's weights") if args.tune == args.report else (estimated, "fit")
    figures["kept_miou"]["ranked_by"] = by
    print(f"\n| dropped | by the estimate ({by}) | by score | at random (20 draws) |")
    print("| --- | --- | --- | --- |")
    everything = kept_miou(report, np.arange(len(report)), 0.0, num_labels)
    for drop in (0.1, 0.2, 0.3):
        by_estimate = kept_miou(report, np.argsort(ranked), drop, num_labels)
        by_score = kept_miou(report, np.argsort(score), drop, num_labels)
        random = np.mean([
            kept_miou(report, rng.permutation(len(report)), drop, num_labels) for _ in range(20)
        ])  # fmt: skip
        print(f"| worst {drop:.0%} | {by_estimate:.4f} | {by_score:.4f} | {random:.4f} |")
        figures["kept_miou"][f"drop {drop}"] = {"estimate": by_estimate, "score": by_score,
                                                "random": random}  # fmt: skip
    print(f"(all {len(report)} images: {everything:.4f})")
    figures["kept_miou"]["all"] = everything
    name = args.json.stem if args.json else "fit_quality"
    print(f"figures: {save_result(name, figures, args.json)}")


if __name__ == "__main__":
    main()
