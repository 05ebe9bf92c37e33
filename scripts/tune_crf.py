"""Grid search of dense-CRF parameters on a split (tune on ``train``, report on ``eval``).

Maps are computed once with the demo classifier (or the one the overrides pick); each CRF
setting then refines every image, in ``--workers`` processes, and is scored by mIoU (uncertain
pixels counted as background), mIoU on confident pixels, and the share of uncertain pixels.

    python scripts/tune_crf.py --mode label --split train --limit 300
    python scripts/tune_crf.py --mode soft --split train --limit 300
    python scripts/tune_crf.py --mode label --split eval --grid default   # just the defaults
    python scripts/tune_crf.py --set bilateral_sxy=50,80 --set high_threshold=0.3,0.4  # a grid
"""

from __future__ import annotations

import argparse
import itertools
from dataclasses import replace
from pathlib import Path

from _results import save_result  # scripts/, beside this file
from tqdm import tqdm

from wsss.cli.common import classifier_for, load_split
from wsss.cli.config import compose_config
from wsss.data.batches import same_size_batches
from wsss.data.screen import BadImages
from wsss.devices import resolve_device
from wsss.masks import MaskPredictor, crf_label_maps
from wsss.masks.predictor import label_map_at
from wsss.metrics import ConfusionMatrix

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


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=("label", "soft"), default="label")
    parser.add_argument("--split", default="train")
    parser.add_argument("--limit", type=int, default=300)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--grid", choices=("full", "default"), default="full")
    parser.add_argument("--top", type=int, default=10, help="rows to print")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=V1,V2",
        help="grid over these values of a crf key (replaces --grid)",
    )
    parser.add_argument("--override", action="append", default=[], help="Hydra override")
    parser.add_argument("--json", type=Path, default=None, help="(default: results/)")
    return parser.parse_args()


def candidates(base, args) -> tuple[dict, list]:
    """The grid (key -> values: ``--set``'s, else ``--grid``'s) and its CRF settings."""
    grid = GRIDS[args.mode] if args.grid == "full" else {}
    if args.set:
        grid = {}
        for item in args.set:
            key, _, values = item.partition("=")
            grid[key] = [float(v) for v in values.split(",")]
    settings = [
        replace(base, **dict(zip(grid, values, strict=True)))
        for values in itertools.product(*grid.values())
    ] or [base]
    return grid, settings


def print_rows(rows, grid, top: int) -> None:
    names = list(grid) or ["(defaults)"]
    print("| mIoU | mIoU confident | uncertain | " + " | ".join(names) + " |")
    print("|" + " --- |" * (3 + len(names)))
    for miou, confident, uncertain, crf in rows[:top]:
        values = [str(getattr(crf, n)) for n in grid] or [""]
        print(
            f"| {miou:.4f} | {confident:.4f} | {100 * uncertain:.1f}% | "
            + " | ".join(values)
            + " |"
        )


def main() -> None:
    args = parse_args()
    config = compose_config("generate_masks", ["crf=dense", *args.override])
    device = resolve_device(config.device)
    split = load_split(config, args.split)
    split = replace(split, samples=split.samples[: args.limit])
    classifier, checkpoint, _ = classifier_for(config, device, BadImages())
    base = replace(config.crf, mode=args.mode)
    cache = Path(config.cache_dir).expanduser() / "maps" if config.cache_maps else None
    predictor = MaskPredictor(
        classifier.model, config.cam, config.mask, refine=config.refine, device=device,
        maps_cache=cache,
    )  # fmt: skip
    batches = same_size_batches(split.samples, config.batch_size)
    items = [
        (item.image, prediction)
        for item, prediction in tqdm(
            predictor.stream(batches), total=len(split), desc="maps", unit="img"
        )
    ]
    truths = [split.ground_truth(s) for s in split.samples]
    num_labels = len(split.class_names) + 1

    raw = ConfusionMatrix(num_labels)
    for (_, prediction), truth in zip(items, truths, strict=True):
        raw.update(prediction.label_map, truth)
    refined = f", refined by {config.refine.name}" if config.refine else ""
    print(f"\n{config.cam.method} maps{refined} of {len(split)} {args.split} images, "
          f"checkpoint {checkpoint}")  # fmt: skip
    print(f"no CRF ({predictor.threshold.describe()}): mIoU {raw.miou:.4f}\n")

    grid, settings = candidates(base, args)
    rows = []
    for crf in tqdm(settings, desc=f"{args.mode} grid", unit="setting"):
        confusion = ConfusionMatrix(num_labels)
        jobs = (predictor.crf_input(image, p) for image, p in items)
        labelled = crf_label_maps(jobs, replace(crf, workers=args.workers))
        for label_map, truth in zip(labelled, truths, strict=True):
            confusion.update(label_map_at(label_map, truth.shape), truth)
        rows.append((confusion.miou, confusion.miou_confident, confusion.uncertain_fraction, crf))
    rows.sort(key=lambda r: -r[0])
    print_rows(rows, grid, args.top)
    figures = {
        "split": args.split, "images": len(split), "mode": args.mode,
        "refine": config.refine.name if config.refine else None, "no_crf_miou": raw.miou,
        "rows": [{"miou": m, "miou_confident": c, "uncertain": u,
                  **{n: getattr(crf, n) for n in grid}} for m, c, u, crf in rows],
    }  # fmt: skip
    print(f"figures: {save_result('tune_crf', figures, args.json)}")


if __name__ == "__main__":
    main()
