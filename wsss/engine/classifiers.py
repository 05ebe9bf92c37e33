"""A classifier for a command: loaded from a checkpoint, or trained as configured and cached so
that the next run with the same data, model and recipe reuses it."""

from __future__ import annotations

import logging
from dataclasses import asdict, replace
from pathlib import Path

import torch

from wsss import distributed
from wsss.data.datasets import DatasetSettings
from wsss.data.screen import BadImages
from wsss.data.split import LabelledSplit
from wsss.data.synthetic import GENERATOR_VERSION
from wsss.engine.training import TrainSettings, train_classifier
from wsss.errors import ConfigError, DataError
from wsss.io import json_digest
from wsss.models import LoadedClassifier, ModelSpec, create_classifier, load_checkpoint
from wsss.models import save_checkpoint as save_classifier
from wsss.models.classifier import CHECKPOINT_VERSION

log = logging.getLogger(__name__)


def labelled_only(split: LabelledSplit) -> LabelledSplit:
    """``split`` without the images that have no labels (they cannot train a classifier)."""
    labelled = tuple(s for s in split.samples if s.labels)
    if len(labelled) < len(split):
        log.info("%d images without labels are not used for training", len(split) - len(labelled))
    if not labelled:
        raise DataError(f"{split.root}: no usable labelled image to train on")
    return replace(split, samples=labelled)


def train_and_save(
    dataset: DatasetSettings,
    spec: ModelSpec,
    settings: TrainSettings,
    checkpoint_path: Path,
    *,
    train_split: str = "train",
    val_split: str | None = "eval",
    cache_dir: Path | None = None,
    device: torch.device | str = "cpu",
    bad: BadImages | None = None,
    amp: bool = False,
    num_workers: int = 0,
    seed: int = 0,
) -> LoadedClassifier:
    """Train a ``spec`` classifier with ``settings`` on split ``train_split`` of ``dataset``,
    validate on ``val_split``, and save it to ``checkpoint_path`` (once, under torchrun).
    Unusable images stop the run or go to ``bad``."""
    bad = bad or BadImages()
    train = labelled_only(bad.screen(dataset.load(train_split, cache_dir=cache_dir)))
    val = None
    if val_split:
        val = labelled_only(bad.screen(dataset.load(val_split, cache_dir=cache_dir)))
        if val.class_names != train.class_names:
            raise ConfigError(f"splits {train_split!r} and {val_split!r} have different classes")
    torch.manual_seed(seed)
    model = create_classifier(spec, len(train.class_names))
    log.info(
        "training %s on %d images (%d classes), %d epochs",
        spec.backbone,
        len(train),
        len(train.class_names),
        settings.epochs,
    )
    state = Path(checkpoint_path).parent / "training_state.pt"
    key = cache_key(dataset, spec, settings, (train_split, val_split), seed)
    metrics = train_classifier(
        model, train, val, settings, device, bad, amp=amp, num_workers=num_workers, seed=seed,
        state_path=state, state_key=key,
    )  # fmt: skip
    if distributed.is_main():  # written once; the other ranks hold the same weights
        save_classifier(checkpoint_path, model, spec, train.class_names, metrics)
        log.info("saved checkpoint %s", checkpoint_path)
        state.unlink(missing_ok=True)  # the checkpoint holds what a resume would need
    distributed.barrier()
    return LoadedClassifier(model.cpu().eval(), spec, train.class_names, metrics)


def cache_key(
    dataset: DatasetSettings,
    spec: ModelSpec,
    settings: TrainSettings,
    splits: tuple[str, str | None],
    seed: int,
) -> str:
    """A digest of everything that determines a trained classifier (data, model, training)."""
    parts = {
        "dataset": asdict(dataset),
        "model": asdict(spec),
        "train": asdict(settings),
        "splits": list(splits),
        "seed": seed,
        "versions": [GENERATOR_VERSION, CHECKPOINT_VERSION],
    }
    return json_digest(parts)


def checkpoint_or_cached(
    checkpoint: str | None,
    dataset: DatasetSettings,
    spec: ModelSpec,
    settings: TrainSettings,
    *,
    cache_dir: Path,
    train_split: str = "train",
    val_split: str | None = "eval",
    seed: int = 0,
    **training,
) -> tuple[LoadedClassifier, Path, bool]:
    """The classifier in ``checkpoint``, or one trained once as configured and cached under
    ``cache_dir/classifiers/`` (``training``: the keyword arguments of :func:`train_and_save`).

    Returns (classifier, checkpoint path, whether it was trained in this run).
    """
    if checkpoint:
        path = Path(checkpoint).expanduser()
        return load_checkpoint(path), path, False
    key = cache_key(dataset, spec, settings, (train_split, val_split), seed)
    path = Path(cache_dir) / "classifiers" / key / "checkpoint.pt"
    if path.is_file():
        log.info("reusing cached classifier %s", path)
        return load_checkpoint(path), path, False
    log.info("no checkpoint= given: training a classifier (cached at %s)", path)
    classifier = train_and_save(
        dataset,
        spec,
        settings,
        path,
        train_split=train_split,
        val_split=val_split,
        cache_dir=cache_dir,
        seed=seed,
        **training,
    )
    return classifier, path, True
