"""Generation: run a classifier's maps over a split and write masks, COCO, overlays and metrics.

This is the loop behind ``python -m wsss.generate_masks``; it takes plain arguments, so it is
usable from Python without Hydra. It streams: per image, only the COCO records are kept.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from wsss import distributed
from wsss.cams import METHODS, CamMethod, cam_method, multiscale_cams, normalize_cams
from wsss.crf import CRFFailure, CRFSettings, default_workers, ordered_map, refine_or_fail
from wsss.data.folder import LabelledSplit, Sample
from wsss.data.images import load_image, save_label_map
from wsss.data.screen import BadImages
from wsss.errors import ConfigError, DataError
from wsss.evaluation import ConfusionMatrix, ThresholdSweep
from wsss.export import (
    INSTANCE_MODES,
    coco_annotations,
    overlay_panel,
    save_rgb,
)
from wsss.io import atomic_path, output_path, write_json
from wsss.masks import cam_to_label_map
from wsss.models.classifier import CAMClassifier
from wsss.records import (
    check_run_settings,
    has_record,
    merge_records,
    remove_partial_files,
    write_record,
)
from wsss.training import autocast_settings

log = logging.getLogger(__name__)


@dataclass
class GenerateSettings:
    """How maps are computed, thresholded and exported (plain values, no Hydra)."""

    method: str = "cam"
    scales: Sequence[float] = (1.0, 0.5, 1.5, 2.0)
    flip: bool = True
    #: dotted module name of the feature layer (null: the classifier's backbone)
    target_layer: str | None = None
    #: Score-CAM: masked images per forward pass, and the optional top-N channel shortcut
    score_batch_size: int = 16
    top_channels: int | None = None
    bg_threshold: float = 0.15
    fg_threshold: float | None = None
    batch_size: int = 8
    num_workers: int = 0
    overlays: int = 16
    save_cams: bool = False
    #: COCO export: polygons instead of RLE; one annotation per "class" or per "component"
    polygons: bool = False
    instances: str = "class"
    #: dense CRF refinement (None: none) and its worker processes (0: all cores)
    crf: CRFSettings | None = None
    crf_workers: int = 0
    #: images without labels get the classes the classifier gives at least this probability
    predict_labels: float | None = None
    #: "error": stop at an unusable image; "skip": leave it out and list it in skipped.json
    on_bad_image: str = "error"
    #: mixed precision for the maps (float16 on CUDA, bfloat16 on the CPU)
    amp: bool = False

    def validate(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"cam.method must be one of {METHODS}, got {self.method!r}")
        if self.score_batch_size < 1 or (self.top_channels is not None and self.top_channels < 1):
            raise ConfigError("cam.score_batch_size and cam.top_channels must be >= 1")
        if not self.scales or any(s <= 0 for s in self.scales):
            raise ConfigError(f"cam.scales must be positive, got {list(self.scales)}")
        if not 0.0 <= self.bg_threshold <= 1.0:
            raise ConfigError(f"mask.bg_threshold must be in [0, 1], got {self.bg_threshold}")
        if self.fg_threshold is not None and not self.bg_threshold <= self.fg_threshold <= 1.0:
            raise ConfigError(
                f"mask.fg_threshold must be in [bg_threshold, 1], got {self.fg_threshold}"
            )
        if self.crf is not None:
            self.crf.validate()
        if self.instances not in INSTANCE_MODES:
            raise ConfigError(
                f"export.instances must be one of {INSTANCE_MODES}, got {self.instances!r}"
            )
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.predict_labels is not None and not 0.0 < self.predict_labels < 1.0:
            raise ConfigError(f"predict_labels must be in (0, 1), got {self.predict_labels}")
        BadImages(self.on_bad_image)


@dataclass
class GenerationResult:
    num_images: int
    num_annotations: int
    seconds: float
    out_dir: Path
    #: scores of the masks written (after CRF when it ran)
    confusion: ConfusionMatrix | None = None
    sweep: ThresholdSweep | None = None
    outputs: dict[str, str] = field(default_factory=dict)
    #: scores of the threshold rule's masks before CRF (only when CRF ran)
    raw_confusion: ConfusionMatrix | None = None
    crf_failures: int = 0
    #: images left out as unusable (on_bad_image=skip), and images labelled by the classifier
    skipped: int = 0
    predicted_labels: int = 0


class _ImageReader(Dataset):
    """Loads (index, image, error) triples, so DataLoader workers can read ahead of the model;
    an unreadable image comes back as (index, None, reason) for the policy to decide."""

    def __init__(self, samples: Sequence[Sample]):
        self.samples = samples

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[int, np.ndarray | None, str | None]:
        try:
            return index, load_image(self.samples[index].image_path), None
        except DataError as exc:
            return index, None, str(exc)


def _same_size_batches(
    loader, batch_size: int, bad: BadImages, samples: Sequence[Sample]
) -> Iterator[list[tuple[int, np.ndarray]]]:
    """Group consecutive images of equal size into batches of at most ``batch_size``; an image
    that fails to decode goes to ``bad`` (which raises under the "error" policy)."""
    batch: list[tuple[int, np.ndarray]] = []
    for index, image, error in loader:
        if image is None:
            if batch and not bad.skip:  # finish the work before the error stops the run
                yield batch
                batch = []
            bad.record(samples[index].image_path, error)
            continue
        if batch and (len(batch) == batch_size or image.shape != batch[0][1].shape):
            yield batch
            batch = []
        batch.append((index, image))
    if batch:
        yield batch


def make_cam_method(model: CAMClassifier, settings: GenerateSettings) -> CamMethod:
    """The configured method bound to ``model``, as the test-time augmentation takes it."""
    extra = {}
    if settings.method == "scorecam":
        extra = {"batch_size": settings.score_batch_size, "top_channels": settings.top_channels}
    return cam_method(model, settings.method, target_layer=settings.target_layer, **extra)


@dataclass
class ImageMaps:
    """One image's normalised maps (N, H, W) for its classes ``labels`` and the threshold rule's
    label map. ``probabilities`` is set when the classifier chose the labels (one per label)."""

    index: int
    image: np.ndarray
    cams: np.ndarray
    label_map: np.ndarray
    labels: tuple[int, ...]
    probabilities: tuple[float, ...] | None = None


@torch.no_grad()
def _predicted_labels(
    model: CAMClassifier, images: torch.Tensor, threshold: float
) -> list[tuple[tuple[int, ...], tuple[float, ...]]]:
    """(classes, probabilities) with a sigmoid probability >= ``threshold``, per image."""
    probabilities = torch.sigmoid(model(images)).cpu()
    result = []
    for row in probabilities:
        classes = torch.nonzero(row >= threshold).flatten().tolist()
        result.append((tuple(classes), tuple(round(float(row[c]), 6) for c in classes)))
    return result


def image_maps(
    samples: Sequence[Sample],
    method: CamMethod,
    settings: GenerateSettings,
    device,
    model: CAMClassifier | None = None,
    bad: BadImages | None = None,
) -> Iterator[ImageMaps]:
    """Stream every usable image's maps and thresholded label map, in split order.

    Images without labels are labelled by ``model`` (``settings.predict_labels``); unreadable
    images go to ``bad`` (default: an error).
    """
    bad = bad or BadImages(settings.on_bad_image)
    loader = DataLoader(
        _ImageReader(samples),
        batch_size=None,
        num_workers=settings.num_workers,
        collate_fn=lambda x: x,
    )
    for batch in _same_size_batches(loader, settings.batch_size, bad, samples):
        images = torch.stack([torch.from_numpy(img).permute(2, 0, 1) for _, img in batch])
        images = images.to(device).float().div_(255)
        labels = [samples[i].labels for i, _ in batch]
        probabilities: list[tuple[float, ...] | None] = [None] * len(batch)
        unlabelled = [j for j, classes in enumerate(labels) if not classes]
        if unlabelled:
            if settings.predict_labels is None or model is None:
                sample = samples[batch[unlabelled[0]][0]]
                raise DataError(f"{sample.image_path}: no labels, and predict_labels is not set")
            predicted = _predicted_labels(model, images[unlabelled], settings.predict_labels)
            for j, (classes, probs) in zip(unlabelled, predicted, strict=True):
                labels[j], probabilities[j] = classes, probs
        targets = [list(classes) for classes in labels]
        with torch.autocast(images.device.type, **autocast_settings(settings.amp, images.device)):
            summed = multiscale_cams(method, images, targets, settings.scales, settings.flip)
        for j, ((index, image), cams) in enumerate(zip(batch, summed, strict=True)):
            cams = normalize_cams(cams).float().cpu().numpy()
            label_map = cam_to_label_map(
                cams, labels[j], settings.bg_threshold, settings.fg_threshold
            )
            yield ImageMaps(index, image, cams, label_map, labels[j], probabilities[j])


def _with_crf(
    records: Iterator[ImageMaps], settings: GenerateSettings
) -> Iterator[tuple[ImageMaps, np.ndarray | CRFFailure | None]]:
    """Pair each record with its CRF-refined label map (None without CRF), in order; the CRF
    runs in ``crf_workers`` processes while this process computes the next maps."""
    if settings.crf is None:
        for record in records:
            yield record, None
        return
    in_flight: deque[ImageMaps] = deque()

    def jobs():
        for record in records:
            in_flight.append(record)
            yield record.image, record.cams, record.labels, settings.crf

    workers = settings.crf_workers or default_workers()
    for refined in ordered_map(refine_or_fail, jobs(), workers):
        yield in_flight.popleft(), refined


def _fingerprint(model: CAMClassifier, split: LabelledSplit, settings: GenerateSettings) -> dict:
    """What determines a run's outputs: resuming with anything else changed is refused."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    fields = asdict(settings)
    for key in ("num_workers", "crf_workers", "overlays"):  # do not change any output
        fields.pop(key)
    return {
        "settings": json.loads(json.dumps(fields, default=str)),
        "model": digest.hexdigest()[:16],
        "classes": list(split.class_names),
        "images": [len(split), split.samples[0].image_id, split.samples[-1].image_id],
    }


def _image_scores(
    split: LabelledSplit, sample: Sample, record: ImageMaps, label_map: np.ndarray, crf: bool
) -> dict:
    """This image's contributions to the run's scores, as sparse confusion counts."""
    num_labels = len(split.class_names) + 1
    truth = split.ground_truth(sample, size=label_map.shape)
    masks = ConfusionMatrix(num_labels)
    masks.update(label_map, truth)
    sweep = ThresholdSweep(num_labels)
    sweep.update(record.cams, record.labels, truth)
    scores = {"masks": masks.to_sparse(), "sweep": sweep.to_sparse()}
    if crf:
        rule = ConfusionMatrix(num_labels)
        rule.update(record.label_map, truth)
        scores["threshold_rule"] = rule.to_sparse()
    return scores


def generate_pseudo_masks(
    model: CAMClassifier,
    split: LabelledSplit,
    out_dir: str | Path,
    settings: GenerateSettings,
    device: torch.device | str = "cpu",
    bad: BadImages | None = None,
) -> GenerationResult:
    """Write ``masks/``, ``annotations.json``, ``overlays/`` (and ``cams/``) under ``out_dir``.

    Maps are computed only for each image's labelled classes. When the split has ground-truth
    masks, the masks written are scored (``confusion``), and so are the threshold rule's masks
    before CRF (``raw_confusion``, only with CRF) and a sweep of the threshold. Unusable images
    stop the run or are listed in ``skipped.json`` (``settings.on_bad_image``); COCO image ids
    are positions in the split (from 1), whatever is skipped. ``bad`` may carry skips recorded
    earlier in the run (training).

    Resumable and shardable (see :mod:`wsss.records`): images that already have a record in
    ``out_dir`` (same settings) are not redone, and under ``torchrun`` each rank labels every
    world-size-th image; rank 0 then merges all records into the run's files.
    """
    settings.validate()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = torch.device(device)
    model = model.to(device).eval()
    method = make_cam_method(model, settings)
    bad = bad or BadImages(settings.on_bad_image)
    earlier_skips = list(bad.skipped)
    if distributed.is_main() and check_run_settings(out_dir, _fingerprint(model, split, settings)):
        remove_partial_files(out_dir)
    distributed.barrier()
    rank, world = distributed.rank(), distributed.world_size()
    mine = [s for i, s in enumerate(split.samples) if i % world == rank]
    pending = [s for s in mine if not has_record(out_dir, s.image_id)]
    if len(pending) < len(mine):
        log.info("resuming: %d of %d images already done", len(mine) - len(pending), len(mine))
    by_path = {str(s.image_path): s.image_id for s in pending}
    bad.on_skip = lambda path, reason: write_record(
        out_dir, by_path[str(path)], {"skipped": reason}
    )
    samples = bad.screen(replace(split, samples=tuple(pending))).samples if pending else ()
    positions = {s.image_id: i for i, s in enumerate(split.samples)}
    overlay_ids: list[str] = []
    if settings.overlays > 0:
        spread = np.linspace(0, len(split) - 1, min(settings.overlays, len(split)))
        overlay_ids = [split.samples[i].image_id for i in sorted(set(spread.round().astype(int)))]
    evaluate = split.has_masks
    for folder in ("masks", "overlays") + (("cams",) if settings.save_cams else ()):
        (out_dir / folder).mkdir(parents=True, exist_ok=True)

    start = time.perf_counter()
    bar = tqdm(total=len(samples), desc="generate masks", unit="img", disable=rank > 0)
    maps = image_maps(samples, method, settings, device, model, bad)
    for record, refined in _with_crf(maps, settings):
        sample, cams, image = samples[record.index], record.cams, record.image
        label_map, crf_failure = record.label_map, None
        if isinstance(refined, CRFFailure):
            log.warning(
                "CRF failed on %s (%s); keeping its unrefined mask",
                sample.image_path,
                refined.error,
            )
            crf_failure = refined.error
        elif refined is not None:
            label_map = refined
        with atomic_path(output_path(out_dir, "masks", sample.image_id, ".png", True)) as tmp:
            save_label_map(tmp, label_map)
        coco_id = positions[sample.image_id] + 1
        annotations = coco_annotations(
            label_map,
            cams,
            record.labels,
            coco_id,
            split.coco_category_ids,
            record.probabilities,
            polygons=settings.polygons,
            instances=settings.instances,
        )
        if settings.save_cams:
            cam_path = output_path(out_dir, "cams", sample.image_id, ".npz", True)
            with atomic_path(cam_path) as tmp, open(tmp, "wb") as f:
                np.savez_compressed(
                    f, cams=cams.astype(np.float16), classes=np.array(record.labels, np.int64)
                )
        if sample.image_id in overlay_ids:
            panel = overlay_panel(image, label_map, cams, title=sample.image_id)
            save_rgb(output_path(out_dir, "overlays", sample.image_id, ".png", True), panel)
        image_entry = {
            "id": coco_id,
            "file_name": sample.file_name,
            "width": int(image.shape[1]),
            "height": int(image.shape[0]),
        }
        # Written last: an image with a record is finished (a rerun will not redo it).
        write_record(
            out_dir,
            sample.image_id,
            {
                "image": image_entry,
                "annotations": annotations,
                "labels": list(record.labels),
                "predicted": record.probabilities is not None,
                "crf_failure": crf_failure,
                "scores": (
                    _image_scores(split, sample, record, label_map, settings.crf is not None)
                    if evaluate
                    else None
                ),
            },
        )
        bar.update(1)
    bar.close()
    seconds = time.perf_counter() - start
    bad.on_skip = None
    distributed.barrier()  # every rank's records are on disk
    if not distributed.is_main():
        return GenerationResult(len(samples), 0, seconds, out_dir)
    merged = merge_records(out_dir, split, overlay_ids, settings.crf is not None, earlier_skips)
    if merged.images == 0:
        raise DataError(f"{split.root}: none of the {len(split)} images could be used")
    result = GenerationResult(
        merged.images,
        merged.annotations,
        seconds,
        out_dir,
        merged.confusion,
        merged.sweep,
        merged.outputs,
        merged.raw_confusion,
        len(merged.crf_failures),
        len(merged.skipped),
        merged.predicted_labels,
    )
    if merged.confusion is not None:
        write_metrics(out_dir, result, split.class_names, settings)
    return result


def write_metrics(
    out_dir: Path, result: GenerationResult, class_names: Sequence[str], settings: GenerateSettings
) -> None:
    """Write ``metrics.json`` and ``threshold_sweep.png`` from an evaluated generation."""
    threshold_rule = result.raw_confusion or result.confusion
    metrics = {
        "masks_on_disk": result.confusion.summary(class_names),
        "fixed_threshold": {
            "bg_threshold": settings.bg_threshold,
            "fg_threshold": settings.fg_threshold,
            **threshold_rule.summary(class_names),
        },
        "crf": asdict(settings.crf) if settings.crf else None,
        "threshold_sweep": result.sweep.summary(),
        "images": result.num_images,
        "seconds": round(result.seconds, 2),
    }
    write_json(out_dir / "metrics.json", metrics)
    with atomic_path(out_dir / "threshold_sweep.png") as tmp:
        result.sweep.save_plot(tmp, fixed_threshold=settings.bg_threshold)
    result.outputs["metrics"] = str(out_dir / "metrics.json")
    result.outputs["sweep_plot"] = str(out_dir / "threshold_sweep.png")
