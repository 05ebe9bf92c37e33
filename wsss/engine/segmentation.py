"""Closing the loop: train a torchvision segmentation model on pseudo-masks, score it on the
ground truth.

Training targets come from one of three sources, all as (H, W) uint8 label maps (0 background,
1..K classes, 255 ignored by the loss):

* a ``generate_masks`` run's label PNGs (``masks/<id>.png``);
* the same run's ``annotations.json``, read through ``torchvision.datasets.CocoDetection`` (the
  COCO file is consumed as a COCO trainer would read it);
* the split's ground truth (the upper bound the pseudo-masks are measured against).

Evaluation runs the model on whole eval images and scores it with the confusion matrix that
``wsss.evaluate`` uses.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from wsss.data.coco import paint_instances
from wsss.data.images import load_image, load_label_map
from wsss.data.split import LabelledSplit, Sample
from wsss.engine.run_folder import RunFolder
from wsss.engine.training import load_training_state, make_optimizer, save_training_state
from wsss.errors import ConfigError, DataError
from wsss.export.report import Rejections
from wsss.masks import IGNORE
from wsss.metrics import ConfusionMatrix
from wsss.models.segmentation import SEGMENTATION_MODELS
from wsss.models.weights import IMAGENET_MEAN, IMAGENET_STD

log = logging.getLogger(__name__)

TARGET_SOURCES = ("masks", "coco", "ground_truth")


@dataclass
class SegmentationSettings:
    """The ``segmentation`` config group: model (a :data:`SEGMENTATION_MODELS` name),
    optimisation and augmentation."""

    model: str = "lraspp_mobilenet_v3_large"
    #: ImageNet weights for the backbone: null, a torchvision weight name, or a state-dict path
    backbone_weights: str | None = None
    epochs: int = 15
    batch_size: int = 16
    #: sgd (momentum; torchvision's segmentation reference) or adamw
    optimizer: str = "sgd"
    lr: float = 0.02
    #: the head's learning rate is ``lr * head_lr_mult`` (DeepLab and IRN's segmentation step
    #: train the new layers 10x faster than the pretrained backbone)
    head_lr_mult: float = 1.0
    momentum: float = 0.9
    weight_decay: float = 1e-4
    crop_size: int = 128
    scale_range: list[float] = field(default_factory=lambda: [0.75, 1.5])
    hflip: bool = True

    def validate(self) -> None:
        SEGMENTATION_MODELS.get(self.model)
        if self.epochs < 1 or self.batch_size < 1 or self.crop_size < 32:
            raise ConfigError("segmentation epochs and batch_size must be >= 1, crop_size >= 32")
        if self.optimizer not in ("sgd", "adamw"):
            raise ConfigError(f"segmentation.optimizer: sgd or adamw, not {self.optimizer!r}")
        if self.lr <= 0 or self.head_lr_mult <= 0:
            raise ConfigError("segmentation lr and head_lr_mult must be > 0")


# --------------------------------------------------------------------------------------------
# Training targets


class MaskTargets:
    """Targets read from a ``generate_masks`` run's label PNGs."""

    def __init__(self, run_dir: Path):
        self.run = RunFolder(run_dir)
        self.path = self.run.masks_dir
        if not self.path.is_dir():
            raise DataError(f"{run_dir}: no masks/ folder (is this a generate_masks run folder?)")

    def has(self, sample: Sample) -> bool:
        return self.run.mask(sample.image_id).is_file()

    def __call__(self, sample: Sample, size: tuple[int, int]) -> np.ndarray:
        return load_label_map(self.run.mask(sample.image_id), size)


class GroundTruthTargets:
    """The split's own ground truth (the upper bound)."""

    def __init__(self, split: LabelledSplit):
        if not split.has_masks:
            raise DataError(f"{split.root}: the training split has no ground-truth masks")
        self.split = split
        self.path = split.root

    def has(self, sample: Sample) -> bool:
        return True

    def __call__(self, sample: Sample, size: tuple[int, int]) -> np.ndarray:
        return self.split.ground_truth(sample, size)


class CocoTargets:
    """Targets painted from a COCO file read by ``torchvision.datasets.CocoDetection``.

    Painted as the COCO reader paints ground truth (:func:`wsss.data.coco.paint_instances`);
    category ids map back to class indices through the file's categories, matched by name to
    the dataset's classes.
    """

    def __init__(self, annotations: Path, images_root: Path, class_names: tuple[str, ...]):
        from torchvision.datasets import CocoDetection

        if not annotations.is_file():
            raise DataError(f"{annotations}: COCO annotations file not found")
        self.coco = CocoDetection(str(images_root), str(annotations))
        names = {c["id"]: c["name"] for c in self.coco.coco.loadCats(self.coco.coco.getCatIds())}
        unknown = sorted(set(names.values()) - set(class_names))
        if unknown:
            raise DataError(f"{annotations}: categories {unknown} are not dataset classes")
        self.value = {cid: class_names.index(name) + 1 for cid, name in names.items()}
        self.index = {
            Path(self.coco.coco.imgs[i]["file_name"]).as_posix(): n
            for n, i in enumerate(self.coco.ids)
        }
        self.path = annotations

    def has(self, sample: Sample) -> bool:
        return sample.file_name in self.index

    def __call__(self, sample: Sample, size: tuple[int, int]) -> np.ndarray:
        if sample.file_name not in self.index:
            raise DataError(f"{self.path}: no image {sample.file_name!r}")
        coco_index = self.index[sample.file_name]
        info = self.coco.coco.imgs[self.coco.ids[coco_index]]
        if (info["height"], info["width"]) != tuple(size):
            raise DataError(f"{self.path}: {sample.file_name} is annotated at another size")
        # Exactly what a COCO trainer gets: (image, annotations) from CocoDetection. Its image is
        # not used (wsss's reader applies EXIF orientation, as the masks were made on that).
        _, annotations = self.coco[coco_index]
        instances = [
            (self.value[a["category_id"]], bool(a.get("iscrowd", 0)), a["segmentation"])
            for a in annotations
        ]
        return paint_instances(instances, *size, self.path)


# --------------------------------------------------------------------------------------------
# Data


def _normalise(image: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float() / 255
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    return (x - mean) / torch.tensor(IMAGENET_STD).view(3, 1, 1)


class SegmentationDataset(Dataset):
    """(image, target) pairs with random scale, flip and a crop padded with ignored pixels."""

    def __init__(self, samples, targets, settings: SegmentationSettings):
        self.samples, self.targets, self.settings = samples, targets, settings

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        sample = self.samples[index]
        image = load_image(sample.image_path)
        target = self.targets(sample, image.shape[:2])
        x = _normalise(image)[None]
        y = torch.from_numpy(target.astype(np.int64))[None, None].float()
        scale = random.uniform(*self.settings.scale_range)
        size = [max(8, round(d * scale)) for d in image.shape[:2]]
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)[0]
        y = F.interpolate(y, size=size, mode="nearest")[0, 0].long()
        if self.settings.hflip and random.random() < 0.5:
            x, y = x.flip(-1), y.flip(-1)
        crop = self.settings.crop_size
        pad_h, pad_w = max(0, crop - size[0]), max(0, crop - size[1])
        x = F.pad(x, (0, pad_w, 0, pad_h), value=0.0)  # 0 is the mean colour after normalising
        y = F.pad(y, (0, pad_w, 0, pad_h), value=IGNORE)
        top = random.randint(0, x.shape[1] - crop)
        left = random.randint(0, x.shape[2] - crop)
        return x[:, top : top + crop, left : left + crop], y[top : top + crop, left : left + crop]


def training_targets(kind: str, split: LabelledSplit, pseudo_masks: str | Path | None):
    """The targets of ``split``'s images: a run's label PNGs (``masks``), its COCO file
    (``coco``), or the split's own masks (``ground_truth``)."""
    if kind not in TARGET_SOURCES:
        raise ConfigError(f"targets must be one of {TARGET_SOURCES}, got {kind!r}")
    if kind == "ground_truth":
        return GroundTruthTargets(split)
    if not pseudo_masks:
        raise ConfigError(
            "pseudo_masks=<generate_masks run folder> is required (or targets=ground_truth)"
        )
    run = RunFolder(Path(pseudo_masks).expanduser())
    if kind == "coco":
        return CocoTargets(run.annotations, split.images_root, split.class_names)
    return MaskTargets(run.root)


class ReviewedTargets:
    """``targets`` with a review applied: rejected images are left out of the split (see
    :meth:`split`), and a rejected class's pixels are ignored (255) in its image's targets."""

    def __init__(self, targets, rejections: Rejections, class_names: tuple[str, ...]):
        self.targets, self.rejections, self.class_names = targets, rejections, class_names
        self.path = targets.path

    def split(self, split: LabelledSplit) -> LabelledSplit:
        kept = tuple(s for s in split.samples if s.image_id not in self.rejections.images)
        log.info("review: %d of %d training images rejected", len(split) - len(kept), len(split))
        return replace(split, samples=kept)

    def has(self, sample: Sample) -> bool:
        return self.targets.has(sample)

    def __call__(self, sample: Sample, size: tuple[int, int]) -> np.ndarray:
        target = self.targets(sample, size)
        for value, name in enumerate(self.class_names, start=1):
            if self.rejections.rejects(sample.image_id, name):
                target[target == value] = IGNORE
        return target


def check_mask_targets(split: LabelledSplit, targets) -> None:
    """Fail before training if any image of ``split`` has no target."""
    missing = [s.file_name for s in split.samples if not targets.has(s)]
    if missing:
        raise DataError(
            f"{len(missing)} of {len(split)} training images have no target in {targets.path} "
            f"(first: {missing[:3]}); was generate_masks run on this split (split=train)?"
        )


# --------------------------------------------------------------------------------------------
# Training and evaluation


def train_segmentation(
    model: nn.Module,
    samples: list[Sample],
    targets: Callable[[Sample, tuple[int, int]], np.ndarray],
    settings: SegmentationSettings,
    device: torch.device | str = "cpu",
    *,
    num_workers: int = 0,
    seed: int = 0,
    state_path: Path | None = None,
    state_key: str = "",
) -> dict[str, float]:
    """Train ``model`` in place (SGD or AdamW, poly schedule); 255 target pixels are ignored.
    ``seed`` seeds shuffling and augmentation (the initial weights are the caller's).

    ``state_path``: after every epoch but the last the training state is saved there, and a
    later call with the same path and ``state_key`` resumes after the last saved epoch, to the
    weights an uninterrupted run reaches (see :func:`~wsss.engine.training.train_classifier`)."""

    settings.validate()
    device = torch.device(device)
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed)
    loader = DataLoader(
        SegmentationDataset(samples, targets, settings),
        batch_size=settings.batch_size,
        shuffle=True,
        drop_last=len(samples) > settings.batch_size,
        num_workers=num_workers,
        generator=torch.Generator().manual_seed(seed),
    )
    model.to(device).train()
    optimizer = make_optimizer(model, settings)
    base_lrs = [group["lr"] for group in optimizer.param_groups]
    total, step, loss_value, first = settings.epochs * len(loader), 0, math.nan, 1
    if state_path is not None and Path(state_path).is_file():
        saved = load_training_state(state_path, state_key, model, optimizer, loader)
        if saved is not None:
            step, first, loss_value = saved["step"], saved["epoch"] + 1, saved["train_loss"]
            log.info("resuming segmentation training after epoch %d of %d (%s)",
                     saved["epoch"], settings.epochs, state_path)  # fmt: skip
    for epoch in range(first, settings.epochs + 1):
        running, seen = 0.0, 0
        bar = tqdm(loader, desc=f"segmentation epoch {epoch}/{settings.epochs}", leave=False)
        for images, labels in bar:
            for group, base in zip(optimizer.param_groups, base_lrs, strict=True):
                group["lr"] = base * (1 - step / total) ** 0.9
            logits = model(images.to(device))["out"]
            loss = F.cross_entropy(logits, labels.to(device), ignore_index=IGNORE)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            running += loss.item() * len(images)
            seen += len(images)
            bar.set_postfix(loss=f"{running / seen:.4f}")
        loss_value = running / max(seen, 1)
        log.info("segmentation epoch %d/%d  loss %.4f", epoch, settings.epochs, loss_value)
        if state_path is not None and epoch < settings.epochs:
            state = {"key": state_key, "epoch": epoch, "train_loss": loss_value}
            save_training_state(state_path, state, model, optimizer, step, loader)
    model.eval()
    return {"epochs": settings.epochs, "train_loss": loss_value}


@torch.no_grad()
def evaluate_segmentation(
    model: nn.Module, split: LabelledSplit, device: torch.device | str = "cpu"
) -> ConfusionMatrix:
    """Predict every eval image whole and score it against the split's ground truth."""
    if not split.has_masks:
        raise DataError(f"{split.root}: the eval split has no ground truth to score against")
    model.to(device).eval()
    confusion = ConfusionMatrix(len(split.class_names) + 1)
    for sample in tqdm(split.samples, desc="evaluate segmentation", unit="img", leave=False):
        image = load_image(sample.image_path)
        logits = model(_normalise(image)[None].to(device))["out"]
        prediction = logits.argmax(1)[0].cpu().numpy().astype(np.uint8)
        confusion.update(prediction, split.ground_truth(sample, image.shape[:2]))
    return confusion
