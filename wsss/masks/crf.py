"""The dense CRF (pydensecrf): from normalised maps to a label map that follows the image's edges.

:func:`crf_label_map` runs it on one image; :func:`crf_label_maps` on a stream of images, in
worker processes, in order, reporting an image it fails on as a :class:`CRFFailure` instead of
stopping (``MaskPredictor.stream`` uses it while the main process computes the next maps).

Two recipes:

* ``label`` (IRN): the unary comes from a hard label map (``gt_prob`` confidence), made once with
  a high foreground threshold and once with a low one; the CRF runs on both, and pixels where its
  two label maps disagree are uncertain (255). Confident foreground needs the high-threshold map;
  confident background needs both to say background.
* ``soft`` (PSA): background score ``(1 - max_c cam_c) ** alpha``, the unary is the negative log
  of the (clipped) scores of background and the image's classes.

Only background and the image's own classes enter the CRF. Spatial kernel widths are given for an
image of ``reference_size`` pixels on its long side (500: IRN's values for VOC) and scale with the
image. ``downscale`` < 1 runs the CRF on a smaller image with the widths scaled alike, and
upsamples the marginals.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from wsss.errors import ConfigError, MissingDependencyError
from wsss.masks.threshold import IGNORE
from wsss.parallel import default_workers, ordered_map

PYDENSECRF_HELP = (
    "the dense CRF needs pydensecrf: pip install pydensecrf2 (the maintained fork; it "
    "compiles with gcc and builds on Python 3.10-3.12, not 3.13). Or run with crf=none."
)


def import_pydensecrf():
    """Import pydensecrf's DenseCRF2D module, or explain how to get it."""
    try:
        import pydensecrf.densecrf as dcrf
    except ImportError as exc:
        raise MissingDependencyError(PYDENSECRF_HELP) from exc
    return dcrf


@dataclass
class CRFSettings:
    """Every pydensecrf parameter, and the worker processes that run it (the ``crf`` config
    group; ``crf=none`` makes it None)."""

    mode: str = "label"  # label | soft
    iterations: int = 10
    gaussian_sxy: float = 3.0
    gaussian_compat: float = 3.0
    # Tuned on VOC 2012 train's tune third (scripts/tune_crf.py); IRN uses sxy 50, srgb 5.
    bilateral_sxy: float = 80.0
    bilateral_srgb: float = 5.0
    bilateral_compat: float = 10.0
    #: label mode: confidence of the hard labels, and the two foreground thresholds
    gt_prob: float = 0.7
    high_threshold: float = 0.30
    low_threshold: float = 0.05
    #: soft mode: exponent of the background score
    alpha: float = 2.0
    #: run on an image resized by this factor (<= 1), spatial widths scaled with it
    downscale: float = 1.0
    #: the sxy widths are in pixels of an image whose long side is this (IRN's values are for
    #: VOC, about 500 px); they scale with the image. None: plain pixels.
    reference_size: int | None = 500
    #: worker processes refining images in parallel with the maps; 0: one per core
    workers: int = 0

    def validate(self) -> None:
        if self.mode not in ("label", "soft"):
            raise ConfigError(f"crf.mode must be 'label' or 'soft', got {self.mode!r}")
        if not 0 < self.downscale <= 1:
            raise ConfigError(f"crf.downscale must be in (0, 1], got {self.downscale}")
        if not 0 < self.gt_prob < 1:
            raise ConfigError(f"crf.gt_prob must be in (0, 1), got {self.gt_prob}")
        if not 0 <= self.low_threshold <= self.high_threshold <= 1:
            raise ConfigError(
                "crf thresholds must satisfy 0 <= low_threshold <= high_threshold <= 1"
            )
        if self.reference_size is not None and self.reference_size < 1:
            raise ConfigError(f"crf.reference_size must be >= 1, got {self.reference_size}")
        if self.iterations < 1:
            raise ConfigError(f"crf.iterations must be >= 1, got {self.iterations}")
        if self.workers < 0:
            raise ConfigError(f"crf.workers must be >= 0, got {self.workers}")


def dense_crf(
    image: np.ndarray,
    unary: np.ndarray,
    settings: CRFSettings,
    scale: float = 1.0,
) -> np.ndarray:
    """Mean-field inference. ``image``: (H, W, 3) uint8 RGB; ``unary``: (L, H*W) float32 negative
    log-probabilities. Returns the (L, H, W) float32 marginals.

    pydensecrf reads raw buffers: a non-contiguous, wrongly typed or flipped-stride array would be
    read as different pixels, silently. So both inputs are checked, not converted.
    """
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be (H, W, 3) uint8, got {image.dtype} {image.shape}")
    if not image.flags.c_contiguous:
        raise ValueError("image must be C-contiguous (np.ascontiguousarray)")
    height, width = image.shape[:2]
    labels = unary.shape[0]
    if unary.dtype != np.float32 or unary.shape != (labels, height * width):
        raise ValueError(
            f"unary must be float32 (L, {height * width}), got {unary.dtype} {unary.shape}"
        )
    if not unary.flags.c_contiguous:
        raise ValueError("unary must be C-contiguous")
    dcrf = import_pydensecrf()
    crf = dcrf.DenseCRF2D(width, height, labels)
    crf.setUnaryEnergy(unary)
    crf.addPairwiseGaussian(sxy=settings.gaussian_sxy * scale, compat=settings.gaussian_compat)
    crf.addPairwiseBilateral(
        sxy=settings.bilateral_sxy * scale,
        srgb=settings.bilateral_srgb,
        rgbim=image,
        compat=settings.bilateral_compat,
    )
    return np.asarray(crf.inference(settings.iterations), dtype=np.float32).reshape(
        labels, height, width
    )


def _resize(array: np.ndarray, size: tuple[int, int], order: int) -> np.ndarray:
    """Resize the last two axes of ``array`` to ``size`` (H, W); order 0: nearest, 1: bilinear."""
    from skimage.transform import resize

    if array.shape[-2:] == tuple(size):
        return array
    out_shape = (*array.shape[:-2], *size)
    return resize(array, out_shape, order=order, preserve_range=True, anti_aliasing=order > 0)


def _crf_argmax(
    image: np.ndarray,
    source: np.ndarray,
    settings: CRFSettings,
    make_unary: Callable[[np.ndarray], np.ndarray],
    order: int,
) -> np.ndarray:
    """Run the CRF (at ``settings.downscale``) and return the full-size argmax over labels.

    ``source`` is what ``make_unary`` turns into the unary: per-label scores (L, H, W) or a hard
    label map (H, W); ``order`` is how to resize it (1 bilinear, 0 nearest).
    """
    height, width = image.shape[:2]
    scale = settings.downscale
    spatial = scale * (
        max(height, width) / settings.reference_size if settings.reference_size else 1
    )
    if scale < 1:
        size = (max(1, round(height * scale)), max(1, round(width * scale)))
        image = _resize(image.transpose(2, 0, 1), size, 1).transpose(1, 2, 0)
        image = np.ascontiguousarray(image.round().astype(np.uint8))
        source = _resize(source, size, order)
    marginals = dense_crf(image, make_unary(source), settings, spatial)
    if scale < 1:
        marginals = _resize(marginals, (height, width), 1)
    return marginals.argmax(axis=0)


def crf_label_map(
    image: np.ndarray, cams: np.ndarray, classes: Sequence[int], settings: CRFSettings
) -> np.ndarray:
    """An image's label map (0 bg, class index + 1, 255 unsure) from its normalised maps.

    ``image``: (H, W, 3) uint8 RGB; ``cams``: (N, H, W) maps in [0, 1] for ``classes``
    (0-based). Returns (H, W) uint8.
    """
    if len(classes) == 0:
        return np.zeros(image.shape[:2], np.uint8)
    ids = np.array([0, *[int(c) + 1 for c in classes]], dtype=np.uint8)
    image = np.ascontiguousarray(image, dtype=np.uint8)
    if not image.flags.writeable:  # pydensecrf takes a writeable buffer, though it only reads
        image = image.copy()
    num_labels = len(ids)

    if settings.mode == "soft":
        background = (1.0 - cams.max(axis=0, keepdims=True)) ** settings.alpha
        scores = np.concatenate([background, cams]).astype(np.float32)

        def soft_unary(source: np.ndarray) -> np.ndarray:
            nll = -np.log(np.clip(source, 1e-5, 1.0)).reshape(num_labels, -1)
            return np.ascontiguousarray(nll, dtype=np.float32)

        return ids[_crf_argmax(image, scores, settings, soft_unary, order=1)]

    from pydensecrf.utils import unary_from_labels

    def label_unary(source: np.ndarray) -> np.ndarray:
        hard = np.rint(source).astype(np.int64).reshape(-1)
        unary = unary_from_labels(hard, num_labels, settings.gt_prob, zero_unsure=False)
        return np.ascontiguousarray(unary, dtype=np.float32)

    outputs = []
    for threshold in (settings.high_threshold, settings.low_threshold):
        # Hard labels as indices into [background, *classes], not as class ids.
        padded = np.concatenate([np.full((1, *cams.shape[1:]), threshold, np.float32), cams])
        hard = padded.argmax(axis=0).astype(np.float32)
        outputs.append(_crf_argmax(image, hard, settings, label_unary, order=0))
    high, low = outputs
    label_map = ids[high]
    label_map[high == 0] = IGNORE  # not confidently foreground ...
    label_map[(high == 0) & (low == 0)] = 0  # ... unless both runs agree on background
    return label_map


@dataclass
class CRFFailure:
    """A CRF run that raised: reported by the caller, which keeps the mask from before the CRF."""

    error: str


#: one image's CRF input: (H, W, 3) uint8 image, (N, H, W) maps, their 0-based classes
CRFJob = tuple[np.ndarray, np.ndarray, Sequence[int]]


def crf_label_maps(
    jobs: Iterable[CRFJob], settings: CRFSettings
) -> Iterator[np.ndarray | CRFFailure]:
    """:func:`crf_label_map` of every job, in order, on ``settings.workers`` processes (0: one
    per core), a bounded number in flight. An image that fails gives a :class:`CRFFailure`
    (one bad image must not end a long run); a missing pydensecrf stops the stream."""
    workers = settings.workers or default_workers()
    yield from ordered_map(_crf_or_failure, ((*job, settings) for job in jobs), workers)


def _crf_or_failure(args) -> np.ndarray | CRFFailure:
    """Worker entry: ``crf_label_map(*args)``, or a CRFFailure describing what went wrong."""
    image, cams, classes, settings = args
    try:
        return crf_label_map(image, cams, classes, settings)
    except MissingDependencyError:
        raise
    except Exception as exc:  # one bad image must not kill a long run
        return CRFFailure(f"{type(exc).__name__}: {exc}")
