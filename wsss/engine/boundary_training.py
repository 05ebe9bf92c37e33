"""Training IRN's boundary network on the CRF seeds of a ``generate_masks`` run.

The seeds are label maps with confident foreground, confident background and uncertain (255)
pixels: a run with ``crf=dense`` in label mode makes them. Pixel pairs within ``radius`` (at
stride 4) of the same seed class should have affinity 1, pairs of different classes 0, and
uncertain pixels say nothing. The affinity of a pair is ``1 - max B`` along the line between
them, so the loss teaches the boundary map B where class boundaries lie (IRN):
``(mean -log a over background pairs + mean -log a over foreground pairs) / 2
+ mean -log(1 - a) over pairs of different classes``, halved. The backbone stays frozen.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from tqdm import tqdm

from wsss import distributed
from wsss.data.images import load_image
from wsss.data.split import LabelledSplit, Sample
from wsss.errors import ConfigError
from wsss.masks.random_walk import path_affinities
from wsss.masks.threshold import IGNORE
from wsss.models import CAMClassifier
from wsss.models.boundary import STRIDE, BoundaryNet

log = logging.getLogger(__name__)


@dataclass
class AffinitySettings:
    """How the boundary network is trained (the ``affinity`` config group)."""

    epochs: int = 3
    batch_size: int = 8
    lr: float = 1e-3  # AdamW, cosine schedule; the heads are small and start from scratch
    weight_decay: float = 1e-4
    crop_size: int = 256
    scale_range: list[float] = field(default_factory=lambda: [0.7, 1.3])
    hflip: bool = True
    #: pairs within this many stride-4 pixels teach the boundaries (IRN: 10)
    radius: int = 10
    #: channels of each level's head
    width: int = 32
    #: also fine-tune the backbone for boundaries (IRN keeps it frozen), at lr x this factor;
    #: its batch-norm statistics stay frozen. 0: frozen
    backbone_lr_mult: float = 0.0

    def validate(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise ConfigError("affinity.epochs, affinity.batch_size >= 1 and affinity.lr > 0")
        if self.crop_size < 32 or self.crop_size % STRIDE:
            raise ConfigError(f"affinity.crop_size must be a multiple of 4 >= 32: {self.crop_size}")
        if self.radius < 2 or self.width < 4 or self.width % 4:
            raise ConfigError("affinity.radius >= 2, affinity.width a multiple of 4")
        if self.backbone_lr_mult < 0:
            raise ConfigError(f"affinity.backbone_lr_mult must be >= 0: {self.backbone_lr_mult}")
        lo, hi = self.scale_range
        if not 0 < lo <= hi:
            raise ConfigError(f"affinity.scale_range must satisfy 0 < low <= high: {lo, hi}")


class SeedCrops(Dataset):
    """(image crop, seed labels at stride 4) pairs: random scale, flip and crop; the label map is
    padded with 255 (says nothing) where the crop overhangs the image."""

    def __init__(self, samples, seeds: Callable[[Sample, tuple], np.ndarray], s: AffinitySettings):
        self.samples, self.seeds, self.settings = samples, seeds, s

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        sample = self.samples[index]
        image = load_image(sample.image_path)
        labels = self.seeds(sample, image.shape[:2])
        x = torch.from_numpy(image).permute(2, 0, 1).float()[None] / 255
        y = torch.from_numpy(labels.astype(np.float32))[None, None]
        scale = random.uniform(*self.settings.scale_range)
        size = [max(STRIDE, round(d * scale)) for d in image.shape[:2]]
        x = F.interpolate(x, size, mode="bilinear", align_corners=False)[0]
        y = F.interpolate(y, size, mode="nearest")[0, 0]
        if self.settings.hflip and random.random() < 0.5:
            x, y = x.flip(-1), y.flip(-1)
        crop = self.settings.crop_size
        canvas_x = torch.zeros(3, crop, crop)
        canvas_y = torch.full((crop, crop), float(IGNORE))
        # the crop's top-left corner: inside a larger image, or a random placement of a smaller
        top, left = (random.randint(min(0, n - crop), max(0, n - crop)) for n in size)
        rows = slice(max(0, top), min(size[0], top + crop))
        cols = slice(max(0, left), min(size[1], left + crop))
        into = (
            slice(rows.start - top, rows.stop - top),
            slice(cols.start - left, cols.stop - left),
        )
        canvas_x[:, into[0], into[1]] = x[:, rows, cols]
        canvas_y[into] = y[rows, cols]
        return canvas_x, canvas_y[STRIDE // 2 :: STRIDE, STRIDE // 2 :: STRIDE].long()


def affinity_loss(
    boundary: torch.Tensor, labels: torch.Tensor, radius: int
) -> tuple[torch.Tensor, dict[str, float]]:
    """IRN's loss of a boundary map (N, 1, h, w) against seed labels (N, h, w)."""
    affinity, offsets = path_affinities(boundary, radius)
    padded = F.pad(labels, (radius, radius, radius, radius), value=IGNORE)
    height, width = labels.shape[1:]
    targets = torch.stack(
        [padded[:, radius + dy : radius + dy + height, radius + dx : radius + dx + width]
         for dy, dx in offsets],
        dim=1,
    )  # fmt: skip
    source = labels[:, None].expand_as(targets)
    valid = (source != IGNORE) & (targets != IGNORE)
    same = valid & (source == targets)
    eps = 1e-5

    def mean(values: torch.Tensor, where: torch.Tensor) -> torch.Tensor:
        return (values * where).sum() / where.sum().clamp_min(1)

    bg = mean(-torch.log(affinity + eps), same & (source == 0))
    fg = mean(-torch.log(affinity + eps), same & (source > 0))
    neg = mean(-torch.log(1 + eps - affinity), valid & ~same)
    loss = ((bg + fg) / 2 + neg) / 2
    parts = {"bg_pos": float(bg.detach()), "fg_pos": float(fg.detach()), "neg": float(neg.detach())}
    return loss, parts


def train_boundary_net(
    classifier: CAMClassifier,
    split: LabelledSplit,
    seeds: Callable[[Sample, tuple[int, int]], np.ndarray],
    settings: AffinitySettings,
    device: torch.device | str = "cpu",
    *,
    num_workers: int = 0,
    seed: int = 0,
) -> tuple[BoundaryNet, dict]:
    """Train a :class:`BoundaryNet` on ``classifier``'s frozen backbone and the ``seeds`` of the
    split's images. Under ``torchrun`` the heads train data-parallel, each rank taking
    ``batch_size / N`` images of every batch, and every rank ends with the same weights."""
    settings.validate()
    device = torch.device(device)
    rank, world = distributed.rank(), distributed.world_size()
    if settings.batch_size % world:
        raise ConfigError(f"affinity.batch_size must be divisible by the {world} processes")
    torch.manual_seed(seed)
    random.seed(seed + rank)
    np.random.seed(seed + rank)
    # channels-last: the frozen backbone's convolutions run 2-3x faster so on a CPU (oneDNN)
    net = BoundaryNet(classifier, settings.width, train_backbone=settings.backbone_lr_mult > 0)
    net = net.to(device).to(memory_format=torch.channels_last)
    dataset = SeedCrops(list(split.samples), seeds, settings)
    sampler = DistributedSampler(dataset, world, rank, True, seed) if world > 1 else None
    loader = DataLoader(
        dataset,
        batch_size=settings.batch_size // world,
        shuffle=sampler is None,
        sampler=sampler,
        drop_last=len(dataset) > settings.batch_size,
        num_workers=num_workers,
        generator=torch.Generator().manual_seed(seed),
    )
    heads = [p for name, p in net.named_parameters() if not name.startswith("classifier.")]
    groups = [{"params": heads, "lr_mult": 1.0}]
    if settings.backbone_lr_mult > 0:
        backbone = [p for p in net.classifier.backbone.parameters() if p.requires_grad]
        groups.append({"params": backbone, "lr_mult": settings.backbone_lr_mult})
    model = DistributedDataParallel(net) if world > 1 else net
    optimizer = torch.optim.AdamW(groups, lr=settings.lr, weight_decay=settings.weight_decay)
    total, step = settings.epochs * len(loader), 0
    metrics: dict = {}
    start = time.perf_counter()
    for epoch in range(1, settings.epochs + 1):
        if sampler is not None:
            sampler.set_epoch(epoch)
        net.train()
        running, parts_sum, seen = 0.0, {}, 0
        bar = tqdm(loader, desc=f"affinity epoch {epoch}/{settings.epochs}", leave=False,
                   disable=rank > 0)  # fmt: skip
        for images, labels in bar:
            for group in optimizer.param_groups:
                cosine = 0.5 * (1 + math.cos(math.pi * step / max(total, 1)))
                group["lr"] = settings.lr * group["lr_mult"] * cosine
            step += 1
            boundary = model(images.to(device).contiguous(memory_format=torch.channels_last))
            loss, parts = affinity_loss(boundary, labels.to(device), settings.radius)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            running += loss.item() * len(images)
            seen += len(images)
            for k, v in parts.items():
                parts_sum[k] = parts_sum.get(k, 0.0) + v * len(images)
            bar.set_postfix(loss=f"{running / seen:.4f}")
        totals = distributed.all_gather_object((running, seen))
        metrics = {
            "epoch": epoch,
            "loss": sum(r for r, _ in totals) / max(1, sum(n for _, n in totals)),
            **{k: v / max(seen, 1) for k, v in parts_sum.items()},
            "seconds": round(time.perf_counter() - start, 1),
        }
        log.info("affinity epoch %d/%d  loss %.4f", epoch, settings.epochs, metrics["loss"])
    net.eval()
    return net, metrics
