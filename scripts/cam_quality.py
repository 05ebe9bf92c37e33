"""Pseudo-mask quality of each CAM method on the synthetic eval split, as a Markdown table.

Uses the demo classifier (trained and cached by ``python -m wsss.generate_masks`` if missing) and
the full generation stage at the ``generate_masks`` defaults (``conf/cam``, ``conf/mask``), so the
time per image is what ``generate_masks`` spends per image, writing included.

    python scripts/cam_quality.py                                   # all but Score-CAM
    python scripts/cam_quality.py --methods cam,scorecam,scorecam:64 --limit 40
    python scripts/cam_quality.py --methods cam,cam+label,cam+soft  # with dense CRF

``scorecam:N`` is Score-CAM scoring only the N most active channels; ``+label`` / ``+soft``
refine with the dense CRF in that mode (the ``crf=dense`` defaults, overridable with
``--override crf.bilateral_srgb=...``). ``--limit`` scores only the
first N images (Score-CAM on all 200 takes long on a CPU); compare rows of the same limit only.
Extra Hydra overrides (e.g. ``--override model=resnet18``) pick another classifier.
"""

from __future__ import annotations

import argparse
import tempfile
from dataclasses import replace
from pathlib import Path

from _results import save_result  # scripts/, beside this file

from wsss.cams import method_settings
from wsss.cli.common import classifier_for, load_split
from wsss.cli.config import compose_config
from wsss.data.screen import BadImages
from wsss.devices import resolve_device
from wsss.engine.generation import generate_pseudo_masks
from wsss.masks import MaskPredictor

DEFAULT_METHODS = "cam,gradcam,gradcampp,xgradcam,layercam,hirescam"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default=DEFAULT_METHODS)
    parser.add_argument("--limit", type=int, default=None, help="score only the first N images")
    parser.add_argument("--override", action="append", default=[], help="Hydra override")
    parser.add_argument("--json", type=Path, default=None, help="(default: results/)")
    args = parser.parse_args()

    config = compose_config("generate_masks", args.override)
    crf_base = compose_config("generate_masks", ["crf=dense", *args.override]).crf
    device = resolve_device(config.device)
    split = load_split(config, config.split)
    if args.limit:
        split = replace(split, samples=split.samples[: args.limit])
    classifier, checkpoint, _ = classifier_for(config, device, BadImages())
    cam = config.cam
    print(
        f"classifier {checkpoint} (val mAP {classifier.metrics.get('val_map', float('nan')):.4f})"
        f"; {len(split)} {config.split} images; scales {list(cam.scales)} + flip\n"
    )
    print("| method | CRF | mIoU | uncertain | best mIoU without CRF (threshold) | s/img |")
    print("| --- | --- | --- | --- | --- | --- |")
    export = replace(config.export, overlays=0)
    rows = []
    for entry in args.methods.split(","):
        entry, _, mode = entry.partition("+")
        name, _, top = entry.partition(":")
        options = {"top_channels": int(top)} if top else {}
        settings = method_settings(
            name, scales=cam.scales, flip=cam.flip, max_side=cam.max_side, **options
        )
        crf = replace(crf_base, mode=mode) if mode else None
        predictor = MaskPredictor(classifier.model, settings, config.mask, crf, device=device)
        with tempfile.TemporaryDirectory() as out:
            result = generate_pseudo_masks(
                predictor, split, Path(out), export, batch_size=config.batch_size
            )
        best_t, best_m = result.sweep.best
        label = f"{name} (top {top} channels)" if top else name
        rows.append({"method": label, "crf": mode or None, "miou": result.confusion.miou,
                     "uncertain": result.confusion.uncertain_fraction,
                     "best_threshold": best_t, "best_threshold_miou": best_m,
                     "seconds_per_image": result.seconds / result.num_images})  # fmt: skip
        print(
            f"| {label} | {mode or 'none'} | {result.confusion.miou:.4f} | "
            f"{100 * result.confusion.uncertain_fraction:.1f}% | {best_m:.4f} ({best_t:.2f}) | "
            f"{result.seconds / result.num_images:.3f} |",
            flush=True,
        )
    figures = {"split": config.split, "images": len(split), "rows": rows}
    print(f"figures: {save_result('cam_quality', figures, args.json)}")


if __name__ == "__main__":
    main()
