"""Pseudo-mask quality of each CAM method on the synthetic eval split, as a Markdown table.

Uses the demo classifier (trained and cached by ``python -m wsss.generate_masks`` if missing) and
the full generation stage (scales 1.0, 0.5, 1.5, 2.0 + flip, threshold 0.15), so the time per
image is what ``generate_masks`` spends per image, writing included.

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

from hydra import compose, initialize_config_dir

from wsss import _cli
from wsss.config import config_dir, register_configs
from wsss.generate_masks import crf_settings, generate_settings
from wsss.pipeline import generate_pseudo_masks

DEFAULT_METHODS = "cam,gradcam,gradcampp,xgradcam,layercam,hirescam"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default=DEFAULT_METHODS)
    parser.add_argument("--limit", type=int, default=None, help="score only the first N images")
    parser.add_argument("--override", action="append", default=[], help="Hydra override")
    args = parser.parse_args()

    register_configs()
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose(config_name="generate_masks", overrides=args.override)
    device = _cli.resolve_device(cfg.device)
    split = _cli.load_split(cfg, cfg.split)
    if args.limit:
        split = replace(split, samples=split.samples[: args.limit])
    classifier, checkpoint, _ = _cli.classifier_for(cfg, device)
    base = generate_settings(cfg)
    crf_base = crf_settings(compose_crf(args.override))
    print(
        f"classifier {checkpoint} (val mAP {classifier.metrics.get('val_map', float('nan')):.4f})"
        f"; {len(split)} {cfg.split} images; scales {list(base.scales)} + flip\n"
    )
    print("| method | CRF | mIoU | uncertain | best mIoU without CRF (threshold) | s/img |")
    print("| --- | --- | --- | --- | --- | --- |")
    for entry in args.methods.split(","):
        entry, _, mode = entry.partition("+")
        name, _, top = entry.partition(":")
        crf = replace(crf_base, mode=mode) if mode else None
        settings = replace(
            base, method=name, top_channels=int(top) if top else None, overlays=0, crf=crf
        )
        with tempfile.TemporaryDirectory() as out:
            result = generate_pseudo_masks(classifier.model, split, Path(out), settings, device)
        best_t, best_m = result.sweep.best
        label = f"{name} (top {top} channels)" if top else name
        print(
            f"| {label} | {mode or 'none'} | {result.confusion.miou:.4f} | "
            f"{100 * result.confusion.uncertain_fraction:.1f}% | {best_m:.4f} ({best_t:.2f}) | "
            f"{result.seconds / result.num_images:.3f} |",
            flush=True,
        )


def compose_crf(overrides: list[str]):
    """The ``crf=dense`` config with the command line's crf overrides applied."""
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return compose(config_name="generate_masks", overrides=["crf=dense", *overrides])


if __name__ == "__main__":
    main()
