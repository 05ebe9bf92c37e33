"""Generation: run a :class:`~wsss.masks.MaskPredictor` over a split and write masks, COCO,
overlays and metrics into a run folder (layout: :mod:`wsss.engine.run_folder`).

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
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from wsss import distributed
from wsss.data.images import load_image, save_label_map
from wsss.data.screen import BadImages
from wsss.data.split import LabelledSplit, Sample
from wsss.engine.parallel import default_workers, ordered_map
from wsss.engine.run_folder import RunFolder, RunLock
from wsss.errors import ConfigError, DataError, WsssError
from wsss.export import (
    ExportSettings,
    coco_annotations,
    contact_sheet,
    overlay_panel,
    review_thumbnail,
    save_jpeg,
    save_rgb,
    write_coco,
)
from wsss.export.report import write_report
from wsss.io import atomic_path, write_json
from wsss.masks import MaskPrediction, MaskPredictor, refine_or_fail
from wsss.masks.predictor import with_refinement
from wsss.masks.quality import estimate, region_features
from wsss.metrics import ConfusionMatrix, ThresholdSweep

log = logging.getLogger(__name__)


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
    #: labelled images whose mask holds no pixel of their classes (tiny or degenerate images)
    empty_masks: int = 0
    #: the review page's entries (export.quality)
    review: list[dict] = field(default_factory=list)


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


@dataclass
class _Item:
    """One image on its way through the loop."""

    index: int
    image: np.ndarray
    prediction: MaskPrediction


def predictions(
    predictor: MaskPredictor,
    samples: Sequence[Sample],
    batch_size: int = 8,
    num_workers: int = 0,
    bad: BadImages | None = None,
) -> Iterator[_Item]:
    """Stream every usable image's prediction (CRF not yet run), in split order. Unreadable
    images go to ``bad`` (default: an error)."""
    bad = bad or BadImages()
    loader = DataLoader(
        _ImageReader(samples), batch_size=None, num_workers=num_workers, collate_fn=lambda x: x
    )
    for batch in _same_size_batches(loader, batch_size, bad, samples):
        images = [image for _, image in batch]
        labels = [samples[i].labels for i, _ in batch]
        names = [samples[i].image_path for i, _ in batch]
        found = predictor.predict_batch(images, labels, crf=False, names=names)
        for (index, image), prediction in zip(batch, found, strict=True):
            yield _Item(index, image, prediction)


def _with_crf(items: Iterator[_Item], predictor: MaskPredictor) -> Iterator[_Item]:
    """Each item with its CRF-refined label map, in order; the CRF runs in ``crf.workers``
    processes while this process computes the next maps."""
    if predictor.crf is None:
        yield from items
        return
    in_flight: deque[_Item] = deque()

    def jobs():
        for item in items:
            in_flight.append(item)
            yield predictor.crf_job(item.image, item.prediction)

    workers = predictor.crf.workers or default_workers()
    for refined in ordered_map(refine_or_fail, jobs(), workers):
        item = in_flight.popleft()
        with_refinement(item.prediction, refined)
        yield item


def save_cams(path: Path, prediction: MaskPrediction) -> None:
    """Write an image's normalised maps (float16) and their classes, atomically (read back by
    :func:`wsss.engine.evaluation.load_cams`)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(
            f,
            cams=prediction.cams.astype(np.float16),
            classes=np.array(prediction.labels, np.int64),
        )


def model_digest(model: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def _fingerprint(predictor: MaskPredictor, split: LabelledSplit, export: ExportSettings) -> dict:
    """What determines a run's outputs: resuming with anything else changed is refused."""
    crf = asdict(predictor.crf) if predictor.crf else None
    if crf:
        crf.pop("workers")  # changes no output
    exported = asdict(export)
    exported.pop("overlays")
    settings = {
        "cam": asdict(predictor.cam),
        "refine": asdict(predictor.refiner) if predictor.refiner else None,
        "mask": asdict(predictor.mask),
        "crf": crf,
        "export": exported,
        "predict_labels": predictor.label_threshold,
        "amp": predictor.amp,
    }
    return {
        "settings": json.loads(json.dumps(settings, default=str)),
        "model": model_digest(predictor.model),
        "classes": list(split.class_names),
        "images": [len(split), split.samples[0].image_id, split.samples[-1].image_id],
    }


def _image_scores(split: LabelledSplit, sample: Sample, prediction: MaskPrediction) -> dict:
    """This image's contributions to the run's scores, as sparse confusion counts."""
    num_labels = len(split.class_names) + 1
    mask = prediction.mask
    truth = split.ground_truth(sample, size=mask.shape)
    masks = ConfusionMatrix(num_labels)
    masks.update(mask, truth)
    sweep = ThresholdSweep(num_labels)
    sweep.update(prediction.cams, prediction.labels, truth)
    scores = {"masks": masks.to_sparse(), "sweep": sweep.to_sparse()}
    if prediction.refined is not None or prediction.crf_failure is not None:
        rule = ConfusionMatrix(num_labels)
        rule.update(prediction.label_map, truth)
        scores["threshold_rule"] = rule.to_sparse()
    return scores


def _write_image(
    folder: RunFolder,
    split: LabelledSplit,
    sample: Sample,
    item: _Item,
    predictor: MaskPredictor,
    export: ExportSettings,
    coco_id: int,
    overlay: bool,
) -> None:
    """Write one image's outputs, its record last: an image with a record is finished (a rerun
    does not redo it)."""
    prediction, image = item.prediction, item.image
    if prediction.crf_failure is not None:
        log.warning(
            "CRF failed on %s (%s); keeping its unrefined mask",
            sample.image_path,
            prediction.crf_failure,
        )
    mask = prediction.mask
    empty = bool(prediction.labels) and not np.isin(mask, np.add(prediction.labels, 1)).any()
    if empty:
        log.warning(
            "%s (%dx%d): labelled %s, but its mask holds none of them",
            sample.image_path,
            image.shape[1],
            image.shape[0],
            [split.class_names[c] for c in prediction.labels],
        )
    with atomic_path(folder.mask(sample.image_id, create=True)) as tmp:
        save_label_map(tmp, mask)
    quality = None
    if export.quality:
        features = region_features(
            predictor.model, image, prediction.cams, prediction.labels, mask, predictor.device
        )
        quality = {
            "image": float(np.mean([estimate(f) for f in features.values()])) if features else 0.0,
            "classes": {
                split.class_names[c]: {**f, "estimate": estimate(f)} for c, f in features.items()
            },
        }
        save_jpeg(folder.thumb(sample.image_id, create=True), review_thumbnail(image, mask))
    annotations = coco_annotations(
        mask,
        prediction.cams,
        prediction.labels,
        coco_id,
        split.coco_category_ids,
        prediction.probabilities,
        polygons=export.polygons,
        instances=export.instances,
        quality={c: estimate(f) for c, f in features.items()} if quality else None,
    )
    if export.save_cams:
        save_cams(folder.cams(sample.image_id, create=True), prediction)
    if overlay:
        panel = overlay_panel(image, mask, prediction.cams, title=sample.image_id)
        save_rgb(folder.overlay(sample.image_id, create=True), panel)
    image_entry = {
        "id": coco_id,
        "file_name": sample.file_name,
        "width": int(image.shape[1]),
        "height": int(image.shape[0]),
    }
    folder.write_record(
        sample.image_id,
        {
            "image": image_entry,
            "annotations": annotations,
            "labels": list(prediction.labels),
            "probabilities": list(prediction.probabilities) if prediction.probabilities else None,
            "predicted": prediction.probabilities is not None,
            "crf_failure": prediction.crf_failure,
            "empty_mask": empty,
            "quality": quality,
            "scores": _image_scores(split, sample, prediction) if split.has_masks else None,
        },
    )


def _overlay_ids(split: LabelledSplit, count: int) -> list[str]:
    """Ids of ``count`` images spread evenly over the split."""
    if count <= 0:
        return []
    spread = np.linspace(0, len(split) - 1, min(count, len(split)))
    return [split.samples[i].image_id for i in sorted(set(spread.round().astype(int)))]


def generate_pseudo_masks(
    predictor: MaskPredictor,
    split: LabelledSplit,
    out_dir: str | Path,
    export: ExportSettings | None = None,
    *,
    batch_size: int = 8,
    num_workers: int = 0,
    bad: BadImages | None = None,
) -> GenerationResult:
    """Write masks, ``annotations.json``, overlays (and maps) for ``split`` into ``out_dir``.

    Maps are computed only for each image's labelled classes (or the classes the classifier
    gives an unlabelled image, with ``predictor.label_threshold``). When the split has
    ground-truth masks, the masks written are scored (``confusion``), and so are the threshold
    rule's masks before CRF (``raw_confusion``, only with CRF) and a sweep of the threshold.
    Unusable images stop the run or are listed in ``skipped.json`` (``bad``'s policy; default:
    stop); COCO image ids are positions in the split (from 1), whatever is skipped. ``bad`` may
    carry skips recorded earlier in the run (training). Images of equal size are batched by
    ``batch_size``; ``num_workers`` DataLoader workers read ahead.

    Resumable and shardable (see :mod:`wsss.engine.run_folder`): images that already have a
    record in ``out_dir`` (same settings) are not redone, and under ``torchrun`` each rank
    labels every world-size-th image; rank 0 then merges all records into the run's files.
    """
    export = export or ExportSettings()
    export.validate()
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    folder = RunFolder(out_dir)
    folder.root.mkdir(parents=True, exist_ok=True)
    lock = RunLock(folder.root)
    problem = None
    if distributed.is_main():  # one rank owns the folder for every rank of the job
        try:
            lock.acquire()
            if folder.check_settings(_fingerprint(predictor, split, export)):
                folder.remove_partial_files()
        except WsssError as exc:
            problem = exc
    problems = [p for p in distributed.all_gather_object(problem) if p is not None]
    if problems:
        lock.release()
        raise problems[0]
    try:
        return _generate(predictor, split, folder, export, batch_size, num_workers, bad, lock)
    finally:
        lock.release()


def _pending(folder: RunFolder, samples: Sequence[Sample], save_cams: bool) -> list[Sample]:
    """The samples without a sound record. A damaged record, or one whose mask (or saved maps)
    is missing or damaged, is reported, deleted and its image redone."""
    pending, damaged = [], []
    for sample in samples:
        if not folder.has_record(sample.image_id):
            pending.append(sample)
        elif (problem := folder.check_record(sample.image_id, save_cams)) is not None:
            log.warning("redoing %s: %s", sample.image_id, problem)
            folder.record(sample.image_id).unlink(missing_ok=True)
            damaged.append(sample.image_id)
            pending.append(sample)
    if damaged:
        log.warning("%d damaged records found and redone (first: %s)", len(damaged), damaged[0])
    return pending


def _generate(
    predictor: MaskPredictor,
    split: LabelledSplit,
    folder: RunFolder,
    export: ExportSettings,
    batch_size: int,
    num_workers: int,
    bad: BadImages | None,
    lock: RunLock,
) -> GenerationResult:
    bad = bad or BadImages()
    earlier_skips = list(bad.skipped)
    distributed.barrier()
    rank, world = distributed.rank(), distributed.world_size()
    mine = [s for i, s in enumerate(split.samples) if i % world == rank]
    pending = _pending(folder, mine, export.save_cams)
    if len(pending) < len(mine):
        log.info("resuming: %d of %d images already done", len(mine) - len(pending), len(mine))
    by_path = {str(s.image_path): s.image_id for s in pending}
    bad.on_skip = lambda path, reason: folder.write_record(by_path[str(path)], {"skipped": reason})
    samples = bad.screen(replace(split, samples=tuple(pending))).samples if pending else ()
    positions = {s.image_id: i for i, s in enumerate(split.samples)}
    overlay_ids = _overlay_ids(split, export.overlays)

    start = time.perf_counter()
    bar = tqdm(total=len(samples), desc="generate masks", unit="img", disable=rank > 0)
    stream = predictions(predictor, samples, batch_size, num_workers, bad)
    for item in _with_crf(stream, predictor):
        sample = samples[item.index]
        coco_id = positions[sample.image_id] + 1
        overlay = sample.image_id in overlay_ids
        _write_image(folder, split, sample, item, predictor, export, coco_id, overlay)
        lock.refresh()
        bar.update(1)
    bar.close()
    seconds = time.perf_counter() - start
    bad.on_skip = None
    distributed.barrier()  # every rank's records are on disk
    if not distributed.is_main():
        return GenerationResult(len(samples), 0, seconds, folder.root)
    merged = merge_records(folder, split, overlay_ids, predictor.crf is not None, earlier_skips)
    if merged.images == 0:
        raise DataError(f"{split.root}: none of the {len(split)} images could be used")
    result = GenerationResult(
        merged.images,
        merged.annotations,
        seconds,
        folder.root,
        merged.confusion,
        merged.sweep,
        merged.outputs,
        merged.raw_confusion,
        len(merged.crf_failures),
        len(merged.skipped),
        merged.predicted_labels,
        merged.empty_masks,
    )
    result.review = merged.review
    if merged.confusion is not None:
        write_metrics(folder, result, split.class_names, predictor)
    if merged.review:
        plot = folder.sweep_plot.name if folder.sweep_plot.is_file() else None
        result.outputs["report"] = str(
            write_report(folder.root, merged.review, review_rows(result), plot)
        )
    return result


@dataclass
class MergedRun:
    """What the records of a run add up to."""

    images: int = 0
    annotations: int = 0
    skipped: list[dict] = field(default_factory=list)
    crf_failures: list[dict] = field(default_factory=list)
    predicted_labels: int = 0
    empty_masks: int = 0
    #: one entry per image for the review page (when the run estimated quality)
    review: list[dict] = field(default_factory=list)
    confusion: ConfusionMatrix | None = None
    raw_confusion: ConfusionMatrix | None = None
    sweep: ThresholdSweep | None = None
    outputs: dict[str, str] = field(default_factory=dict)


def merge_records(
    folder: RunFolder,
    split: LabelledSplit,
    overlay_ids: Sequence[str],
    with_crf: bool,
    extra_skipped: Sequence[dict] = (),
) -> MergedRun:
    """Build annotations.json, skipped.json, crf_failures.json and the contact sheet from the
    records of every image of ``split``, in split order; sum their scores."""
    num_labels = len(split.class_names) + 1
    merged = MergedRun(skipped=list(extra_skipped))
    skipped_files = {entry["file"] for entry in merged.skipped}
    evaluate = split.has_masks
    if evaluate:
        merged.confusion = ConfusionMatrix(num_labels)
        merged.raw_confusion = ConfusionMatrix(num_labels) if with_crf else None
        merged.sweep = ThresholdSweep(num_labels)
    images, annotations, missing = [], [], []
    for sample in tqdm(split.samples, desc="merge records", unit="img", leave=False):
        if not folder.has_record(sample.image_id):
            missing.append(sample.image_id)
            continue
        record = folder.read_record(sample.image_id)
        if "skipped" in record:
            if str(sample.image_path) not in skipped_files:  # not already skipped in training
                merged.skipped.append({"file": str(sample.image_path), "reason": record["skipped"]})
            continue
        merged.images += 1
        images.append(record["image"])
        annotations += record["annotations"]
        merged.predicted_labels += bool(record.get("predicted"))
        merged.empty_masks += bool(record.get("empty_mask"))
        if record.get("quality") is not None:
            merged.review.append(_review_item(folder, sample, record))
        if record.get("crf_failure"):
            merged.crf_failures.append(
                {"image": str(sample.image_path), "error": record["crf_failure"]}
            )
        if evaluate:
            scores = record["scores"]
            merged.confusion.add_sparse(scores["masks"])
            if merged.raw_confusion is not None:
                merged.raw_confusion.add_sparse(scores["threshold_rule"])
            merged.sweep.add_sparse(scores["sweep"])
    if missing:
        raise DataError(
            f"{folder.root}: {len(missing)} images have no record (first: {missing[:3]}); "
            "rerun the same command to finish them"
        )
    merged.annotations = len(annotations)
    write_coco(
        folder.annotations,
        images,
        annotations,
        split.class_names,
        category_ids=split.coco_category_ids,
    )
    merged.outputs = {"masks": str(folder.masks_dir), "annotations": str(folder.annotations)}
    if merged.skipped:
        write_json(folder.skipped, merged.skipped)
        merged.outputs["skipped"] = str(folder.skipped)
    if merged.crf_failures:
        write_json(folder.crf_failures, merged.crf_failures)
        merged.outputs["crf_failures"] = str(folder.crf_failures)
    panels = []
    for image_id in overlay_ids:
        path = folder.overlay(image_id)
        if path.is_file():
            with Image.open(path) as img:
                panels.append(np.asarray(img.convert("RGB")))
    if panels:
        save_rgb(folder.contact_sheet, contact_sheet(panels))
        merged.outputs["contact_sheet"] = str(folder.contact_sheet)
    return merged


def _review_item(folder: RunFolder, sample: Sample, record: dict) -> dict:
    quality = record["quality"]
    return {
        "id": sample.image_id,
        "file": sample.file_name,
        "thumb": folder.thumb(sample.image_id).relative_to(folder.root.resolve()).as_posix(),
        "labels": sorted(quality["classes"]),
        "classes": {
            name: {"estimate": round(c["estimate"], 3), "p": round(c["probability"], 3)}
            for name, c in quality["classes"].items()
        },
        "quality": round(quality["image"], 3),
    }


def review_rows(result: GenerationResult) -> list[tuple[str, str]]:
    """The summary table the library knows of a run (the command adds its own)."""
    rows = [("images", str(result.num_images)), ("COCO annotations", str(result.num_annotations))]
    if result.confusion is not None:
        rows.append(("mIoU of the masks (ground truth)", f"{result.confusion.miou:.4f}"))
    for label, count in (("skipped images", result.skipped), ("empty masks", result.empty_masks),
                         ("CRF failures", result.crf_failures)):  # fmt: skip
        if count:
            rows.append((label, str(count)))
    return rows


def write_metrics(
    folder: RunFolder,
    result: GenerationResult,
    class_names: Sequence[str],
    predictor: MaskPredictor,
) -> None:
    """Write ``metrics.json`` and ``threshold_sweep.png`` from an evaluated generation."""
    threshold_rule = result.raw_confusion or result.confusion
    metrics = {
        "masks_on_disk": result.confusion.summary(class_names),
        "threshold_rule": {
            "rule": predictor.rule.rule,
            "bg_threshold": predictor.rule.bg_threshold,
            "fg_threshold": predictor.rule.fg_threshold,
            **threshold_rule.summary(class_names),
        },
        "crf": asdict(predictor.crf) if predictor.crf else None,
        "threshold_sweep": result.sweep.summary(),
        "images": result.num_images,
        "seconds": round(result.seconds, 2),
    }
    write_json(folder.metrics, metrics)
    with atomic_path(folder.sweep_plot) as tmp:
        fixed = predictor.rule.bg_threshold if predictor.rule.rule == "fixed" else None
        result.sweep.save_plot(tmp, fixed_threshold=fixed)
    result.outputs["metrics"] = str(folder.metrics)
    result.outputs["sweep_plot"] = str(folder.sweep_plot)
