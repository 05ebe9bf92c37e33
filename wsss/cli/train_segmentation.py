"""``python -m wsss.train_segmentation``: what the pseudo-masks are worth to a segmentation model.

Trains a torchvision segmentation model on a ``generate_masks`` run's label PNGs (or its COCO
file, or the ground truth for the upper bound) and scores it on the eval split's ground truth.
Writes ``model.pt`` (a state dict: ``torch.load(..., weights_only=True)``) and ``metrics.json``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict
from pathlib import Path

import torch

from wsss.cli import common
from wsss.cli.config import TrainSegmentationCommand
from wsss.devices import resolve_device
from wsss.engine.review import check_rejections
from wsss.engine.segmentation import (
    ReviewedTargets,
    check_mask_targets,
    evaluate_segmentation,
    train_segmentation,
    training_targets,
)
from wsss.errors import DataError
from wsss.export.report import read_rejections
from wsss.io import json_digest, save_torch, write_json
from wsss.models.segmentation import build_segmentation_model

log = logging.getLogger("wsss.train_segmentation")


def run(config: TrainSegmentationCommand, out: Path) -> float:
    start = time.perf_counter()
    device = resolve_device(config.device)
    settings = config.segmentation
    train_split = common.load_split(config, config.train_split)
    eval_split = common.load_split(config, config.eval_split)
    if config.score_train and not train_split.has_masks:  # said before an hour of training
        raise DataError(
            f"{train_split.root}: score_train=true needs ground-truth masks for train_split "
            f"{config.train_split!r}, and it has none"
        )
    targets = training_targets(config.targets, train_split, config.pseudo_masks)
    labelled = train_split  # every photo of the split, those a review rejects included
    if config.rejected:  # a review from the run's report.html
        names = train_split.class_names
        rejections = read_rejections(config.rejected)
        if config.pseudo_masks:
            check_rejections(rejections, config.pseudo_masks)
        targets = ReviewedTargets(targets, rejections, names)
        train_split = targets.split(train_split)
    check_mask_targets(train_split, targets)
    torch.manual_seed(config.seed)  # the initial weights too: reruns give the same model
    model = build_segmentation_model(
        settings.model, len(train_split.class_names) + 1, settings.backbone_weights
    )
    log.info(
        "training %s on %d images (targets: %s)", settings.model, len(train_split), config.targets
    )
    # an interrupted training resumes after its last finished epoch when rerun into this folder
    # with the same settings (a folder of other settings is refused before this point)
    state = out / "training_state.pt"
    ids = [s.image_id for s in train_split.samples]
    key = json_digest([asdict(settings), config.targets, config.pseudo_masks, config.rejected, ids,
                       config.seed])  # fmt: skip
    history = train_segmentation(
        model,
        list(train_split.samples),
        targets,
        settings,
        device,
        num_workers=config.num_workers,
        seed=config.seed,
        state_path=state,
        state_key=key,
    )
    save_torch(out / "model.pt", model.state_dict())
    state.unlink(missing_ok=True)  # model.pt holds what a resume would need
    confusion = evaluate_segmentation(model, eval_split, device)
    metrics = {
        "targets": config.targets,
        "pseudo_masks": config.pseudo_masks,
        "rejected": config.rejected,
        "model": settings.model,
        "train_images": len(train_split),
        **history,
        "eval": confusion.summary(eval_split.class_names),
    }
    if config.score_train:  # the photos it learnt from, against their ground truth
        scored = evaluate_segmentation(model, labelled, device)
        metrics["train"] = scored.summary(labelled.class_names)
    metrics["seconds"] = round(time.perf_counter() - start, 1)
    write_json(out / "metrics.json", metrics)
    print(
        f"\nsegmentation mIoU on {config.eval_split} ({len(eval_split)} images): "
        f"{confusion.miou:.4f}\nmodel: {out / 'model.pt'}\nmetrics: {out / 'metrics.json'}"
    )
    return confusion.miou


main = common.command("train_segmentation", finished="metrics.json")(run)
