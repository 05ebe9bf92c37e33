"""Training the CAM classifier on image-level labels (multi-label soft-margin loss).

One module, a little over 350 lines, because the loop and its per-epoch state (save and
resume) work on the same objects (model, optimiser, schedule, sampler) and read best together."""

from __future__ import annotations

import functools
import logging
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, Subset
from tqdm import tqdm

from wsss import distributed
from wsss.data.screen import BadImages
from wsss.data.split import LabelledSplit
from wsss.devices import autocast_settings
from wsss.engine.training_data import ClassificationDataset, seed_worker, usable_batch
from wsss.errors import ConfigError, DataError
from wsss.io import save_torch
from wsss.metrics.classification import average_precision
from wsss.models.classifier import CAMClassifier

log = logging.getLogger(__name__)


@dataclass
class TrainSettings:
    """The classifier's training recipe: optimisation and augmentation (the ``train`` config
    group). How it runs (device, mixed precision, data workers, seed) is given to
    :func:`train_classifier` beside it."""

    epochs: int = 12
    batch_size: int = 32
    optimizer: str = "sgd"  # sgd | adamw
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    schedule: str = "poly"  # poly | cosine
    poly_power: float = 0.9
    #: the learning rate rises linearly from 0 over this many epochs, then follows the schedule
    warmup_epochs: float = 0.0
    #: the classifier layer learns this many times faster (IRN uses 10 with a pretrained backbone)
    head_lr_mult: float = 1.0
    crop_size: int = 128
    #: "rescale": the image is scaled by a factor drawn from ``scale_range``, then a crop_size
    #: crop is taken (padded where smaller); "resized": a random ``area_range`` share of the
    #: image (aspect ratio 3/4 to 4/3) is resized to crop_size x crop_size, so every crop sees
    #: a large part of a photo whatever its size (RandomResizedCrop)
    crop: str = "rescale"
    scale_range: list[float] = field(default_factory=lambda: [0.7, 1.3])
    area_range: list[float] = field(default_factory=lambda: [0.4, 1.0])
    hflip: bool = True
    #: brightness, contrast and saturation jitter (hue a third of it), applied to the crop
    color_jitter: float = 0.3
    #: validate every this many epochs (and after the last)
    val_every: int = 1

    def validate(self) -> None:
        if self.optimizer not in ("sgd", "adamw"):
            raise ConfigError(f"train.optimizer must be 'sgd' or 'adamw', got {self.optimizer!r}")
        if self.schedule not in ("poly", "cosine"):
            raise ConfigError(f"train.schedule must be 'poly' or 'cosine', got {self.schedule!r}")
        if self.epochs < 1 or self.batch_size < 1 or self.crop_size < 16:
            raise ConfigError("train.epochs and train.batch_size must be >= 1, crop_size >= 16")
        if len(self.scale_range) != 2:
            raise ConfigError(f"train.scale_range must be [low, high], got {self.scale_range}")
        lo, hi = self.scale_range
        if not 0 < lo <= hi:
            raise ConfigError(f"train.scale_range must satisfy 0 < low <= high, got {lo, hi}")
        if self.crop not in ("rescale", "resized"):
            raise ConfigError(f"train.crop must be 'rescale' or 'resized', got {self.crop!r}")
        if len(self.area_range) != 2 or not 0 < self.area_range[0] <= self.area_range[1] <= 1:
            raise ConfigError(f"train.area_range must be [low, high] in (0, 1]: {self.area_range}")
        if self.warmup_epochs < 0 or self.val_every < 1:
            raise ConfigError("train.warmup_epochs must be >= 0 and train.val_every >= 1")


class MultiLabelLoss(nn.Module):
    """The classifier's objective: the multi-label soft margin of its class scores (the CAM
    paper's and IRN's loss).

    An *objective* for :func:`train_classifier` is a module that holds the classifier (and any
    parameters its loss adds), names the part trained at ``train.lr`` ``backbone`` (the rest
    learns ``head_lr_mult`` times faster), and returns a batch's loss from ``forward(images,
    targets, amp)``, the forward passes under ``torch.autocast(**amp)``."""

    def __init__(self, classifier: CAMClassifier):
        super().__init__()
        self.classifier = classifier

    @property
    def backbone(self) -> nn.Module:
        return self.classifier.backbone

    def forward(self, images: torch.Tensor, targets: torch.Tensor, amp: dict) -> torch.Tensor:
        with torch.autocast(images.device.type, **amp):
            logits = self.classifier(images)
        return F.multilabel_soft_margin_loss(logits.float(), targets)


def parameter_groups(model: nn.Module, s) -> list[dict]:
    """``model``'s trainable parameters in two groups: its pretrained ``backbone``'s at
    ``s.lr``, every other one (the new head) at ``s.lr * s.head_lr_mult``."""
    backbone = {id(p) for p in model.backbone.parameters()}
    trainable = [p for p in model.parameters() if p.requires_grad]
    return [
        {"params": [p for p in trainable if id(p) in backbone], "lr": s.lr},
        {"params": [p for p in trainable if id(p) not in backbone], "lr": s.lr * s.head_lr_mult},
    ]


def make_optimizer(model: nn.Module, s) -> torch.optim.Optimizer:
    """SGD (with momentum) or AdamW, as ``s.optimizer`` says, over :func:`parameter_groups`.
    ``s``: settings with ``optimizer``, ``lr``, ``head_lr_mult``, ``momentum`` and
    ``weight_decay`` (the classifier's :class:`TrainSettings`, a segmentation model's
    ``SegmentationSettings``)."""
    groups = parameter_groups(model, s)
    if s.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=s.lr, momentum=s.momentum, weight_decay=s.weight_decay)
    return torch.optim.AdamW(groups, lr=s.lr, weight_decay=s.weight_decay)


def lr_factor(s: TrainSettings, step: int, total: int, warmup: int) -> float:
    """The learning rate's multiplier at ``step`` of ``total``: linear warm-up over ``warmup``
    steps, then the schedule over the rest."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min((step - warmup) / max(total - warmup, 1), 1.0)
    if s.schedule == "poly":
        return (1 - progress) ** s.poly_power
    return 0.5 * (1 + math.cos(math.pi * progress))


@torch.no_grad()
def predict_scores(
    model: CAMClassifier,
    split: LabelledSplit,
    settings: TrainSettings,
    device: torch.device | str = "cpu",
    bad: BadImages | None = None,
    num_workers: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Class probabilities (sigmoid) and multi-hot targets for every readable image of
    ``split`` (unreadable ones go to ``bad``; default: an error). Under torchrun each rank
    scores every world-size-th image and all ranks get every score (grouped by rank)."""
    bad = bad or BadImages()
    rank, world = distributed.rank(), distributed.world_size()
    indices = list(range(rank, len(split), world))
    loader = DataLoader(
        Subset(ClassificationDataset(split, settings, train=False), indices),
        batch_size=settings.batch_size,
        num_workers=num_workers,
        collate_fn=usable_batch,
    )
    device = torch.device(device)
    was_training = model.training
    model.eval()
    scores, targets = [], []
    for images, target, unreadable in loader:
        for item in unreadable:
            bad.record(item.path, item.reason)
        if len(images):
            scores.append(torch.sigmoid(model(images.to(device))).cpu())
            targets.append(target)
    model.train(was_training)
    mine = (torch.cat(scores).numpy(), torch.cat(targets).numpy()) if scores else None
    parts = [part for part in distributed.all_gather_object(mine) if part is not None]
    if not parts:
        raise DataError(f"{split.root}: no readable image to score")
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def train_classifier(
    model: CAMClassifier,
    train_split: LabelledSplit,
    val_split: LabelledSplit | None,
    settings: TrainSettings,
    device: torch.device | str = "cpu",
    bad: BadImages | None = None,
    *,
    amp: bool = False,
    num_workers: int = 0,
    seed: int = 0,
    state_path: Path | None = None,
    state_key: str = "",
    objective: nn.Module | None = None,
) -> dict[str, float]:
    """Train ``model`` in place; return the final metrics (``val_map`` when a val split is given).

    ``objective``: what the training minimises, a module holding ``model`` (see
    :class:`MultiLabelLoss`, the default); one that adds parameters (ReCAM's head,
    :mod:`wsss.engine.recam_stage`) trains them too, and its saved state holds them.

    ``state_path``: after every epoch the training state (weights, optimiser, schedule, random
    generators, metrics) is saved there, and a later call with the same path resumes after the
    last saved epoch, to the weights an uninterrupted run would reach (an interrupted training
    loses at most the epoch under way). ``state_key`` names the data, model and recipe: a saved
    state of another key is not resumed from.

    ``amp``: mixed precision (float16 with loss scaling on CUDA, bfloat16 on the CPU). The model
    trains in channels-last memory format. ``num_workers``: DataLoader workers.
    ``seed``: initial weights are the caller's; this seeds shuffling and augmentation.

    The validation mAP is logged after every epoch. An image that cannot be decoded goes to
    ``bad`` (default policy: an error naming it); with the "skip" policy its batch goes on
    without it and it is recorded once.

    Under ``torchrun`` (see :mod:`wsss.distributed`) the model trains as DistributedDataParallel:
    each of the N processes takes ``batch_size / N`` images of every batch from a
    DistributedSampler, so the global batch and the learning rate stay as configured; the loss
    and the validation scores are gathered from every rank, and all ranks end with the same
    weights.
    """
    bad = bad or BadImages()
    settings.validate()
    device = torch.device(device)
    rank, world = distributed.rank(), distributed.world_size()
    _seed(seed, rank)
    loader, sampler = _training_loader(train_split, settings, device, num_workers, seed)
    held = model if objective is None else objective  # what a saved state holds
    objective = MultiLabelLoss(model) if objective is None else objective
    network = _trainable(objective, device, world, settings.batch_size)
    optimizer = make_optimizer(objective, settings)
    steps = _Steps(optimizer, settings, len(loader))
    amp = autocast_settings(amp, device)
    scaler = torch.amp.GradScaler(device.type, enabled=amp.get("dtype") == torch.float16)
    saved = _resumed(state_path, state_key, held, optimizer, loader, scaler, settings.epochs)
    steps.step, metrics = saved["step"], saved["metrics"]
    train_seconds, val_seconds = saved["train_seconds"], saved["val_seconds"]
    validate = functools.partial(_val_map, model, val_split, settings, device, bad, num_workers)
    for epoch in range(saved["epoch"] + 1, settings.epochs + 1):
        start = time.perf_counter()
        batches = _epoch_batches(loader, sampler, epoch, settings.epochs, rank)
        loss = _train_epoch(network, batches, steps, scaler, amp, device, bad)
        train_seconds += time.perf_counter() - start
        metrics = {"epoch": epoch, "train_loss": loss,
                   "seconds_per_epoch": round(train_seconds / epoch, 2)}  # fmt: skip
        last = epoch == settings.epochs  # its state is the checkpoint the caller saves
        due = val_split is not None and (epoch % settings.val_every == 0 or last)
        if due:
            metrics["val_map"], seconds = validate()
            val_seconds += seconds
        metrics["validation_seconds"] = round(val_seconds, 2)
        _log_epoch(metrics, settings.epochs)
        if state_path is not None and distributed.is_main() and not last:
            state = {"key": state_key, "epoch": epoch, "metrics": metrics,
                     "train_seconds": train_seconds, "val_seconds": val_seconds}  # fmt: skip
            save_training_state(state_path, state, held, optimizer, steps.step, loader, scaler)
    if world > 1:
        _share_skips(bad)
    model.eval()
    return metrics


def _seed(seed: int, rank: int) -> None:
    """Seed torch's, Python's and numpy's generators: augmentation differs per rank, the
    model's initial weights (torch's generator) do not."""
    torch.manual_seed(seed)
    random.seed(seed + rank)
    np.random.seed(seed + rank)


def _epoch_batches(loader, sampler, epoch: int, epochs: int, rank: int) -> tqdm:
    """The loader's batches of ``epoch`` (the distributed sampler's shuffle of that epoch), with
    a progress bar on rank 0."""
    if sampler is not None:
        sampler.set_epoch(epoch)
    return tqdm(loader, desc=f"train epoch {epoch}/{epochs}", unit="batch", leave=False,
                disable=rank > 0)  # fmt: skip


def _val_map(
    model: nn.Module,
    split: LabelledSplit,
    settings: TrainSettings,
    device: torch.device | str = "cpu",
    bad: BadImages | None = None,
    num_workers: int = 0,
) -> tuple[float, float]:
    """The mean average precision of ``model``'s scores on ``split`` (every rank's images), and
    the seconds it took."""
    start = time.perf_counter()
    scores, targets = predict_scores(model, split, settings, device, bad, num_workers)
    return average_precision(scores, targets).mean, time.perf_counter() - start


def _log_epoch(metrics: dict, epochs: int) -> None:
    val = f"  val mAP {metrics['val_map']:.4f}" if "val_map" in metrics else ""
    log.info("epoch %d/%d  loss %.4f%s", metrics["epoch"], epochs, metrics["train_loss"], val)


def _resumed(state_path, state_key, model, optimizer, loader, scaler, epochs: int) -> dict:
    """The saved state at ``state_path`` restored (see :func:`load_training_state`), or a
    fresh start's."""
    if state_path is not None and Path(state_path).is_file():
        saved = load_training_state(state_path, state_key, model, optimizer, loader, scaler)
        if saved is not None:
            log.info("resuming training after epoch %d of %d (%s)", saved["epoch"], epochs,
                     state_path)  # fmt: skip
            return saved
    return {"step": 0, "epoch": 0, "metrics": {}, "train_seconds": 0.0, "val_seconds": 0.0}


def _trainable(model: nn.Module, device: torch.device, world: int, batch: int) -> nn.Module:
    """``model`` on ``device`` in training mode and channels-last memory format (1.1x for a
    plain CNN to 2.3x for EfficientNet-Lite0 faster training on 2 CPU cores, and the fast path
    for AMP on CUDA); wrapped in DistributedDataParallel under ``torchrun``, whose ``world``
    processes share each ``batch``."""
    if batch % world:
        raise ConfigError(f"train.batch_size {batch} must be divisible by the {world} processes")
    model.to(device).train().to(memory_format=torch.channels_last)
    if world == 1:
        return model
    return DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None
    )


def _share_skips(bad: BadImages) -> None:
    """Every rank's skipped images, once each, in every rank's record."""
    for entries in distributed.all_gather_object(list(bad.skipped)):
        for entry in entries:
            if entry not in bad.skipped:
                bad.skipped.append(entry)


def save_training_state(
    path, state: dict, model, optimizer, step: int, loader, scaler=None
) -> None:
    """The state a resumed training needs to continue as if never stopped (atomic): ``state``
    (the caller's key, epoch, metrics), the weights, the optimiser, the step, the random
    generators (torch, numpy, Python's, the loader's) and the loss scaler's, if any."""
    save_torch(path, {
        **state, "model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
        "scaler": scaler.state_dict() if scaler is not None else {},
        "rng": {"torch": torch.get_rng_state(), "numpy": _numpy_state(),
                "python": random.getstate(), "loader": loader.generator.get_state()},
    })  # fmt: skip


def _numpy_state() -> dict:
    """numpy's generator state as tensors and numbers (what ``weights_only`` loading takes)."""
    kind, keys, position, has_gauss, gauss = np.random.get_state()
    return {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "position": position,
            "has_gauss": has_gauss, "gauss": gauss}  # fmt: skip


def _set_numpy_state(state: dict) -> None:
    keys = state["keys"].numpy().astype(np.uint32)
    np.random.set_state((state["kind"], keys, state["position"], state["has_gauss"],
                         state["gauss"]))  # fmt: skip


def load_training_state(path, key: str, model, optimizer, loader, scaler=None) -> dict | None:
    """What :func:`save_training_state` saved at ``path``, restored into the model, optimiser,
    generators (and scaler); None (with a warning) when it was saved under another ``key`` or
    cannot be read, and the training starts from its first epoch."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        if state.get("key") != key:
            log.warning("%s: saved by a training with other settings; not resumed", path)
            return None
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if scaler is not None and state["scaler"]:
            scaler.load_state_dict(state["scaler"])
    except Exception as exc:  # a damaged state file: say so, train from the start
        log.warning("%s: cannot resume from it (%s); training from the first epoch", path, exc)
        return None
    torch.set_rng_state(state["rng"]["torch"])
    _set_numpy_state(state["rng"]["numpy"])
    random.setstate(state["rng"]["python"])
    loader.generator.set_state(state["rng"]["loader"])
    return state


def _training_loader(split: LabelledSplit, settings: TrainSettings, device, num_workers, seed):
    """The shuffled, augmented training batches of this rank, and its DistributedSampler
    (None in one process)."""
    rank, world = distributed.rank(), distributed.world_size()
    dataset = ClassificationDataset(split, settings, train=True)
    drop_last = len(split) > settings.batch_size
    sampler = DistributedSampler(dataset, world, rank, True, seed, drop_last) if world > 1 else None
    loader = DataLoader(
        dataset,
        batch_size=settings.batch_size // world,
        shuffle=sampler is None,
        sampler=sampler,
        drop_last=drop_last,
        num_workers=num_workers,
        worker_init_fn=seed_worker,
        generator=torch.Generator().manual_seed(seed),
        persistent_workers=num_workers > 0,
        pin_memory=device.type == "cuda",
        collate_fn=usable_batch,
    )
    return loader, sampler


class _Steps:
    """The optimiser and its learning-rate schedule, one call per step."""

    def __init__(self, optimizer: torch.optim.Optimizer, settings: TrainSettings, per_epoch: int):
        self.optimizer, self.settings = optimizer, settings
        self.base_lrs = [g["lr"] for g in optimizer.param_groups]
        self.total, self.step = settings.epochs * per_epoch, 0
        self.warmup = round(settings.warmup_epochs * per_epoch)

    def next_learning_rate(self) -> None:
        factor = lr_factor(self.settings, self.step, self.total, self.warmup)
        for group, base in zip(self.optimizer.param_groups, self.base_lrs, strict=True):
            group["lr"] = base * factor
        self.step += 1


def _train_epoch(network: nn.Module, batches, steps: _Steps, scaler, amp: dict, device, bad):
    """One pass over the training batches; returns the mean loss over every rank's images."""
    world = distributed.world_size()
    optimizer = steps.optimizer
    running, seen = 0.0, 0
    for images, targets, unreadable in batches:
        for item in unreadable:
            bad.record(item.path, item.reason)
        steps.next_learning_rate()
        if not len(images):
            if world == 1:
                continue
            # Every rank must join the gradient all-reduce: contribute zero gradients.
            loss = sum(p.sum() for p in network.parameters() if p.requires_grad) * 0.0
        else:
            images = images.to(device, non_blocking=True)
            images = images.contiguous(memory_format=torch.channels_last)
            loss = network(images, targets.to(device), amp)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        running += loss.item() * len(images)
        seen += len(images)
        batches.set_postfix(loss=f"{running / max(seen, 1):.4f}")
    # all ranks score (and save) one model
    distributed.broadcast_buffers(network.module if world > 1 else network)
    totals = distributed.all_gather_object((running, seen))
    return sum(r for r, _ in totals) / max(1, sum(n for _, n in totals))
