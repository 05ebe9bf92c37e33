"""Generation: run a :class:`~wsss.masks.MaskPredictor` over a split and write a run folder
(layout: :mod:`wsss.engine.run_folder`; what it adds up to: :mod:`wsss.engine.run_result`).

This is the loop behind ``python -m wsss.generate_masks``; it takes plain arguments, so it is
usable from Python without Hydra. Per image: predict (maps, threshold rule, CRF), describe the
image as a record, write its files and then its record; at the end, merge the records once. It
streams: only one image's outputs are held at a time.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

from wsss import distributed
from wsss.data.batches import LoadedImage, same_size_batches
from wsss.data.images import save_label_map
from wsss.data.screen import BadImages
from wsss.data.split import LabelledSplit, Sample
from wsss.engine.run_folder import ImageRecord, RunFolder, SkippedImage
from wsss.engine.run_lock import RunLock
from wsss.engine.run_result import (
    ClassifierFacts,
    RunResult,
    merge_records,
    run_summary,
    write_metrics,
    write_summary,
)
from wsss.errors import ConfigError, DataError, WsssError
from wsss.export import (
    ExportSettings,
    coco_annotations,
    overlay_panel,
    review_thumbnail,
    save_jpeg,
    save_rgb,
)
from wsss.io import atomic_path
from wsss.masks import MaskPrediction, MaskPredictor
from wsss.masks.quality import estimate, image_estimate
from wsss.metrics import ConfusionMatrix, ThresholdSweep
from wsss.models.classifier import weights_digest

log = logging.getLogger(__name__)


def generate_pseudo_masks(
    predictor: MaskPredictor,
    split: LabelledSplit,
    out_dir: str | Path,
    export: ExportSettings | None = None,
    *,
    batch_size: int = 8,
    num_workers: int = 0,
    bad: BadImages | None = None,
    classifier: ClassifierFacts | None = None,
    started: float | None = None,
) -> RunResult:
    """Write masks, ``annotations.json``, overlays (and maps) for ``split`` into ``out_dir``.

    Maps are computed only for each image's labelled classes (or the classes the classifier
    gives an unlabelled image, with ``predictor.predict_labels``). When the split has
    ground-truth masks, the masks written are scored (``confusion``), and so are the threshold
    rule's masks before CRF (``rule_confusion``, only with CRF) and a sweep of the threshold.
    Unusable images stop the run or are listed in ``skipped.json`` (``bad``'s policy; default:
    stop); COCO image ids are positions in the split (from 1), whatever is skipped. ``bad`` may
    carry skips recorded earlier in the run (training). Images of equal size are batched by
    ``batch_size``; ``num_workers`` DataLoader workers read ahead. ``summary.json`` (and
    ``report.html``) say which ``classifier`` made the maps, and the time since ``started``
    (``time.perf_counter()``; default: the generation's own time).

    Resumable and shardable (see :mod:`wsss.engine.run_folder`): images that already have a
    record in ``out_dir`` (same settings) are not redone, and under ``torchrun`` each rank
    labels every world-size-th image; rank 0 then merges all records into the run's files.
    """
    export = export or ExportSettings()
    export.validate()
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    started = time.perf_counter() if started is None else started
    bad = bad or BadImages()
    earlier_skips = list(bad.skipped)  # met while training the classifier
    folder = RunFolder(out_dir)
    folder.root.mkdir(parents=True, exist_ok=True)
    lock = RunLock(folder.root)
    problem = None
    if distributed.is_main():  # one rank owns the folder for every rank of the job
        try:
            lock.acquire()
            if folder.check_fingerprint(_fingerprint(predictor, split, export)):
                folder.remove_partial_files()
        except WsssError as exc:
            problem = exc
    problems = [p for p in distributed.all_gather_object(problem) if p is not None]
    if problems:
        lock.release()
        raise problems[0]
    try:
        seconds = _label_images(
            predictor, split, folder, export, batch_size, num_workers, bad, lock
        )
        if not distributed.is_main():
            return RunResult(folder.root, seconds=seconds)
        overlay_ids = _overlay_ids(split, export.overlays)
        with_crf = predictor.crf is not None
        result = merge_records(folder, split, overlay_ids, with_crf, earlier_skips)
        if result.num_images == 0:
            raise DataError(f"{split.root}: none of the {len(split)} images could be used")
        result.seconds = seconds
        if result.confusion is not None:
            write_metrics(folder, result, split.class_names, predictor)
        summary = run_summary(result, predictor, classifier, time.perf_counter() - started)
        write_summary(folder, result, summary)
        return result
    finally:
        lock.release()


def _fingerprint(predictor: MaskPredictor, split: LabelledSplit, export: ExportSettings) -> dict:
    """What determines a run's outputs: resuming with anything else changed is refused."""
    exported = asdict(export)
    exported.pop("overlays")
    settings = {
        **predictor.settings(),
        "export": exported,
        "predict_labels": predictor.predict_labels,
        "amp": predictor.amp,
    }
    return {
        "settings": json.loads(json.dumps(settings, default=str)),
        "model": weights_digest(predictor.model),
        "classes": list(split.class_names),
        "images": [len(split), split.samples[0].image_id, split.samples[-1].image_id],
    }


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


def _label_images(
    predictor: MaskPredictor,
    split: LabelledSplit,
    folder: RunFolder,
    export: ExportSettings,
    batch_size: int,
    num_workers: int,
    bad: BadImages,
    lock: RunLock,
) -> float:
    """Predict and write this rank's pending images; returns the seconds it took. Every rank's
    records are on disk when it returns."""
    distributed.barrier()
    rank, world = distributed.rank(), distributed.world_size()
    mine = [s for i, s in enumerate(split.samples) if i % world == rank]
    pending = _pending(folder, mine, export.save_cams)
    if len(pending) < len(mine):
        log.info("resuming: %d of %d images already done", len(mine) - len(pending), len(mine))
    by_path = {str(s.image_path): s.image_id for s in pending}
    bad.on_skip = lambda path, why: folder.write_record(by_path[str(path)], SkippedImage(why))
    try:
        samples = bad.screen(replace(split, samples=tuple(pending))).samples if pending else ()
        describe = _ImageDescriber(split, export, predictor)
        writer = _ImageWriter(folder, export, set(_overlay_ids(split, export.overlays)))
        start = time.perf_counter()
        batches = same_size_batches(samples, batch_size, bad, num_workers)
        with tqdm(total=len(samples), desc="generate masks", unit="img", disable=rank > 0) as bar:
            for item, prediction in predictor.stream(batches):
                writer.write(item, prediction, describe(item, prediction))
                lock.refresh()
                bar.update(1)
        seconds = time.perf_counter() - start
    finally:
        bad.on_skip = None
    distributed.barrier()
    return seconds


@dataclass
class _ImageDescriber:
    """One image's record from its prediction: COCO entry and annotations, labels, the quality
    estimate (a forward pass per class, ``export.quality``) and, with ground truth, its scores.
    Writes nothing."""

    split: LabelledSplit
    export: ExportSettings
    predictor: MaskPredictor

    def __post_init__(self):
        self.positions = {s.image_id: i for i, s in enumerate(self.split.samples)}

    def __call__(self, item: LoadedImage, prediction: MaskPrediction) -> ImageRecord:
        sample, image = item.sample, item.image
        coco_id = self.positions[sample.image_id] + 1
        names = self.split.class_names
        features = self.predictor.assess(image, prediction) if self.export.quality else None
        estimates = {c: estimate(f) for c, f in features.items()} if features is not None else None
        quality = None
        if features is not None:
            regions = {names[c]: {**f, "estimate": estimates[c]} for c, f in features.items()}
            quality = {"image": image_estimate(list(regions.values())), "classes": regions}
        annotations = coco_annotations(
            prediction.mask,
            prediction.maps,
            prediction.labels,
            coco_id,
            self.split.coco_category_ids,
            prediction.probabilities,
            polygons=self.export.polygons,
            instances=self.export.instances,
            quality=estimates,
        )
        entry = {"id": coco_id, "file_name": sample.file_name,
                 "width": int(image.shape[1]), "height": int(image.shape[0])}  # fmt: skip
        probabilities = prediction.probabilities
        if prediction.crf_failure is not None:
            log.warning("CRF failed on %s (%s); keeping its mask before the CRF",
                        sample.image_path, prediction.crf_failure)  # fmt: skip
        empty = (
            bool(prediction.labels)
            and not np.isin(prediction.mask, np.add(prediction.labels, 1)).any()
        )
        if empty:
            log.warning("%s (%dx%d): labelled %s, but its mask holds none of them",
                        sample.image_path, image.shape[1], image.shape[0],
                        [names[c] for c in prediction.labels])  # fmt: skip
        return ImageRecord(
            image=entry,
            annotations=annotations,
            labels=list(prediction.labels),
            probabilities=list(probabilities) if probabilities else None,
            predicted=probabilities is not None,
            crf_failure=prediction.crf_failure,
            empty_mask=empty,
            quality=quality,
            scores=_image_scores(self.split, sample, prediction) if self.split.has_masks else None,
        )


@dataclass
class _ImageWriter:
    """Writes one image's files (mask, maps, review thumbnail, overlay), then its record: an
    image with a record is finished, and a rerun does not redo it."""

    folder: RunFolder
    export: ExportSettings
    overlay_ids: set[str]

    def write(self, item: LoadedImage, prediction: MaskPrediction, record: ImageRecord) -> None:
        sample, image, mask = item.sample, item.image, prediction.mask
        with atomic_path(self.folder.mask(sample.image_id, create=True)) as tmp:
            save_label_map(tmp, mask)
        if record.quality is not None:
            save_jpeg(
                self.folder.thumb(sample.image_id, create=True), review_thumbnail(image, mask)
            )
        if self.export.save_cams:
            self.folder.write_maps(sample.image_id, prediction.maps, prediction.labels)
        if sample.image_id in self.overlay_ids:
            panel = overlay_panel(image, mask, prediction.maps, title=sample.image_id)
            save_rgb(self.folder.overlay(sample.image_id, create=True), panel)
        self.folder.write_record(sample.image_id, record)


def _image_scores(split: LabelledSplit, sample: Sample, prediction: MaskPrediction) -> dict:
    """This image's contributions to the run's scores, as sparse confusion counts."""
    num_labels = len(split.class_names) + 1
    truth = split.ground_truth(sample, size=prediction.mask.shape)
    masks = ConfusionMatrix(num_labels)
    masks.update(prediction.mask, truth)
    sweep = ThresholdSweep(num_labels)
    sweep.update(prediction.maps, prediction.labels, truth)
    scores = {"masks": masks.to_sparse(), "sweep": sweep.to_sparse()}
    if prediction.crf_mask is not None or prediction.crf_failure is not None:
        rule = ConfusionMatrix(num_labels)
        rule.update(prediction.label_map, truth)
        scores["threshold_rule"] = rule.to_sparse()
    return scores


def _overlay_ids(split: LabelledSplit, count: int) -> list[str]:
    """Ids of ``count`` images spread evenly over the split."""
    if count <= 0:
        return []
    spread = np.linspace(0, len(split) - 1, min(count, len(split)))
    return [split.samples[i].image_id for i in sorted(set(spread.round().astype(int)))]
