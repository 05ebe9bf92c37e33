"""One path from an image to its mask, used by generation, ``explain`` and the benchmarks.

    predictor = MaskPredictor(model, ClassifierCam(), ThresholdSettings(), CRFSettings())
    prediction = predictor.predict(image, labels=[7, 17])  # uint8 (H, W, 3), class indices
    prediction.maps        # (2, H, W) float32 normalised maps, peak ~1 each (refined, with
                           # a map refiner)
    prediction.label_map   # (H, W) uint8: the threshold rule (0 bg, index + 1, 255 unsure)
    prediction.crf_mask    # the dense CRF's label map (None without a CRF)
    prediction.mask        # what to write: the CRF's label map when there is one

    for item, prediction in predictor.stream(batches):  # a whole split, the CRF in workers
        ...

The steps, in order: maps at the working resolution (``cam.max_side``; scales and flip), the map
refiner when one is set (``refine``: PAR, IRN's random walk), the maps brought to the image's
size (bilinear), the threshold rule (:attr:`MaskPredictor.threshold`), then the dense CRF at the
working resolution, its label map brought to the image's size (nearest).

It is a little over 350 lines because it is the one place where those steps meet: split, the
path from an image to its mask would again be spread over several modules.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Protocol, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from wsss.cams import CamSettings, multiscale_cams, normalize_cams, upsample_cams
from wsss.data.images import as_rgb_uint8
from wsss.devices import autocast_settings
from wsss.errors import ConfigError, DataError
from wsss.masks.crf import CRFFailure, CRFSettings, crf_label_maps
from wsss.masks.maps_cache import CachedMaps
from wsss.masks.quality import region_features
from wsss.masks.refine import RefineSettings
from wsss.masks.threshold import ThresholdSettings, check_class_indices
from wsss.models.classifier import weights_digest

log = logging.getLogger(__name__)


@dataclass
class MaskPrediction:
    """One image's maps and masks.

    ``labels``: the 0-based classes the maps are for (given, or chosen by the classifier, then
    with their ``probabilities``). ``maps``: (N, H, W) float32 in [0, 1], after the refiner
    when one is set. ``label_map``: the
    threshold rule's (H, W) uint8 map. ``crf_mask``: the dense CRF's label map (None without a
    CRF, or when it failed: ``crf_failure`` says why).
    """

    labels: tuple[int, ...]
    maps: np.ndarray
    label_map: np.ndarray
    probabilities: tuple[float, ...] | None = None
    crf_mask: np.ndarray | None = None
    crf_failure: str | None = None

    @property
    def mask(self) -> np.ndarray:
        """The label map to write: the CRF's when there is one."""
        return self.crf_mask if self.crf_mask is not None else self.label_map


class PredictorInput(Protocol):
    """What :meth:`MaskPredictor.stream` needs of an item: its uint8 (H, W, 3) ``image``, its
    0-based ``labels`` (empty or None: the classifier chooses) and a ``name`` for errors."""

    image: np.ndarray
    labels: Sequence[int] | None
    name: object


Item = TypeVar("Item", bound=PredictorInput)


def working_size(size: tuple[int, int], max_side: int | None) -> tuple[int, int]:
    """(height, width) of an image of ``size`` shrunk so its long side is at most ``max_side``."""
    height, width = size
    if max_side is None or max(height, width) <= max_side:
        return height, width
    scale = max_side / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def at_working_size(image: np.ndarray, max_side: int | None) -> np.ndarray:
    """``image`` (H, W, 3 uint8) shrunk to :func:`working_size` (itself when it fits), with
    PIL's antialiasing bilinear filter: the resolution maps and the CRF work at."""
    size = working_size(image.shape[:2], max_side)
    if size == image.shape[:2]:
        return image
    return np.array(Image.fromarray(image).resize(size[::-1], Image.BILINEAR))


def label_rule(mask: ThresholdSettings, refine: RefineSettings | None) -> ThresholdSettings:
    """The threshold rule label maps are made with: the ``mask`` group's, unless the map refiner
    sets its own background score (IRN's walked maps are compared with a fixed one)."""
    if refine is None or refine.bg_threshold is None:
        return mask
    return replace(mask, rule="fixed", bg_threshold=refine.bg_threshold)


class MaskPredictor:
    """Maps, label map and CRF mask of images, for a classifier and the ``cam``, ``mask``,
    ``refine`` and ``crf`` settings.

    ``model`` maps (B, 3, H, W) RGB floats in [0, 1] to (B, K) scores (a wsss classifier, or any
    classifier with ``cam.target_layer`` set). ``refine``: a map refiner (PAR, IRN's random
    walk) applied to the maps at the working resolution; the label map is then made from the
    refined maps with :attr:`threshold`. ``predict_labels``: images given without labels get the
    classes whose sigmoid probability is at least this (None: an error). ``maps_cache``: a
    folder where :meth:`stream` keeps each image's maps (:mod:`wsss.masks.maps_cache`), so a
    rerun that changes only the rule, the background score or the CRF does not recompute them.
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
        predict_labels: float | None = None,
        maps_cache: str | Path | None = None,
    ):
        self.cam, self.crf, self.refiner = cam, crf, refine
        self._mask = mask or ThresholdSettings()
        for settings in (self.cam, self._mask, self.crf, self.refiner):
            if settings is not None:
                settings.validate()
        #: the threshold rule label maps are made with (:func:`label_rule`)
        self.threshold = label_rule(self._mask, refine)
        if self.threshold is not self._mask:
            log.info(
                "refine=%s: label maps use its background score %.2f, not mask.rule=%s",
                refine.name,
                self.threshold.bg_threshold,
                self._mask.rule,
            )
        if predict_labels is not None and not 0.0 < predict_labels < 1.0:
            raise ConfigError(f"predict_labels must be in (0, 1), got {predict_labels}")
        self.predict_labels = predict_labels
        self.device = torch.device(device)
        self.amp = amp
        # channels-last convolutions are faster on CPU (oneDNN) as on GPU
        self.model = model.to(self.device).eval().to(memory_format=torch.channels_last)
        self._method = cam.bind(self.model)
        self._cache = None
        if maps_cache:
            self._cache = CachedMaps(maps_cache, weights_digest(self.model), cam, amp, refine)

    def settings(self) -> dict:
        """Every setting that determines the masks, as JSON-ready values (the CRF's worker
        count changes nothing)."""
        crf = asdict(self.crf) if self.crf else None
        if crf:
            crf.pop("workers")
        return {
            "cam": asdict(self.cam),
            "refine": asdict(self.refiner) if self.refiner else None,
            "mask": asdict(self._mask),
            "crf": crf,
        }

    # -- maps --------------------------------------------------------------------------------

    def _batch(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """Same-size uint8 images as a (B, 3, h, w) float batch at the working resolution."""
        sizes = {image.shape for image in images}
        if len(sizes) != 1:
            raise ValueError(f"images of one batch must share a size, got {sorted(sizes)}")
        images = [at_working_size(im, self.cam.max_side) for im in images]
        batch = torch.stack([torch.from_numpy(np.require(im, np.uint8, "CW")) for im in images])
        batch = batch.permute(0, 3, 1, 2).to(self.device).float().div_(255)
        return batch.contiguous(memory_format=torch.channels_last)

    def _cams(self, batch: torch.Tensor, classes) -> list[np.ndarray]:
        """Normalised maps at the working resolution (the forward passes: the costly part)."""
        autocast = autocast_settings(self.amp, self.device)
        with torch.autocast(self.device.type, **autocast):
            summed = multiscale_cams(
                self._method, batch, [list(c) for c in classes], self.cam.scales, self.cam.flip
            )
        return [normalize_cams(m.float()).cpu().numpy() for m in summed]

    def _refined(self, batch: torch.Tensor, maps: list[np.ndarray], classes) -> list[np.ndarray]:
        """``maps`` through the map refiner, when one is set."""
        if self.refiner is None:
            return maps
        pictures = batch.mul(255).round().byte().permute(0, 2, 3, 1).cpu().numpy()
        return [
            self.refiner.refine(picture, m, c)
            for picture, m, c in zip(pictures, maps, classes, strict=True)
        ]

    def _maps(self, batch: torch.Tensor, classes, size: tuple[int, int]) -> list[np.ndarray]:
        """Maps at the working resolution, refined, then upsampled to ``size``."""
        maps = self._refined(batch, self._cams(batch, classes), classes)
        return [upsample_cams(torch.from_numpy(m), size).numpy() for m in maps]

    def _cached_maps(self, batch, classes, size, names) -> list[np.ndarray]:
        """:meth:`_maps`, read from the maps cache where it has them, and kept there."""
        found = self._cache.get(
            names,
            size,
            classes,
            compute=lambda todo: self._cams(batch[todo], [classes[i] for i in todo]),
            refine=lambda todo, maps: self._refined(batch[todo], maps, [classes[i] for i in todo]),
        )
        return [upsample_cams(torch.from_numpy(m), size).numpy() for m in found]

    @torch.no_grad()
    def _chosen_labels(self, batch: torch.Tensor) -> list[tuple[tuple[int, ...], tuple]]:
        probabilities = torch.sigmoid(self.model(batch).float()).cpu()
        chosen = []
        for row in probabilities:
            classes = torch.nonzero(row >= self.predict_labels).flatten().tolist()
            chosen.append((tuple(classes), tuple(round(float(row[c]), 6) for c in classes)))
        return chosen

    def maps(
        self, images: Sequence[np.ndarray], classes: Sequence[Sequence[int]]
    ) -> list[np.ndarray]:
        """Normalised maps (len(classes[i]), H, W) of each same-size uint8 image (refined,
        when a refiner is set)."""
        return self._maps(self._batch(images), classes, images[0].shape[:2])

    def _predict_without_crf(
        self,
        images: Sequence[np.ndarray],
        labels: Sequence[Sequence[int] | None],
        names: Sequence[object] | None = None,
    ) -> list[MaskPrediction]:
        batch = self._batch(images)
        labels = [tuple(classes or ()) for classes in labels]
        probabilities: list[tuple | None] = [None] * len(images)
        unlabelled = [i for i, classes in enumerate(labels) if not classes]
        if unlabelled:
            if self.predict_labels is None:
                name = names[unlabelled[0]] if names else f"image {unlabelled[0]}"
                raise DataError(f"{name}: no labels, and predict_labels is not set")
            chosen = self._chosen_labels(batch[unlabelled])
            for i, (classes, probs) in zip(unlabelled, chosen, strict=True):
                labels[i], probabilities[i] = classes, probs
        size = images[0].shape[:2]
        if self._cache is not None and names is not None:
            maps = self._cached_maps(batch, labels, size, names)
        else:
            maps = self._maps(batch, labels, size)
        return [
            MaskPrediction(classes, found, self.threshold.label_map(found, classes), probs)
            for classes, found, probs in zip(labels, maps, probabilities, strict=True)
        ]

    # -- predictions ---------------------------------------------------------------------------

    def predict_batch(
        self,
        images: Sequence[np.ndarray],
        labels: Sequence[Sequence[int] | None],
        names: Sequence[object] | None = None,
    ) -> list[MaskPrediction]:
        """Predict same-size images, the CRF (when set) in this process. An image is uint8
        (H, W, 3) RGB, or anything :func:`~wsss.data.images.as_rgb_uint8` converts (a PIL image,
        a float array in [0, 1], a tensor). ``labels[i]``: 0-based classes, or empty / None for
        the classifier to choose (needs ``predict_labels``; ``names[i]`` names the image in
        that error)."""
        images = [as_rgb_uint8(image) for image in images]
        for classes in labels:
            check_class_indices(classes or ())
        predictions = self._predict_without_crf(images, labels, names)
        if self.crf is None:
            return predictions
        return [
            self._with_crf(p, _crf_or_failure_here(*self.crf_input(image, p), self.crf))
            for image, p in zip(images, predictions, strict=True)
        ]

    def predict(self, image: np.ndarray, labels: Sequence[int] | None = None) -> MaskPrediction:
        """Predict one image (uint8 (H, W, 3), or see :meth:`predict_batch`)."""
        return self.predict_batch([image], [labels])[0]

    def stream(self, batches: Iterable[Sequence[Item]]) -> Iterator[tuple[Item, MaskPrediction]]:
        """``(item, prediction)`` for every item of ``batches`` (each a list of same-size
        images: see :class:`PredictorInput`), in order. The CRF runs in ``crf.workers``
        processes while this process computes the next maps; an image it fails on keeps its
        threshold-rule mask and says why in ``crf_failure``."""

        def predicted() -> Iterator[tuple[Item, MaskPrediction]]:
            for batch in batches:
                images = [item.image for item in batch]
                names = [item.name for item in batch]
                found = self._predict_without_crf(images, [i.labels for i in batch], names)
                yield from zip(batch, found, strict=True)

        if self.crf is None:
            yield from predicted()
            return
        in_flight: deque[tuple[Item, MaskPrediction]] = deque()

        def jobs():
            for item, prediction in predicted():
                in_flight.append((item, prediction))
                yield self.crf_input(item.image, prediction)

        for result in crf_label_maps(jobs(), self.crf):
            item, prediction = in_flight.popleft()
            yield item, self._with_crf(prediction, result)

    def crf_input(self, image: np.ndarray, prediction: MaskPrediction):
        """The CRF's input for a prediction: (image, maps, classes) at the working resolution,
        where the CRF runs (:func:`~wsss.masks.crf.crf_label_maps` takes a stream of them)."""
        size = working_size(image.shape[:2], self.cam.max_side)
        maps = prediction.maps
        if size != image.shape[:2]:
            image = at_working_size(image, self.cam.max_side)
            small = F.interpolate(
                torch.from_numpy(maps)[None], size, mode="bilinear", antialias=True
            )
            maps = small[0].numpy()
        return image, maps, prediction.labels

    @staticmethod
    def _with_crf(prediction: MaskPrediction, result: np.ndarray | CRFFailure) -> MaskPrediction:
        """``prediction`` with the CRF's label map brought to the image's size (nearest
        neighbour), or with its failure."""
        if isinstance(result, CRFFailure):
            prediction.crf_failure = result.error
            return prediction
        prediction.crf_mask = label_map_at(result, prediction.label_map.shape)
        return prediction

    def assess(self, image: np.ndarray, prediction: MaskPrediction) -> dict[int, dict]:
        """The quality features (:mod:`wsss.masks.quality`) of each class's region in the
        prediction's mask, from a few forward passes of the classifier."""
        return region_features(
            self.model, image, prediction.maps, prediction.labels, prediction.mask, self.device
        )


def label_map_at(label_map: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A label map (the CRF's, at the working resolution) brought to ``shape`` (height, width)
    by nearest neighbour, as generation writes it."""
    if label_map.shape == tuple(shape):
        return label_map
    height, width = shape
    return np.array(Image.fromarray(label_map).resize((width, height), Image.NEAREST))


def _crf_or_failure_here(image, cams, classes, settings: CRFSettings) -> np.ndarray | CRFFailure:
    """:func:`crf_label_map` in this process, as the workers run it."""
    return next(crf_label_maps([(image, cams, classes)], replace(settings, workers=1)))
