"""What a generation run adds up to: its records merged into the run's files, its scores, and
the summary that is printed, written to ``summary.json`` and shown atop ``report.html``.

:func:`merge_records` reads every image's record in split order and writes ``annotations.json``,
``skipped.json``, ``crf_failures.json`` and the contact sheet; :func:`write_metrics` writes
``metrics.json`` and the threshold plot; :func:`run_summary` and :func:`summary_rows` are the one
description of a run, which :func:`write_summary` writes once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from wsss.data.split import LabelledSplit, Sample
from wsss.engine.run_folder import ImageRecord, RunFolder, SkippedImage
from wsss.errors import DataError
from wsss.export import contact_sheet, save_rgb, write_coco
from wsss.export.report import write_report
from wsss.io import atomic_path, write_json
from wsss.masks import MaskPredictor
from wsss.metrics import ConfusionMatrix, ThresholdSweep


@dataclass
class RunResult:
    """A generation run's figures (complete on rank 0, which merges every rank's records).

    ``confusion``: scores of the masks written; ``rule_confusion``: of the threshold rule's
    masks before the CRF (only with a CRF); ``sweep``: a sweep of one fixed threshold over the
    maps (all three need ground truth). ``review``: the review page's entries (export.quality).
    """

    out_dir: Path
    num_images: int = 0
    num_annotations: int = 0
    seconds: float = 0.0
    confusion: ConfusionMatrix | None = None
    rule_confusion: ConfusionMatrix | None = None
    sweep: ThresholdSweep | None = None
    outputs: dict[str, str] = field(default_factory=dict)
    #: images left out as unusable, images the CRF failed on (their masks before the CRF kept)
    skipped: list[dict] = field(default_factory=list)
    crf_failures: list[dict] = field(default_factory=list)
    #: images labelled by the classifier (predict_labels), and labelled images whose mask
    #: holds none of their classes
    predicted_labels: int = 0
    empty_masks: int = 0
    review: list[dict] = field(default_factory=list)
    #: what summary.json holds (see :func:`run_summary`)
    summary: dict = field(default_factory=dict)


@dataclass
class ClassifierFacts:
    """What a run's summary says of its classifier."""

    checkpoint: Path
    trained_in_this_run: bool = False
    val_map: float | None = None


def merge_records(
    folder: RunFolder,
    split: LabelledSplit,
    overlay_ids: Sequence[str],
    with_crf: bool,
    extra_skipped: Sequence[dict] = (),
) -> RunResult:
    """Build annotations.json, skipped.json, crf_failures.json and the contact sheet from the
    records of every image of ``split``, in split order; sum their scores."""
    result = RunResult(folder.root, skipped=list(extra_skipped))
    skipped_files = {entry["file"] for entry in result.skipped}
    if split.has_masks:
        num_labels = len(split.class_names) + 1
        result.confusion, result.sweep = ConfusionMatrix(num_labels), ThresholdSweep(num_labels)
        result.rule_confusion = ConfusionMatrix(num_labels) if with_crf else None
    images, annotations, missing = [], [], []
    for sample in tqdm(split.samples, desc="merge records", unit="img", leave=False):
        if not folder.has_record(sample.image_id):
            missing.append(sample.image_id)
            continue
        record = folder.read_record(sample.image_id)
        if isinstance(record, SkippedImage):
            if str(sample.image_path) not in skipped_files:  # not already skipped in training
                result.skipped.append({"file": str(sample.image_path), "reason": record.reason})
            continue
        images.append(record.image)
        annotations += record.annotations
        _add(result, folder, sample, record)
    if missing:
        raise DataError(
            f"{folder.root}: {len(missing)} images have no record (first: {missing[:3]}); "
            "rerun the same command to finish them"
        )
    result.num_images, result.num_annotations = len(images), len(annotations)
    write_coco(
        folder.annotations,
        images,
        annotations,
        split.class_names,
        category_ids=split.coco_category_ids,
    )
    result.outputs = {"masks": str(folder.masks_dir), "annotations": str(folder.annotations)}
    for name, entries in (("skipped", result.skipped), ("crf_failures", result.crf_failures)):
        if entries:
            write_json(getattr(folder, name), entries)
            result.outputs[name] = str(getattr(folder, name))
    _write_contact_sheet(folder, overlay_ids, result)
    return result


def _add(result: RunResult, folder: RunFolder, sample: Sample, record: ImageRecord) -> None:
    """Count one finished image's record into ``result``."""
    result.predicted_labels += record.predicted
    result.empty_masks += record.empty_mask
    if record.quality is not None:
        result.review.append(_review_item(folder, sample, record.quality))
    if record.crf_failure:
        result.crf_failures.append({"image": str(sample.image_path), "error": record.crf_failure})
    if result.confusion is not None:
        result.confusion.add_sparse(record.scores["masks"])
        if result.rule_confusion is not None:
            result.rule_confusion.add_sparse(record.scores["threshold_rule"])
        result.sweep.add_sparse(record.scores["sweep"])


def _write_contact_sheet(folder: RunFolder, overlay_ids: Sequence[str], result: RunResult):
    panels = []
    for image_id in overlay_ids:
        path = folder.overlay(image_id)
        if path.is_file():
            with Image.open(path) as img:
                panels.append(np.asarray(img.convert("RGB")))
    if panels:
        save_rgb(folder.contact_sheet, contact_sheet(panels))
        result.outputs["contact_sheet"] = str(folder.contact_sheet)


def _review_item(folder: RunFolder, sample: Sample, quality: dict) -> dict:
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


def write_metrics(
    folder: RunFolder, result: RunResult, class_names: Sequence[str], predictor: MaskPredictor
) -> None:
    """Write ``metrics.json`` and ``threshold_sweep.png`` of an evaluated run."""
    threshold = predictor.threshold
    rule_scores = result.rule_confusion or result.confusion
    metrics = {
        "masks_on_disk": result.confusion.summary(class_names),
        "threshold_rule": {
            "rule": threshold.rule,
            "bg_threshold": threshold.bg_threshold,
            "fg_threshold": threshold.fg_threshold,
            **rule_scores.summary(class_names),
        },
        "crf": asdict(predictor.crf) if predictor.crf else None,
        "threshold_sweep": result.sweep.summary(),
        "images": result.num_images,
        "seconds": round(result.seconds, 2),
    }
    write_json(folder.metrics, metrics)
    with atomic_path(folder.sweep_plot) as tmp:
        result.sweep.save_plot(
            tmp, fixed_threshold=threshold.bg_threshold if threshold.rule == "fixed" else None
        )
    result.outputs["metrics"] = str(folder.metrics)
    result.outputs["sweep_plot"] = str(folder.sweep_plot)


def run_summary(
    result: RunResult,
    predictor: MaskPredictor,
    classifier: ClassifierFacts | None,
    seconds: float,
) -> dict:
    """The figures a user wants at the end of a run (printed, and written to summary.json)."""
    summary: dict = {"images": result.num_images, "coco_annotations": result.num_annotations}
    if classifier is not None:
        summary.update(
            checkpoint=str(classifier.checkpoint),
            trained_in_this_run=classifier.trained_in_this_run,
            classifier_val_map=None if classifier.val_map is None else round(classifier.val_map, 4),
        )
    summary.update(seconds=round(seconds, 1), outputs=str(result.out_dir))
    if result.confusion is not None:
        # ``miou`` scores the masks written; with a CRF, ``rule_miou`` scores the threshold
        # rule's masks before it (the sweep varies that rule's threshold)
        best_threshold, best_miou = result.sweep.best
        summary.update(
            mask_rule=predictor.threshold.rule,
            bg_threshold=predictor.threshold.bg_threshold,
            miou=round(result.confusion.miou, 4),
            uncertain_pixel_fraction=round(result.confusion.uncertain_fraction, 4),
            best_threshold=best_threshold,
            best_threshold_miou=round(best_miou, 4),
        )
        if result.rule_confusion is not None:
            summary["crf_mode"] = predictor.crf.mode
            summary["rule_miou"] = round(result.rule_confusion.miou, 4)
            summary["miou_confident_pixels"] = round(result.confusion.miou_confident, 4)
    for key, count in (("crf_failures", len(result.crf_failures)),
                       ("skipped_images", len(result.skipped)),
                       ("empty_masks", result.empty_masks)):  # fmt: skip
        if count:
            summary[key] = count
    if predictor.predict_labels is not None:
        summary["labels_predicted_for"] = result.predicted_labels
    return summary


def _rule_name(s: dict) -> str:
    if s.get("mask_rule", "fixed") == "fixed":
        return f"mIoU at bg_threshold {s['bg_threshold']:.2f}"
    return f"mIoU with the {s['mask_rule']} rule"


#: the summary's counts of trouble, each printed as a row only when it is not zero
COUNT_ROWS = {
    "skipped_images": ("unusable images skipped", "{} (see skipped.json)"),
    "empty_masks": ("labelled images with an empty mask", "{} (see the log)"),
    "crf_failures": ("CRF failures (masks before the CRF kept)", "{}"),
}


def summary_rows(s: dict) -> list[tuple[str, str]]:
    """The summary as (label, value) rows: the printed table and the review page's."""
    rows = [("images labelled", f"{s['images']} ({s['coco_annotations']} COCO annotations)")]
    if "checkpoint" in s:
        trained = " (trained in this run)" if s["trained_in_this_run"] else ""
        val_map = s["classifier_val_map"]
        rows += [
            ("classifier", s["checkpoint"] + trained),
            ("classifier mAP (val)", "n/a" if val_map is None else f"{val_map:.4f}"),
        ]
    if "miou" in s:
        best = f"mIoU at best fixed threshold {s['best_threshold']:.2f}"
        before = ""  # the rule's rows: of the masks written, or of the masks before the CRF
        if "rule_miou" in s:
            rows.append((f"mIoU of the masks (CRF, {s['crf_mode']} mode)", f"{s['miou']:.4f}"))
            before = ", before the CRF"
        swept = f"{s['best_threshold_miou']:.4f}  (tuned on ground truth: not a result)"
        rows += [
            (_rule_name(s) + before, f"{s.get('rule_miou', s['miou']):.4f}"),
            (best + before, swept),
        ]
        if s["uncertain_pixel_fraction"] > 0:
            rows.append(("uncertain (255) pixels", f"{100 * s['uncertain_pixel_fraction']:.1f}%"))
    if "labels_predicted_for" in s:
        rows.append(("images labelled by the classifier", str(s["labels_predicted_for"])))
    for key, (label, value) in COUNT_ROWS.items():
        if s.get(key):
            rows.append((label, value.format(s[key])))
    rows += [("total time", f"{s['seconds']:.1f} s"), ("outputs", s["outputs"])]
    if s.get("review_page"):
        rows.append(("review page", s["review_page"]))
    return rows


def summary_table(rows: list[tuple[str, str]]) -> str:
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"  {k:<{width}}  {v}" for k, v in rows)


def write_summary(folder: RunFolder, result: RunResult, summary: dict) -> None:
    """Write ``summary.json`` and, when the run estimated quality, ``report.html`` (with the
    summary's rows atop it); keep the summary written (``summary`` and the page's path) in
    ``result``."""
    if result.review:
        summary = {**summary, "review_page": str(folder.report)}
        plot = folder.sweep_plot.name if folder.sweep_plot.is_file() else None
        write_report(folder.root, result.review, summary_rows(summary), plot)
        result.outputs["report"] = str(folder.report)
    write_json(folder.summary, summary)
    result.summary = summary
