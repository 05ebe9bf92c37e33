"""What ``refine=irn`` needs, made on the way and cached: the CRF seeds of the training photos,
then the boundary network trained on them.

    seeds      generate_pseudo_masks(classifier, cam, crf) over the training split
               -> <cache>/seeds/<key>/            (a run folder: resumable, like any run)
    network    train_boundary_net(classifier's frozen backbone, the seeds)
               -> <cache>/affinity/<key>/affinity.pt

Each key is a digest of everything that determines the stage (the classifier's weights, the
dataset and split, the settings, and the earlier stage's key), so a rerun with the same settings
reuses both stages, and a change anywhere upstream makes new ones.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, replace
from pathlib import Path

import torch

from wsss import distributed
from wsss.cams import CamSettings
from wsss.data.datasets import DatasetSettings
from wsss.data.screen import BadImages
from wsss.engine.boundary_training import AffinitySettings, train_boundary_net
from wsss.engine.generation import generate_pseudo_masks
from wsss.engine.segmentation import MaskTargets
from wsss.errors import ConfigError
from wsss.export import ExportSettings
from wsss.io import json_digest
from wsss.masks import CRFSettings, MaskPredictor, ThresholdSettings
from wsss.models import LoadedClassifier
from wsss.models.boundary import save_boundary_net
from wsss.models.classifier import weights_digest

log = logging.getLogger(__name__)


def seeds_for(
    classifier: LoadedClassifier,
    dataset: DatasetSettings,
    split: str,
    cam: CamSettings,
    crf: CRFSettings,
    cache_dir: Path,
    *,
    device: torch.device | str = "cpu",
    bad: BadImages | None = None,
    batch_size: int = 8,
    maps_cache: Path | None = None,
) -> Path:
    """The run folder of the CRF seeds (label mode: confident foreground, confident background,
    uncertain between) of every image of ``split``, generated once and cached."""
    if crf.mode != "label":
        raise ConfigError("IRN's seeds come from the CRF's label mode: irn_seeds.mode=label")
    key = json_digest({
        "classifier": weights_digest(classifier.model),
        "dataset": asdict(dataset), "split": split,
        "cam": asdict(cam), "crf": {**asdict(crf), "workers": None},
    })  # fmt: skip
    folder = Path(cache_dir) / "seeds" / key
    if (folder / "summary.json").is_file():
        log.info("reusing the CRF seeds in %s", folder)
        return folder
    samples = dataset.load(split, cache_dir=cache_dir)
    log.info("CRF seeds of the %d images of split %r (cached in %s)", len(samples), split, folder)
    predictor = MaskPredictor(
        classifier.model, cam, ThresholdSettings(), crf, device=device, maps_cache=maps_cache
    )
    generate_pseudo_masks(
        predictor, samples, folder, ExportSettings(overlays=0, quality=False),
        batch_size=batch_size, bad=bad,
    )  # fmt: skip
    return folder


def affinity_for(
    classifier: LoadedClassifier,
    dataset: DatasetSettings,
    split: str,
    seeds: Path,
    settings: AffinitySettings,
    cache_dir: Path,
    *,
    device: torch.device | str = "cpu",
    bad: BadImages | None = None,
    num_workers: int = 0,
    seed: int = 0,
) -> Path:
    """The boundary network trained on ``seeds`` (a run folder of ``split``'s CRF seeds) on the
    classifier's frozen backbone, trained once and cached; returns its checkpoint."""
    key = json_digest({
        "classifier": weights_digest(classifier.model), "seeds": Path(seeds).name,
        "dataset": asdict(dataset), "split": split, "affinity": asdict(settings), "seed": seed,
    })  # fmt: skip
    path = Path(cache_dir) / "affinity" / key / "affinity.pt"
    if path.is_file():
        log.info("reusing the boundary network %s", path)
        return path
    samples = (bad or BadImages()).screen(dataset.load(split, cache_dir=cache_dir))
    log.info("training the boundary network on %d seeds (cached at %s)", len(samples), path)
    net, metrics = train_boundary_net(
        classifier.model, samples, MaskTargets(seeds), settings, device,
        num_workers=num_workers, seed=seed,
    )  # fmt: skip
    if distributed.is_main():
        save_boundary_net(path, net, classifier.spec, classifier.class_names, metrics)
    distributed.barrier()
    return path


def with_crf_workers(crf: CRFSettings | None, workers: int) -> CRFSettings:
    """IRN's seed CRF (label mode at the given settings, or the defaults) with ``workers``."""
    return replace(crf or CRFSettings(), mode="label", workers=workers)
