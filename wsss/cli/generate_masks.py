"""``python -m wsss.generate_masks``: pseudo-masks, COCO annotations, overlays and metrics.

With no arguments it runs the whole demo on the built-in synthetic dataset: generates the
dataset if missing, trains a classifier if no ``checkpoint=`` is given (cached for the next run),
labels the ``split`` and evaluates it against the ground truth.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from pathlib import Path

from wsss import distributed
from wsss.cams.methods import PrototypeCam, ReCam
from wsss.cli import common
from wsss.cli.config import GenerateMasksCommand
from wsss.data.screen import BadImages
from wsss.engine import irn_stages
from wsss.engine.generation import generate_pseudo_masks
from wsss.engine.prototype_stage import prototypes_for
from wsss.engine.recam_stage import recam_for
from wsss.engine.run_result import ClassifierFacts, summary_rows, summary_table
from wsss.errors import ConfigError
from wsss.masks import IrnSettings, MaskPredictor
from wsss.models import load_checkpoint

log = logging.getLogger("wsss.generate_masks")


def run(config: GenerateMasksCommand, out: Path) -> float | None:
    start = time.perf_counter()
    device = common.setup_device(config.device, out)
    split = common.load_split(config, config.split, config.predict_labels is not None)
    bad = BadImages(config.on_bad_image)
    if not bad.skip:  # a bad image or mask stops the run before a classifier trains
        bad.screen(split)
    classifier, checkpoint, trained = common.classifier_for(config, device, bad)
    if tuple(classifier.class_names) != tuple(split.class_names):
        raise ConfigError(
            f"{checkpoint}: classifier classes {list(classifier.class_names)} differ from the "
            f"dataset's {list(split.class_names)}"
        )
    facts = ClassifierFacts(checkpoint, trained, classifier.metrics.get("val_map"))
    if isinstance(config.cam, ReCam):
        config, classifier = _recam_classifier(config, classifier, device, bad)
    if isinstance(config.cam, PrototypeCam) and not config.cam.prototypes:
        log.info("cam=lpcam without prototypes: fitting them on the %r split", config.train_split)
        fitted = prototypes_for(
            classifier, config.dataset, config.train_split, config.cam,
            Path(config.cache_dir).expanduser(), device=device, bad=bad,
        )  # fmt: skip
        config = replace(config, cam=replace(config.cam, prototypes=str(fitted)))
    refine = config.refine
    if isinstance(refine, IrnSettings) and not refine.checkpoint:
        refine = replace(refine, checkpoint=str(_boundary_network(config, classifier, device, bad)))
    predictor = MaskPredictor(
        classifier.model,
        config.cam,
        config.mask,
        config.crf,
        refine=refine,
        device=device,
        amp=config.amp,
        predict_labels=config.predict_labels,
        maps_cache=_maps_cache(config),
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
        classifier=facts,
        started=start,
    )
    if not distributed.is_main():  # rank 0 merged every rank's records and reports
        return None
    print("\nwsss generate_masks summary\n" + summary_table(summary_rows(result.summary)))
    return result.summary.get("miou")


def _recam_classifier(config: GenerateMasksCommand, classifier, device, bad):
    """cam=recam: the ReCAM classifier (fine-tuned from ``classifier`` on the train split and
    cached, when cam.checkpoint is unset), which computes the maps from here on."""
    cam = config.cam
    if not cam.checkpoint:
        log.info("cam=recam without a checkpoint: fine-tuning one on the %r split",
                 config.train_split)  # fmt: skip
        fitted = recam_for(
            classifier, config.dataset, config.train_split, cam, config.train,
            Path(config.cache_dir).expanduser(), device=device, bad=bad, amp=config.amp,
            num_workers=config.num_workers, seed=config.seed,
        )  # fmt: skip
        config = replace(config, cam=replace(cam, checkpoint=str(fitted)))
    recam = load_checkpoint(config.cam.checkpoint)
    if recam.class_names != tuple(classifier.class_names):
        raise ConfigError(
            f"{config.cam.checkpoint}: ReCAM classifier classes {list(recam.class_names)} differ "
            f"from the run's {list(classifier.class_names)}"
        )
    return config, recam


def _maps_cache(config: GenerateMasksCommand) -> Path | None:
    return Path(config.cache_dir).expanduser() / "maps" if config.cache_maps else None


def _boundary_network(config: GenerateMasksCommand, classifier, device, bad) -> Path:
    """refine=irn without a checkpoint: the CRF seeds of the train split, then the boundary
    network trained on them, each made once and cached."""
    cache = Path(config.cache_dir).expanduser()
    log.info("refine=irn without a checkpoint: making one from the %r split", config.train_split)
    seeds = irn_stages.seeds_for(
        classifier, config.dataset, config.train_split, config.cam, config.irn_seeds, cache,
        device=device, bad=bad, batch_size=config.batch_size,
        maps_cache=_maps_cache(config),
    )  # fmt: skip
    return irn_stages.affinity_for(
        classifier, config.dataset, config.train_split, seeds, config.affinity, cache,
        device=device, bad=bad, num_workers=config.num_workers, seed=config.seed,
    )  # fmt: skip


main = common.command("generate_masks")(run)
