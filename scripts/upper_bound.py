"""What the pseudo-masks are worth: segmentation mIoU when trained on them vs on the ground truth.

Runs the commands a user would, on one dataset (default: the synthetic demo, with its cached
classifier):

1. ``wsss.generate_masks split=train`` twice: CAM pseudo-masks, and CAM + dense CRF;
2. ``wsss.train_segmentation`` three times with identical settings, on (a) the CAM masks,
   (b) the CAM + CRF masks, (c) the ground-truth masks of the same training images;
3. prints each model's mIoU on the eval split and the ratio (b) / (c).

    python scripts/upper_bound.py                      # the README's table (about 25 minutes)
    python scripts/upper_bound.py --epochs 2 -- dataset.num_train=200   # a quick look

Everything after ``--`` is passed to every command (dataset, device overrides); ``--generate``
and ``--segmentation`` pass an override to one of them (``--generate model=resnet18``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from _results import save_result  # scripts/, beside this file


def run(module: str, *args: str) -> None:
    command = [sys.executable, "-m", module, *args]
    print("$", " ".join(command), flush=True)
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("outputs/upper_bound"))
    parser.add_argument("--epochs", type=int, default=15, help="segmentation training epochs")
    parser.add_argument(
        "--targets",
        default="masks",
        choices=["masks", "coco"],
        help="read the pseudo-masks as label PNGs or through annotations.json",
    )
    parser.add_argument(
        "--generate", action="append", default=[], help="an override for generate_masks only"
    )
    parser.add_argument(
        "--segmentation",
        action="append",
        default=[],
        help="an override for train_segmentation only",
    )
    parser.add_argument("--json", type=Path, default=None, help="(default: results/)")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for every command")
    args = parser.parse_args()
    out = args.out.resolve()
    common = list(args.overrides)

    pseudo = {"cam": ["crf=none"], "cam+crf": ["crf=dense"]}
    for name, extra in pseudo.items():
        folder = out / f"pseudo_{name}"
        if not (folder / "summary.json").is_file():
            run("wsss.generate_masks", *common, *args.generate, *extra, "split=train",
                "export.overlays=0", f"hydra.run.dir={folder}")  # fmt: skip

    rows = []
    trainings = {
        "(a) CAM pseudo-masks": [f"pseudo_masks={out / 'pseudo_cam'}", f"targets={args.targets}"],
        "(b) CAM + CRF pseudo-masks": [
            f"pseudo_masks={out / 'pseudo_cam+crf'}",
            f"targets={args.targets}",
        ],
        "(c) ground truth": ["targets=ground_truth"],
    }
    for label, extra in trainings.items():
        folder = out / ("seg_" + label.split()[0].strip("()"))
        start = time.perf_counter()
        run("wsss.train_segmentation", *common, *args.segmentation, *extra,
            f"segmentation.epochs={args.epochs}", f"hydra.run.dir={folder}")  # fmt: skip
        metrics = json.loads((folder / "metrics.json").read_text())
        rows.append((label, metrics["eval"]["miou"], time.perf_counter() - start))

    pseudo_quality = {}
    for name in pseudo:
        summary = json.loads((out / f"pseudo_{name}" / "summary.json").read_text())
        pseudo_quality[name] = summary["miou"]  # the masks written
    print(f"\npseudo-mask mIoU on the training images: CAM {pseudo_quality['cam']:.4f}, "
          f"CAM + CRF {pseudo_quality['cam+crf']:.4f}")  # fmt: skip
    print(f"\n{'segmentation model trained on':<30} {'eval mIoU':>9}  {'time':>7}")
    for label, miou, seconds in rows:
        print(f"{label:<30} {miou:>9.4f}  {seconds:>6.0f}s")
    (_, cam, _), (_, crf, _), (_, truth, _) = rows
    print(f"\nratio (b) / (c): {crf / truth:.3f}   (a) / (c): {cam / truth:.3f}")
    figures = {
        "pseudo_masks_miou": pseudo_quality,
        "segmentation_miou": {label: miou for label, miou, _ in rows},
        "segmentation_seconds": {label: round(seconds, 1) for label, _, seconds in rows},
        "ratio_crf_to_truth": crf / truth,
        "ratio_cam_to_truth": cam / truth,
    }
    print(f"figures: {save_result('upper_bound', figures, args.json)}")


if __name__ == "__main__":
    main()
