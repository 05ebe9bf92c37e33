"""``python -m wsss.generate_masks``: pseudo-masks, COCO annotations, overlays and metrics.

With no arguments it runs the whole demo on the built-in synthetic dataset: generates the
dataset if missing, trains a classifier if no ``checkpoint=`` is given (cached for the next run),
labels the ``split`` and evaluates it against the ground truth.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from wsss import distributed
from wsss.cli import common
from wsss.cli.config import GenerateMasksCommand
from wsss.data.screen import BadImages
from wsss.engine.generation import GenerationResult, generate_pseudo_masks
from wsss.engine.run_folder import RunFolder
from wsss.errors import ConfigError
from wsss.export.report import write_report
from wsss.io import write_json
from wsss.masks import CRFSettings, MaskPredictor, ThresholdSettings

log = logging.getLogger("wsss.generate_masks")


def run_summary(
    result: GenerationResult,
    mask: ThresholdSettings,
    crf: CRFSettings | None,
    predict_labels: float | None,
    val_map: float | None,
    trained: bool,
    seconds: float,
    checkpoint: Path,
) -> dict:
    """The figures a user wants at the end of a run (printed, and written to summary.json)."""
    summary = {
        "images": result.num_images,
        "coco_annotations": result.num_annotations,
        "checkpoint": str(checkpoint),
        "trained_in_this_run": trained,
        "classifier_val_map": None if val_map is None else round(val_map, 4),
        "seconds": round(seconds, 1),
        "outputs": str(result.out_dir),
    }
    if result.confusion is not None:
        best_threshold, best_miou = result.sweep.best
        summary.update(
            mask_rule=mask.rule,
            bg_threshold=mask.bg_threshold,
            miou=round((result.raw_confusion or result.confusion).miou, 4),
            uncertain_pixel_fraction=round(result.confusion.uncertain_fraction, 4),
            best_threshold=best_threshold,
            best_threshold_miou=round(best_miou, 4),
        )
        if result.raw_confusion is not None:
            summary["crf_mode"] = crf.mode
            summary["crf_miou"] = round(result.confusion.miou, 4)
            summary["crf_miou_confident_pixels"] = round(result.confusion.miou_confident, 4)
    if result.crf_failures:
        summary["crf_failures"] = result.crf_failures
    if result.skipped:
        summary["skipped_images"] = result.skipped
    if result.empty_masks:
        summary["empty_masks"] = result.empty_masks
    if predict_labels is not None:
        summary["labels_predicted_for"] = result.predicted_labels
    return summary


def _rule_name(s: dict) -> str:
    if s.get("mask_rule", "fixed") == "fixed":
        return f"mIoU at bg_threshold {s['bg_threshold']:.2f}"
    return f"mIoU with the {s['mask_rule']} rule"


def summary_rows(s: dict) -> list[tuple[str, str]]:
    trained = " (trained in this run)" if s["trained_in_this_run"] else ""
    val_map = s["classifier_val_map"]
    rows = [
        ("images labelled", f"{s['images']} ({s['coco_annotations']} COCO annotations)"),
        ("classifier", s["checkpoint"] + trained),
        ("classifier mAP (val)", "n/a" if val_map is None else f"{val_map:.4f}"),
    ]
    if "miou" in s:
        rows += [
            (_rule_name(s), f"{s['miou']:.4f}"),
            (
                f"mIoU at best fixed threshold {s['best_threshold']:.2f}",
                f"{s['best_threshold_miou']:.4f}  (tuned on ground truth: not a result)",
            ),
        ]
        if "crf_miou" in s:
            rows.append((f"mIoU after CRF ({s['crf_mode']} mode)", f"{s['crf_miou']:.4f}"))
        if s["uncertain_pixel_fraction"] > 0:
            rows.append(("uncertain (255) pixels", f"{100 * s['uncertain_pixel_fraction']:.1f}%"))
    if "labels_predicted_for" in s:
        rows.append(("images labelled by the classifier", str(s["labels_predicted_for"])))
    if s.get("skipped_images"):
        rows.append(("unusable images skipped", f"{s['skipped_images']} (see skipped.json)"))
    if s.get("empty_masks"):
        rows.append(("labelled images with an empty mask", f"{s['empty_masks']} (see the log)"))
    if s.get("crf_failures"):
        rows.append(("CRF failures (unrefined masks kept)", str(s["crf_failures"])))
    rows += [("total time", f"{s['seconds']:.1f} s"), ("outputs", s["outputs"])]
    if s.get("review_page"):
        rows.append(("review page", s["review_page"]))
    return rows


def summary_table(rows: list[tuple[str, str]]) -> str:
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"  {k:<{width}}  {v}" for k, v in rows)


def run(config: GenerateMasksCommand, out: Path) -> float | None:
    start = time.perf_counter()
    device = common.setup_device(config.device, out)
    split = common.load_split(config, config.split, config.predict_labels is not None)
    bad = BadImages(config.on_bad_image)
    classifier, checkpoint, trained = common.classifier_for(config, device, bad)
    if tuple(classifier.class_names) != tuple(split.class_names):
        raise ConfigError(
            f"{checkpoint}: classifier classes {list(classifier.class_names)} differ from the "
            f"dataset's {list(split.class_names)}"
        )
    predictor = MaskPredictor(
        classifier.model,
        config.cam,
        config.mask,
        config.crf,
        refine=config.refine,
        device=device,
        amp=config.amp,
        label_threshold=config.predict_labels,
    )
    log.info("labelling %d images of split %r with %s", len(split), config.split, config.cam.method)
    result = generate_pseudo_masks(
        predictor,
        split,
        out,
        config.export,
        batch_size=config.batch_size,
        num_workers=config.num_workers,
        bad=bad,
    )
    if not distributed.is_main():  # rank 0 merged every rank's records and reports
        return None
    summary = run_summary(
        result,
        predictor.rule,
        config.crf,
        config.predict_labels,
        classifier.metrics.get("val_map"),
        trained,
        time.perf_counter() - start,
        checkpoint,
    )
    folder = RunFolder(out)
    if result.review:  # the review page again, with the command's whole summary
        summary["review_page"] = str(folder.report)
        plot = folder.sweep_plot.name if folder.sweep_plot.is_file() else None
        write_report(folder.root, result.review, summary_rows(summary), plot)
    write_json(folder.summary, summary)
    print("\nwsss generate_masks summary\n" + summary_table(summary_rows(summary)))
    return summary.get("miou")


main = common.command("generate_masks")(run)
