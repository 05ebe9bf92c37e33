"""Grid search of dense-CRF parameters on a split (tune on ``train``, report on ``eval``).

Maps are computed once with the demo classifier (or the one the overrides pick); each CRF
setting then refines every image, in ``--workers`` processes, and is scored by mIoU (uncertain
pixels counted as background), mIoU on confident pixels, and the share of uncertain pixels.

    python scripts/tune_crf.py --mode label --split train --limit 300
    python scripts/tune_crf.py --mode soft --split train --limit 300
    python scripts/tune_crf.py --mode label --split eval --grid default   # just the defaults
"""

from __future__ import annotations

import argparse
import itertools
from dataclasses import replace

from hydra import compose, initialize_config_dir
from tqdm import tqdm

from wsss import _cli
from wsss.config import config_dir, register_configs
from wsss.crf import ordered_map, refine_or_fail
from wsss.evaluation import ConfusionMatrix
from wsss.generate_masks import generate_settings
from wsss.pipeline import image_maps, make_cam_method

GRIDS = {
    "label": {
        "bilateral_sxy": [20.0, 50.0, 80.0],
        "bilateral_srgb": [5.0, 13.0],
        "bilateral_compat": [4.0, 10.0],
        "high_threshold": [0.3, 0.4, 0.5],
        "low_threshold": [0.05, 0.15],
    },
    "soft": {
        "bilateral_sxy": [20.0, 50.0, 80.0],
        "bilateral_srgb": [5.0, 13.0],
        "bilateral_compat": [4.0, 10.0],
        "alpha": [2.0, 4.0, 8.0, 16.0],
    },
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=("label", "soft"), default="label")
    parser.add_argument("--split", default="train")
    parser.add_argument("--limit", type=int, default=300)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--grid", choices=("full", "default"), default="full")
    parser.add_argument("--top", type=int, default=10, help="rows to print")
    parser.add_argument("--override", action="append", default=[], help="Hydra override")
    args = parser.parse_args()

    register_configs()
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose(config_name="generate_masks", overrides=["crf=dense", *args.override])
    device = _cli.resolve_device(cfg.device)
    split = _cli.load_split(cfg, args.split)
    split = replace(split, samples=split.samples[: args.limit])
    classifier, checkpoint, _ = _cli.classifier_for(cfg, device)
    settings = generate_settings(cfg)
    base = replace(settings.crf, mode=args.mode)
    method = make_cam_method(classifier.model.eval(), settings)
    records = list(
        tqdm(
            image_maps(split.samples, method, settings, device),
            total=len(split),
            desc="maps",
            unit="img",
        )
    )
    truths = [split.ground_truth(s) for s in split.samples]
    num_labels = len(split.class_names) + 1

    raw = ConfusionMatrix(num_labels)
    for record, truth in zip(records, truths, strict=True):
        raw.update(record.label_map, truth)
    print(f"\n{settings.method} maps of {len(split)} {args.split} images, checkpoint {checkpoint}")
    print(f"no CRF (threshold {settings.bg_threshold}): mIoU {raw.miou:.4f}\n")

    grid = GRIDS[args.mode] if args.grid == "full" else {}
    candidates = [
        replace(base, **dict(zip(grid, values, strict=True)))
        for values in itertools.product(*grid.values())
    ] or [base]
    rows = []
    for crf in tqdm(candidates, desc=f"{args.mode} grid", unit="setting"):
        confusion = ConfusionMatrix(num_labels)
        jobs = ((r.image, r.cams, split.samples[r.index].labels, crf) for r in records)
        for refined, truth in zip(
            ordered_map(refine_or_fail, jobs, args.workers), truths, strict=True
        ):
            confusion.update(refined, truth)
        rows.append((confusion.miou, confusion.miou_confident, confusion.uncertain_fraction, crf))
    rows.sort(key=lambda r: -r[0])
    names = list(grid) or ["(defaults)"]
    print("| mIoU | mIoU confident | uncertain | " + " | ".join(names) + " |")
    print("|" + " --- |" * (3 + len(names)))
    for miou, confident, uncertain, crf in rows[: args.top]:
        values = [str(getattr(crf, n)) for n in grid] or [""]
        print(
            f"| {miou:.4f} | {confident:.4f} | {100 * uncertain:.1f}% | "
            + " | ".join(values)
            + " |"
        )


if __name__ == "__main__":
    main()
