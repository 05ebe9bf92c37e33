"""IRN's random walk on saved maps: its parameters and boundary networks, scored side by side.

Reads the maps a ``generate_masks`` run saved (``export.save_cams=true``, no refiner), brings
each photo and its maps to the working resolution as ``MaskPredictor`` does, walks them with
every combination of ``--set`` values (``refine=irn`` settings: beta, exp_times, radius, flip)
and every ``--affinity`` checkpoint, and scores the walked maps against the ground truth: at the
walk's own background score (``bg_threshold``, GT-free) and at the best fixed threshold of a
sweep (tuned on the ground truth: an upper bound, labelled so). Boundary maps are computed once
per photo and network; the walk's time per photo is reported.

    python scripts/tune_walk.py --run runs/voc/masks_defaults \\
        --affinity runs/voc/affinity/affinity.pt --set beta=5,10 --set exp_times=6,8 \\
        --split tune <the VOC overrides of scripts/bench_voc.py>
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from wsss.cams import upsample_cams
from wsss.cli.config import compose_config
from wsss.data import load_image
from wsss.engine.run_folder import RunFolder
from wsss.masks import IrnSettings, at_working_size, working_size
from wsss.metrics import ConfusionMatrix, ThresholdSweep


def variants(sets: list[str], checkpoints: list[Path]) -> list[IrnSettings]:
    grid: dict[str, list] = {}
    for item in sets:
        key, _, values = item.partition("=")
        kind = type(getattr(IrnSettings(checkpoint=""), key))
        grid[key] = [kind(v) if kind is not bool else v == "true" for v in values.split(",")]
    return [
        IrnSettings(checkpoint=str(c), **dict(zip(grid, values, strict=True)))
        for c in checkpoints
        for values in itertools.product(*grid.values())
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, required=True, help="a run with export.save_cams")
    parser.add_argument("--affinity", type=Path, action="append", required=True)
    parser.add_argument("--split", default="tune")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--max-side", type=int, default=None, help="(default: cam.max_side)")
    parser.add_argument("--set", action="append", default=[], help="key=v1,v2 of refine=irn")
    parser.add_argument(
        "--bg", type=float, default=None, help="background score (default: refine.bg_threshold)"
    )
    parser.add_argument("--json", type=Path, default=None, help="write the rows here")
    parser.add_argument("--override", action="append", default=[], help="Hydra override")
    args = parser.parse_args()

    config = compose_config("generate_masks", args.override)
    split = config.dataset.load(args.split, cache_dir=Path(config.cache_dir))
    samples = split.samples[: args.limit]
    folder = RunFolder(args.run)
    settings = variants(args.set, args.affinity)
    if args.bg is not None:
        settings = [replace(s, bg_threshold=args.bg) for s in settings]
    max_side = args.max_side or config.cam.max_side
    num_labels = len(split.class_names) + 1
    confusions = [ConfusionMatrix(num_labels) for _ in settings]
    otsu_confusions = [ConfusionMatrix(num_labels) for _ in settings]
    otsu = replace(config.mask, rule="otsu")
    sweeps = [ThresholdSweep(num_labels) for _ in settings]
    seconds = [0.0 for _ in settings]
    for sample in tqdm(samples, desc=f"walk {len(settings)} variants", unit="img"):
        image = load_image(sample.image_path)
        truth = split.ground_truth(sample)
        cams = folder.read_maps(sample.image_id, sample.labels)
        size = working_size(image.shape[:2], max_side)
        small = at_working_size(image, max_side)
        maps = F.interpolate(torch.from_numpy(cams)[None], size, mode="bilinear", antialias=True)
        maps = maps[0].numpy()
        for k, irn in enumerate(settings):
            start = time.perf_counter()
            walked = irn.refine(small, maps, sample.labels)
            seconds[k] += time.perf_counter() - start
            full = upsample_cams(torch.from_numpy(walked), image.shape[:2]).numpy()
            rule = replace(config.mask, rule="fixed", bg_threshold=irn.bg_threshold)
            confusions[k].update(rule.label_map(full, sample.labels), truth)
            otsu_confusions[k].update(otsu.label_map(full, sample.labels), truth)
            sweeps[k].update(full, sample.labels, truth)

    keys = [item.partition("=")[0] for item in args.set]
    print(f"\n{len(samples)} {args.split} photos, maps of {folder.root}, working side {max_side}")
    print(
        "| affinity | " + "".join(f"{k} | " for k in keys) + "mIoU (bg score, GT-free) | "
        "mIoU (otsu, GT-free) | best threshold (tuned on GT: upper bound) | walk s/img |"
    )
    print("| --- | " + "--- | " * len(keys) + "--- | --- | --- | --- |")
    rows = []
    for k, irn in enumerate(settings):
        confusion, spent = confusions[k], seconds[k]
        threshold, best = sweeps[k].best
        values = [getattr(irn, key) for key in keys]
        name = Path(irn.checkpoint).parent.name
        print(f"| {name} | " + "".join(f"{v} | " for v in values)
              + f"{confusion.miou:.4f} ({irn.bg_threshold}) | {otsu_confusions[k].miou:.4f} | "
              f"{best:.4f} ({threshold:.2f}) | {spent / len(samples):.3f} |")  # fmt: skip
        rows.append({"affinity": irn.checkpoint, **dict(zip(keys, values, strict=True)),
                     "bg_threshold": irn.bg_threshold, "miou": confusion.miou,
                     "otsu_miou": otsu_confusions[k].miou, "best_threshold": threshold,
                     "best_threshold_miou": best,
                     "walk_seconds_per_image": spent / len(samples)})  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps({"split": args.split, "images": len(samples),
                                         "rows": rows}, indent=2) + "\n")  # fmt: skip


if __name__ == "__main__":
    main()
