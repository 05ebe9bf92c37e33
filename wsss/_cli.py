"""Plumbing shared by the Hydra entry points: errors, devices, run folder, classifier cache."""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from wsss import distributed
from wsss.data import LabelledSplit, load_dataset_split
from wsss.data.screen import BadImages
from wsss.errors import ConfigError, DataError, WsssError
from wsss.models import LoadedClassifier, ModelSpec, create_classifier, load_checkpoint
from wsss.models import save_checkpoint as save_classifier
from wsss.training import TrainSettings, train_classifier

log = logging.getLogger("wsss")


def user_errors_exit(task: Callable[[DictConfig], object]) -> Callable[[DictConfig], object]:
    """Print a WsssError as one clear line (no traceback) and exit with status 2."""

    @functools.wraps(task)
    def wrapper(cfg: DictConfig):
        try:
            return task(cfg)
        except WsssError as exc:
            log.error("%s", exc)
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(2)

    return wrapper


def run_dir() -> Path:
    """The Hydra run (or multirun job) output folder: every output is written here."""
    from hydra.core.hydra_config import HydraConfig

    return Path(HydraConfig.get().runtime.output_dir)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={name} asked for, but no CUDA device is available")
    try:
        return torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(f"invalid device {name!r}: {exc}") from exc


def setup_device(cfg: DictConfig) -> torch.device:
    """The configured device; under ``torchrun``, also join the process group (one GPU per
    local rank) and check that every rank writes to the same run folder."""
    device = distributed.init_from_env(resolve_device(cfg.device))
    if distributed.world_size() > 1:
        distributed.same_on_all_ranks(
            str(run_dir()),
            "the run folder",
            "Under torchrun, pass hydra.run.dir=<folder> so that every process uses the same one.",
        )
    return device


def cache_dir(cfg: DictConfig) -> Path:
    return Path(cfg.cache_dir).expanduser()


def load_split(cfg: DictConfig, split: str) -> LabelledSplit:
    """Split ``split`` of the configured dataset; a folder dataset may list unlabelled images
    when the command has ``predict_labels`` set."""
    allow_unlabelled = cfg.get("predict_labels") is not None
    return load_dataset_split(cfg.dataset, split, cache_dir(cfg), allow_unlabelled)


def labelled_only(split: LabelledSplit) -> LabelledSplit:
    """``split`` without the images that have no labels (they cannot train a classifier)."""
    labelled = tuple(s for s in split.samples if s.labels)
    if len(labelled) < len(split):
        log.info("%d images without labels are not used for training", len(split) - len(labelled))
    if not labelled:
        raise DataError(f"{split.root}: no usable labelled image to train on")
    return replace(split, samples=labelled)


def model_spec(cfg: DictConfig) -> ModelSpec:
    return ModelSpec(
        backbone=cfg.model.backbone,
        pretrained=cfg.model.pretrained,
        backbone_kwargs=OmegaConf.to_container(cfg.model.backbone_kwargs, resolve=True),
    )


def train_settings(cfg: DictConfig) -> TrainSettings:
    t = OmegaConf.to_container(cfg.train, resolve=True)
    t["scale_range"] = tuple(t["scale_range"])
    return TrainSettings(
        **t, num_workers=cfg.num_workers, seed=cfg.seed, amp=bool(cfg.get("amp", False))
    )


def train_and_save(
    cfg: DictConfig, checkpoint_path: Path, device: torch.device, bad: BadImages
) -> LoadedClassifier:
    """Train a classifier as configured on ``train_split``, validate on ``val_split``, save it.
    Unusable images stop the run or go to ``bad`` (``cfg.on_bad_image``)."""
    train_split = labelled_only(bad.screen(load_split(cfg, cfg.train_split)))
    val_split = labelled_only(bad.screen(load_split(cfg, cfg.val_split))) if cfg.val_split else None
    if val_split is not None and val_split.class_names != train_split.class_names:
        raise ConfigError(
            f"splits {cfg.train_split!r} and {cfg.val_split!r} have different class lists"
        )
    spec = model_spec(cfg)
    torch.manual_seed(cfg.seed)
    model = create_classifier(spec, len(train_split.class_names))
    log.info(
        "training %s on %d images (%d classes), %d epochs",
        spec.backbone,
        len(train_split),
        len(train_split.class_names),
        cfg.train.epochs,
    )
    metrics = train_classifier(model, train_split, val_split, train_settings(cfg), device, bad)
    if distributed.is_main():  # written once; the other ranks hold the same weights
        save_classifier(checkpoint_path, model, spec, train_split.class_names, metrics)
        log.info("saved checkpoint %s", checkpoint_path)
    distributed.barrier()
    return LoadedClassifier(model.cpu().eval(), spec, train_split.class_names, metrics)


def classifier_cache_key(cfg: DictConfig) -> str:
    """A digest of everything that determines a trained classifier (data, model, training)."""
    from wsss.data.synthetic import GENERATOR_VERSION
    from wsss.models.classifier import CHECKPOINT_VERSION

    parts = {
        "dataset": OmegaConf.to_container(cfg.dataset, resolve=True),
        "model": OmegaConf.to_container(cfg.model, resolve=True),
        "train": OmegaConf.to_container(cfg.train, resolve=True),
        "splits": [cfg.train_split, cfg.val_split],
        "seed": cfg.seed,
        "versions": [GENERATOR_VERSION, CHECKPOINT_VERSION],
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def classifier_for(
    cfg: DictConfig, device: torch.device, bad: BadImages
) -> tuple[LoadedClassifier, Path, bool]:
    """The configured ``checkpoint``, or a classifier trained once and cached for reuse (bad
    images met while training go to ``bad``).

    Returns (classifier, checkpoint path, whether it was trained in this run).
    """
    if cfg.checkpoint:
        path = Path(cfg.checkpoint).expanduser()
        return load_checkpoint(path), path, False
    path = cache_dir(cfg) / "classifiers" / classifier_cache_key(cfg) / "checkpoint.pt"
    if path.is_file():
        log.info("reusing cached classifier %s", path)
        return load_checkpoint(path), path, False
    log.info("no checkpoint= given: training a classifier (cached at %s)", path)
    return train_and_save(cfg, path, device, bad), path, True
