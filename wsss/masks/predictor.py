"""One path from an image to its mask, used by generation, ``explain`` and the benchmarks.

    predictor = MaskPredictor(model, ClassifierCam(), ThresholdSettings(), CRFSettings())
    prediction = predictor.predict(image, labels=[7, 17])  # uint8 (H, W, 3), class indices
    prediction.cams        # (2, H, W) float32 normalised maps, peak ~1 each
    prediction.label_map   # (H, W) uint8: the threshold rule (0 bg, index + 1, 255 unsure)
    prediction.mask        # the CRF-refined label map when a CRF is configured

Maps and the CRF run at the working resolution (``cam.max_side``); maps are upsampled to the
image's size (bilinear), the CRF's label map too (nearest), so masks are at the image's size.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from wsss.cams import CamSettings, multiscale_cams, normalize_cams, upsample_cams
from wsss.devices import autocast_settings
from wsss.errors import ConfigError, DataError
from wsss.masks.crf import CRFFailure, CRFSettings, refine_or_fail
from wsss.masks.refine import RefineSettings
from wsss.masks.threshold import ThresholdSettings


@dataclass
class MaskPrediction:
    """One image's maps and masks.

    ``labels``: the 0-based classes the maps are for (given, or chosen by the classifier, then
    with their ``probabilities``). ``cams``: (N, H, W) float32 in [0, 1]. ``label_map``: the
    threshold rule's (H, W) uint8 map. ``refined``: the CRF's label map (None without CRF, or
    when it failed: ``crf_failure`` says why).
    """

    labels: tuple[int, ...]
    cams: np.ndarray
    label_map: np.ndarray
    probabilities: tuple[float, ...] | None = None
    refined: np.ndarray | None = None
    crf_failure: str | None = None

    @property
    def mask(self) -> np.ndarray:
        """The label map to write: the refined one when there is one."""
        return self.refined if self.refined is not None else self.label_map


def working_size(size: tuple[int, int], max_side: int | None) -> tuple[int, int]:
    """(height, width) of an image of ``size`` shrunk so its long side is at most ``max_side``."""
    height, width = size
    if max_side is None or max(height, width) <= max_side:
        return height, width
    scale = max_side / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


class MaskPredictor:
    """Maps, label map and refined mask of images, for a classifier and the ``cam``, ``mask``,
    ``refine`` and ``crf`` settings.

    ``model`` maps (B, 3, H, W) RGB floats in [0, 1] to (B, K) scores (a wsss classifier, or any
    classifier with ``cam.target_layer`` set). ``refine``: a map refiner (PAR, IRN's random
    walk) applied to the maps at the working resolution; the label map is then made from the
    refined maps, with the refiner's ``bg_threshold`` when it sets one. ``label_threshold``:
    images given without labels get the classes whose sigmoid probability is at least this
    (None: an error).
    """

    def __init__(
        self,
        model: nn.Module,
        cam: CamSettings,
        mask: ThresholdSettings | None = None,
        crf: CRFSettings | None = None,
        *,
        refine: RefineSettings | None = None,
        device: torch.device | str = "cpu",
        amp: bool = False,
        label_threshold: float | None = None,
    ):
        self.cam, self.mask, self.crf = cam, mask or ThresholdSettings(), crf
        self.refiner = refine
        for settings in (self.cam, self.mask, self.crf, self.refiner):
            if settings is not None:
                settings.validate()
        self.rule = self.mask
        if refine is not None and refine.bg_threshold is not None:
            self.rule = replace(self.mask, rule="fixed", bg_threshold=refine.bg_threshold)
        if label_threshold is not None and not 0.0 < label_threshold < 1.0:
            raise ConfigError(f"predict_labels must be in (0, 1), got {label_threshold}")
        self.label_threshold = label_threshold
        self.device = torch.device(device)
        self.amp = amp
        # channels-last convolutions are faster on CPU (oneDNN) as on GPU
        self.model = model.to(self.device).eval().to(memory_format=torch.channels_last)
        self._method = cam.bind(self.model)

    def _batch(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """Same-size uint8 images as a (B, 3, h, w) float batch at the working resolution."""
        sizes = {image.shape for image in images}
        if len(sizes) != 1:
            raise ValueError(f"images of one batch must share a size, got {sorted(sizes)}")
        height, width = images[0].shape[:2]
        size = working_size((height, width), self.cam.max_side)
        if size != (height, width):  # PIL's resampling filters antialias when shrinking
            images = [
                np.array(Image.fromarray(im).resize(size[::-1], Image.BILINEAR)) for im in images
            ]
        batch = torch.stack([torch.from_numpy(np.require(im, np.uint8, "CW")) for im in images])
        batch = batch.permute(0, 3, 1, 2).to(self.device).float().div_(255)
        return batch.contiguous(memory_format=torch.channels_last)

    def _maps(self, batch: torch.Tensor, classes, size: tuple[int, int]) -> list[np.ndarray]:
        """Normalised maps at the working resolution, refined when a refiner is set, then
        upsampled to ``size``."""
        autocast = autocast_settings(self.amp, self.device)
        with torch.autocast(self.device.type, **autocast):
            summed = multiscale_cams(
                self._method, batch, [list(c) for c in classes], self.cam.scales, self.cam.flip
            )
        maps = [normalize_cams(m.float()).cpu() for m in summed]
        if self.refiner is not None:
            pictures = batch.mul(255).round().byte().permute(0, 2, 3, 1).cpu().numpy()
            maps = [
                torch.from_numpy(self.refiner.refine(picture, m.numpy(), c))
                for picture, m, c in zip(pictures, maps, classes, strict=True)
            ]
        return [upsample_cams(m, size).numpy() for m in maps]

    @torch.no_grad()
    def _chosen_labels(self, batch: torch.Tensor) -> list[tuple[tuple[int, ...], tuple]]:
        probabilities = torch.sigmoid(self.model(batch).float()).cpu()
        chosen = []
        for row in probabilities:
            classes = torch.nonzero(row >= self.label_threshold).flatten().tolist()
            chosen.append((tuple(classes), tuple(round(float(row[c]), 6) for c in classes)))
        return chosen

    def maps(
        self, images: Sequence[np.ndarray], classes: Sequence[Sequence[int]]
    ) -> list[np.ndarray]:
        """Normalised maps (len(classes[i]), H, W) of each same-size uint8 image (refined,
        when a refiner is set)."""
        return self._maps(self._batch(images), classes, images[0].shape[:2])

    def predict_batch(
        self,
        images: Sequence[np.ndarray],
        labels: Sequence[Sequence[int] | None],
        crf: bool = True,
        names: Sequence[object] | None = None,
    ) -> list[MaskPrediction]:
        """Predict same-size uint8 (H, W, 3) images. ``labels[i]``: 0-based classes, or empty /
        None for the classifier to choose (needs ``label_threshold``; ``names[i]`` names the
        image in that error). ``crf=False`` leaves the CRF to the caller (see
        :meth:`apply_crf`)."""
        batch = self._batch(images)
        labels = [tuple(classes or ()) for classes in labels]
        probabilities: list[tuple | None] = [None] * len(images)
        unlabelled = [i for i, classes in enumerate(labels) if not classes]
        if unlabelled:
            if self.label_threshold is None:
                name = names[unlabelled[0]] if names else f"image {unlabelled[0]}"
                raise DataError(f"{name}: no labels, and predict_labels is not set")
            chosen = self._chosen_labels(batch[unlabelled])
            for i, (classes, probs) in zip(unlabelled, chosen, strict=True):
                labels[i], probabilities[i] = classes, probs
        maps = self._maps(batch, labels, images[0].shape[:2])
        predictions = [
            MaskPrediction(classes, cams, self.rule.label_map(cams, classes), probs)
            for classes, cams, probs in zip(labels, maps, probabilities, strict=True)
        ]
        if crf and self.crf is not None:
            predictions = [self.apply_crf(im, p) for im, p in zip(images, predictions, strict=True)]
        return predictions

    def predict(
        self, image: np.ndarray, labels: Sequence[int] | None = None, crf: bool = True
    ) -> MaskPrediction:
        """Predict one uint8 (H, W, 3) image (see :meth:`predict_batch`)."""
        return self.predict_batch([image], [labels], crf)[0]

    def apply_crf(self, image: np.ndarray, prediction: MaskPrediction) -> MaskPrediction:
        """``prediction`` with its CRF-refined label map (or the failure) filled in."""
        return with_refinement(prediction, refine_or_fail(self.crf_job(image, prediction)))

    def crf_job(self, image: np.ndarray, prediction: MaskPrediction) -> tuple:
        """The picklable arguments of :func:`~wsss.masks.crf.refine_or_fail`, for a worker: the
        image and its maps at the working resolution, where the CRF runs."""
        size = working_size(image.shape[:2], self.cam.max_side)
        cams = prediction.cams
        if size != image.shape[:2]:
            image = np.array(Image.fromarray(image).resize(size[::-1], Image.BILINEAR))
            small = F.interpolate(
                torch.from_numpy(cams)[None], size, mode="bilinear", antialias=True
            )
            cams = small[0].numpy()
        return image, cams, prediction.labels, self.crf


def with_refinement(prediction: MaskPrediction, refined: np.ndarray | CRFFailure) -> MaskPrediction:
    """``prediction`` with a worker's result of :func:`~wsss.masks.crf.refine_or_fail`, brought
    to the image's size (nearest neighbour) when the CRF ran at a smaller working size."""
    if isinstance(refined, CRFFailure):
        prediction.crf_failure = refined.error
        return prediction
    height, width = prediction.label_map.shape
    if refined.shape != (height, width):
        refined = np.array(Image.fromarray(refined).resize((width, height), Image.NEAREST))
    prediction.refined = refined
    return prediction
