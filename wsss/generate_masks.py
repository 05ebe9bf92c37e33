"""``python -m wsss.generate_masks``: pseudo-masks, COCO annotations, overlays and metrics.

With no arguments it runs the whole demo on the built-in synthetic dataset: generates the
dataset if missing, trains a classifier if no ``checkpoint=`` is given (cached for the next run),
labels the ``split`` and evaluates it against the ground truth.
"""

from __future__ import annotations

import logging
import time

import hydra
from omegaconf import DictConfig, OmegaConf

from wsss import _cli
from wsss.config import config_dir, register_configs
from wsss.errors import ConfigError
from wsss.pipeline import GenerateSettings, GenerationResult, generate_pseudo_masks

log = logging.getLogger("wsss.generate_masks")
register_configs()


def generate_settings(cfg: DictConfig) -> GenerateSettings:
    return GenerateSettings(
        method=cfg.cam.method,
        scales=tuple(cfg.cam.scales),
        flip=cfg.cam.flip,
        bg_threshold=cfg.mask.bg_threshold,
        fg_threshold=cfg.mask.fg_threshold,
        batch_size=cfg.batch_size,
        num_workers=cfg.num_workers,
        overlays=cfg.export.overlays,
        save_cams=cfg.export.save_cams,
    )


def summary_table(
    result: GenerationResult, val_map: float | None, trained: bool, seconds: float, ckpt
) -> str:
    rows = [
        ("images labelled", f"{result.num_images} ({result.num_annotations} COCO annotations)"),
        ("classifier", f"{ckpt}{' (trained in this run)' if trained else ''}"),
        ("classifier mAP (val)", f"{val_map:.4f}" if val_map is not None else "n/a"),
    ]
    if result.confusion is not None:
        fixed = result.confusion
        best_t, best_m = result.sweep.best
        rows += [
            ("mIoU at bg_threshold", f"{fixed.miou:.4f}"),
            (f"mIoU at best threshold {best_t:.2f}", f"{best_m:.4f}  (tuned on ground truth)"),
        ]
        if fixed.uncertain_fraction > 0:
            rows.append(("uncertain pixels", f"{100 * fixed.uncertain_fraction:.1f}%"))
    rows += [("total time", f"{seconds:.1f} s"), ("outputs", str(result.out_dir))]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"  {k:<{width}}  {v}" for k, v in rows)


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="generate_masks")
@_cli.user_errors_exit
def main(cfg: DictConfig) -> float | None:
    start = time.perf_counter()
    out = _cli.run_dir()
    device = _cli.resolve_device(cfg.device)
    settings = generate_settings(cfg)
    settings.validate()
    split = _cli.load_split(cfg, cfg.split)
    classifier, ckpt, trained = _cli.classifier_for(cfg, device)
    if tuple(classifier.class_names) != tuple(split.class_names):
        raise ConfigError(
            f"{ckpt}: classifier classes {list(classifier.class_names)} differ from the "
            f"dataset's {list(split.class_names)}"
        )
    log.info("labelling %d images of split %r with %s", len(split), cfg.split, cfg.cam.method)
    result = generate_pseudo_masks(classifier.model, split, out, settings, device)
    seconds = time.perf_counter() - start
    val_map = classifier.metrics.get("val_map")
    print(
        "\nwsss generate_masks summary\n" + summary_table(result, val_map, trained, seconds, ckpt)
    )
    log.info("config:\n%s", OmegaConf.to_yaml(cfg))
    return result.confusion.miou if result.confusion is not None else None


if __name__ == "__main__":
    main()
