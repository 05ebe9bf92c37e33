"""``python -m wsss.generate_masks``: pseudo-masks, COCO annotations, overlays and metrics.

With no arguments it runs the whole demo on the built-in synthetic dataset: generates the
dataset if missing, trains a classifier if no ``checkpoint=`` is given (cached for the next run),
labels the ``split`` and evaluates it against the ground truth.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from wsss import _cli, distributed
from wsss.config import config_dir, register_configs
from wsss.crf import CRFSettings
from wsss.data.screen import BadImages
from wsss.errors import ConfigError
from wsss.io import write_json
from wsss.pipeline import GenerateSettings, GenerationResult, generate_pseudo_masks

log = logging.getLogger("wsss.generate_masks")
register_configs()


def crf_settings(cfg: DictConfig) -> CRFSettings | None:
    if cfg.crf.name == "none":
        return None
    if cfg.crf.name != "dense":
        raise ConfigError(f"crf.name must be 'none' or 'dense', got {cfg.crf.name!r}")
    fields = OmegaConf.to_container(cfg.crf, resolve=True)
    return CRFSettings(**{k: v for k, v in fields.items() if k not in ("name", "workers")})


def generate_settings(cfg: DictConfig) -> GenerateSettings:
    return GenerateSettings(
        method=cfg.cam.method,
        scales=tuple(cfg.cam.scales),
        flip=cfg.cam.flip,
        target_layer=cfg.cam.target_layer,
        score_batch_size=cfg.cam.score_batch_size,
        top_channels=cfg.cam.top_channels,
        bg_threshold=cfg.mask.bg_threshold,
        fg_threshold=cfg.mask.fg_threshold,
        batch_size=cfg.batch_size,
        num_workers=cfg.num_workers,
        overlays=cfg.export.overlays,
        save_cams=cfg.export.save_cams,
        polygons=cfg.export.polygons,
        instances=cfg.export.instances,
        crf=crf_settings(cfg),
        crf_workers=cfg.crf.workers,
        predict_labels=cfg.predict_labels,
        amp=cfg.amp,
        on_bad_image=cfg.on_bad_image,
    )


def run_summary(
    result: GenerationResult,
    settings: GenerateSettings,
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
            bg_threshold=settings.bg_threshold,
            miou=round((result.raw_confusion or result.confusion).miou, 4),
            uncertain_pixel_fraction=round(result.confusion.uncertain_fraction, 4),
            best_threshold=best_threshold,
            best_threshold_miou=round(best_miou, 4),
        )
        if result.raw_confusion is not None:
            summary["crf_mode"] = settings.crf.mode
            summary["crf_miou"] = round(result.confusion.miou, 4)
            summary["crf_miou_confident_pixels"] = round(result.confusion.miou_confident, 4)
    if result.crf_failures:
        summary["crf_failures"] = result.crf_failures
    if result.skipped:
        summary["skipped_images"] = result.skipped
    if settings.predict_labels is not None:
        summary["labels_predicted_for"] = result.predicted_labels
    return summary


def summary_table(s: dict) -> str:
    trained = " (trained in this run)" if s["trained_in_this_run"] else ""
    val_map = s["classifier_val_map"]
    rows = [
        ("images labelled", f"{s['images']} ({s['coco_annotations']} COCO annotations)"),
        ("classifier", s["checkpoint"] + trained),
        ("classifier mAP (val)", "n/a" if val_map is None else f"{val_map:.4f}"),
    ]
    if "miou" in s:
        rows += [
            (f"mIoU at bg_threshold {s['bg_threshold']:.2f}", f"{s['miou']:.4f}"),
            (
                f"mIoU at best threshold {s['best_threshold']:.2f}",
                f"{s['best_threshold_miou']:.4f}  (tuned on ground truth: an upper bound)",
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
    if s.get("crf_failures"):
        rows.append(("CRF failures (unrefined masks kept)", str(s["crf_failures"])))
    rows += [("total time", f"{s['seconds']:.1f} s"), ("outputs", s["outputs"])]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"  {k:<{width}}  {v}" for k, v in rows)


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="generate_masks")
@_cli.user_errors_exit
def main(cfg: DictConfig) -> float | None:
    start = time.perf_counter()
    out = _cli.run_dir()
    device = _cli.setup_device(cfg)
    settings = generate_settings(cfg)
    settings.validate()
    split = _cli.load_split(cfg, cfg.split)
    bad = BadImages(cfg.on_bad_image)
    classifier, checkpoint, trained = _cli.classifier_for(cfg, device, bad)
    if tuple(classifier.class_names) != tuple(split.class_names):
        raise ConfigError(
            f"{checkpoint}: classifier classes {list(classifier.class_names)} differ from the "
            f"dataset's {list(split.class_names)}"
        )
    log.info("labelling %d images of split %r with %s", len(split), cfg.split, cfg.cam.method)
    result = generate_pseudo_masks(classifier.model, split, out, settings, device, bad)
    if not distributed.is_main():  # rank 0 merged every rank's records and reports
        return None
    summary = run_summary(
        result,
        settings,
        classifier.metrics.get("val_map"),
        trained,
        time.perf_counter() - start,
        checkpoint,
    )
    write_json(out / "summary.json", summary)
    print("\nwsss generate_masks summary\n" + summary_table(summary))
    return summary.get("miou")


if __name__ == "__main__":
    main()
