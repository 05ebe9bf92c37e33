"""The classifier's training images: decoded, augmented (crops, flips, colour jitter) and
batched, an unreadable image reported rather than ending the epoch."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, default_collate
from torchvision.transforms import ColorJitter

from wsss.data.images import load_image
from wsss.data.split import LabelledSplit
from wsss.errors import DataError
from wsss.models.weights import IMAGENET_MEAN

if TYPE_CHECKING:
    from wsss.engine.training import TrainSettings


def multi_hot(labels: tuple[int, ...], num_classes: int) -> torch.Tensor:
    target = torch.zeros(num_classes)
    target[list(labels)] = 1.0
    return target


def _pad_to(image: torch.Tensor, size: int, offset: tuple[int, int]) -> torch.Tensor:
    """Place ``image`` (3, h, w) at ``offset`` on a size x size canvas of the ImageNet mean
    colour, which is zero after normalisation, so padding carries no signal."""
    canvas = torch.tensor(IMAGENET_MEAN).view(3, 1, 1).expand(3, size, size).clone()
    top, left = offset
    canvas[:, top : top + image.shape[1], left : left + image.shape[2]] = image
    return canvas


class ClassificationDataset(Dataset):
    """(image, multi-hot target) pairs. ``train=True``: a random crop (``settings.crop``), flip
    and colour jitter; otherwise the image is fitted into the crop (aspect kept, padded)."""

    def __init__(self, split: LabelledSplit, settings: TrainSettings, train: bool):
        self.split, self.settings, self.train = split, settings, train
        self.num_classes = len(split.class_names)
        j = settings.color_jitter
        self.jitter = ColorJitter(j, j, j, min(j / 3, 0.5)) if train and j > 0 else None

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, index: int):
        sample = self.split.samples[index]
        try:
            image = Image.fromarray(load_image(sample.image_path))
        except DataError as exc:  # the loop's BadImages policy decides (see usable_batch)
            return _Unreadable(str(sample.image_path), str(exc))
        size = self.settings.crop_size
        if not self.train:
            scale = size / max(image.size)
            w, h = max(1, round(image.width * scale)), max(1, round(image.height * scale))
            x = _to_tensor(image.resize((w, h), Image.BILINEAR))
            return _pad_to(x, size, ((size - h) // 2, (size - w) // 2)), self._target(sample)
        if self.settings.crop == "resized":
            top, left, h, w = _resized_crop_box(image.height, image.width, self.settings)
            image = image.resize((size, size), Image.BILINEAR, box=(left, top, left + w, top + h))
        else:
            # Rescale, then a random crop where larger than the crop, random placement where
            # smaller; only the crop is resampled.
            scale = random.uniform(*self.settings.scale_range)
            w, h = max(1, round(image.width * scale)), max(1, round(image.height * scale))
            top, left = random.randint(0, max(0, h - size)), random.randint(0, max(0, w - size))
            right = min((left + min(w, size)) / scale, image.width)  # (w was rounded)
            bottom = min((top + min(h, size)) / scale, image.height)
            box = (left / scale, top / scale, right, bottom)
            image = image.resize((min(w, size), min(h, size)), Image.BILINEAR, box=box)
        x = _to_tensor(image)
        if self.settings.hflip and random.random() < 0.5:
            x = x.flip(-1)
        if self.jitter is not None:
            x = self.jitter(x)
        offset = (random.randint(0, size - x.shape[1]), random.randint(0, size - x.shape[2]))
        return _pad_to(x, size, offset), self._target(sample)

    def _target(self, sample) -> torch.Tensor:
        return multi_hot(sample.labels, self.num_classes)


def _to_tensor(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.array(image)).permute(2, 0, 1).float() / 255


def _resized_crop_box(height: int, width: int, s: TrainSettings) -> tuple[int, int, int, int]:
    """(top, left, h, w) of a random crop covering an ``area_range`` share of the image with an
    aspect ratio between 3/4 and 4/3 (the whole image if none fits in 10 tries)."""
    area = height * width
    for _ in range(10):
        target = area * random.uniform(*s.area_range)
        ratio = math.exp(random.uniform(math.log(3 / 4), math.log(4 / 3)))
        w = round(math.sqrt(target * ratio))
        h = round(math.sqrt(target / ratio))
        if 0 < w <= width and 0 < h <= height:
            return random.randint(0, height - h), random.randint(0, width - w), h, w
    return 0, 0, height, width


@dataclass(frozen=True)
class _Unreadable:
    path: str
    reason: str


def usable_batch(items: list) -> tuple[torch.Tensor, torch.Tensor, list[_Unreadable]]:
    """Collate the readable (image, target) pairs; return the unreadable ones beside them."""
    bad = [item for item in items if isinstance(item, _Unreadable)]
    good = [item for item in items if not isinstance(item, _Unreadable)]
    if not good:
        return torch.empty(0), torch.empty(0), bad
    images, targets = default_collate(good)
    return images, targets, bad


def seed_worker(worker_id: int) -> None:
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)
