"""What ``cam=lpcam`` needs, made on the way and cached: the class prototypes of the training
photos (:mod:`wsss.cams.prototypes`).

    prototypes   fit_prototypes(the classifier's final features of every training photo)
                 -> <cache>/prototypes/<key>/prototypes.pt

The key is a digest of the classifier's weights, the dataset and split, the working resolution
and the fit settings, so a rerun reuses the file and a change anywhere upstream makes a new one.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import torch
from tqdm import tqdm

from wsss import distributed
from wsss.cams.methods import PrototypeCam
from wsss.cams.prototypes import fit_prototypes
from wsss.data import load_image
from wsss.data.datasets import DatasetSettings
from wsss.data.screen import BadImages
from wsss.errors import DataError
from wsss.io import json_digest
from wsss.masks.predictor import at_working_size
from wsss.models import LoadedClassifier
from wsss.models.classifier import weights_digest

log = logging.getLogger(__name__)


def prototypes_for(
    classifier: LoadedClassifier,
    dataset: DatasetSettings,
    split: str,
    cam: PrototypeCam,
    cache_dir: Path,
    *,
    device: torch.device | str = "cpu",
    bad: BadImages | None = None,
) -> Path:
    """The prototypes file of ``split``'s labelled photos, fitted once and cached."""
    parts = {
        "classifier": weights_digest(classifier.model), "dataset": asdict(dataset),
        "split": split, "max_side": cam.max_side, "fit": asdict(cam.fit),
    }  # fmt: skip
    path = Path(cache_dir) / "prototypes" / json_digest(parts) / "prototypes.pt"
    if path.is_file():
        log.info("reusing the LPCAM prototypes %s", path)
        return path
    split_samples = (bad or BadImages()).screen(dataset.load(split, cache_dir=cache_dir))
    samples = [s for s in split_samples.samples if s.labels]
    if not samples:
        raise DataError(f"cam=lpcam: split {split!r} has no labelled images to fit prototypes on")
    if distributed.is_main():
        log.info("LPCAM: prototypes of %d labelled images of %r (cached at %s)",
                 len(samples), split, path)  # fmt: skip
        model = classifier.model.to(device).eval()
        prototypes = fit_prototypes(
            _features(model, samples, cam.max_side, device),
            model.cam_weights, list(classifier.class_names), cam.fit,
        )  # fmt: skip
        path.parent.mkdir(parents=True, exist_ok=True)
        prototypes.save(path)
    distributed.barrier()
    return path


def _features(model, samples, max_side: int | None, device) -> Iterator[tuple[torch.Tensor, tuple]]:
    """Each photo's final feature map at the working resolution (one scale, no flip, as LPCAM
    clusters them), with its labels."""
    with torch.inference_mode():
        for sample in tqdm(samples, desc="LPCAM features", unit="img"):
            image = at_working_size(load_image(sample.image_path), max_side)
            batch = torch.from_numpy(image).permute(2, 0, 1)[None].float().div_(255).to(device)
            yield model.forward_features(batch)[0].cpu(), sample.labels
