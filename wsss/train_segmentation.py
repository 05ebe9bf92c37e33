"""``python -m wsss.train_segmentation``: what the pseudo-masks are worth to a segmentation model.

Trains a torchvision segmentation model on a ``generate_masks`` run's label PNGs (or its COCO
file, or the ground truth for the upper bound) and scores it on the eval split's ground truth.
Writes ``model.pt`` (a state dict: ``torch.load(..., weights_only=True)``) and ``metrics.json``.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from wsss import _cli
from wsss.config import config_dir, register_configs
from wsss.errors import ConfigError
from wsss.io import atomic_path, write_json
from wsss.segmentation import (
    TARGET_SOURCES,
    CocoTargets,
    GroundTruthTargets,
    MaskTargets,
    SegmentationSettings,
    build_model,
    check_targets,
    evaluate_segmentation,
    train_segmentation,
)

log = logging.getLogger("wsss.train_segmentation")
register_configs()


def segmentation_settings(cfg: DictConfig) -> SegmentationSettings:
    fields = OmegaConf.to_container(cfg.segmentation, resolve=True)
    fields.update(
        scale_range=tuple(fields["scale_range"]), num_workers=cfg.num_workers, seed=cfg.seed
    )
    return SegmentationSettings(**fields)


def training_targets(cfg: DictConfig, train_split):
    if cfg.targets not in TARGET_SOURCES:
        raise ConfigError(f"targets must be one of {TARGET_SOURCES}, got {cfg.targets!r}")
    if cfg.targets == "ground_truth":
        return GroundTruthTargets(train_split)
    if not cfg.pseudo_masks:
        raise ConfigError(
            "pseudo_masks=<generate_masks run folder> is required (or targets=ground_truth)"
        )
    run = Path(cfg.pseudo_masks).expanduser()
    if cfg.targets == "coco":
        return CocoTargets(
            run / "annotations.json", train_split.images_root, train_split.class_names
        )
    return MaskTargets(run)


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="train_segmentation")
@_cli.user_errors_exit
def main(cfg: DictConfig) -> float:
    start = time.perf_counter()
    out = _cli.run_dir()
    device = _cli.resolve_device(cfg.device)
    settings = segmentation_settings(cfg)
    settings.validate()
    train_split = _cli.load_split(cfg, cfg.train_split)
    eval_split = _cli.load_split(cfg, cfg.eval_split)
    targets = training_targets(cfg, train_split)
    check_targets(train_split, targets)
    torch.manual_seed(settings.seed)  # the initial weights too: reruns give the same model
    model = build_model(settings, len(train_split.class_names) + 1)
    log.info(
        "training %s on %d images (targets: %s)", settings.model, len(train_split), cfg.targets
    )
    history = train_segmentation(model, list(train_split.samples), targets, settings, device)
    with atomic_path(out / "model.pt") as tmp:
        torch.save(model.state_dict(), tmp)
    confusion = evaluate_segmentation(model, eval_split, device)
    metrics = {
        "targets": cfg.targets,
        "pseudo_masks": cfg.pseudo_masks,
        "model": settings.model,
        "train_images": len(train_split),
        **history,
        "eval": confusion.summary(eval_split.class_names),
        "seconds": round(time.perf_counter() - start, 1),
    }
    write_json(out / "metrics.json", metrics)
    print(
        f"\nsegmentation mIoU on {cfg.eval_split} ({len(eval_split)} images): "
        f"{confusion.miou:.4f}\nmodel: {out / 'model.pt'}\nmetrics: {out / 'metrics.json'}"
    )
    return confusion.miou


if __name__ == "__main__":
    main()
