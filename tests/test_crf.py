"""Dense CRF refinement: input contracts, edge following, both recipes, workers, failures."""

import sys

import numpy as np
import pytest

from wsss.errors import MissingDependencyError
from wsss.masks import IGNORE, cam_to_label_map
from wsss.masks.crf import (
    PYDENSECRF_HELP,
    CRFFailure,
    CRFSettings,
    crf_label_map,
    crf_label_maps,
    dense_crf,
    import_pydensecrf,
)
from wsss.parallel import ordered_map

pytest.importorskip("pydensecrf.densecrf", reason=PYDENSECRF_HELP)


def scene(size=48):
    """A red square on a textured grey background, and a blurry map that spills past it."""
    rng = np.random.default_rng(0)
    image = rng.integers(90, 140, (size, size, 3)).astype(np.uint8)
    truth = np.zeros((size, size), bool)
    truth[12:32, 14:34] = True
    image[truth] = [200, 30, 30]
    ys, xs = np.mgrid[0:size, 0:size]
    blob = np.exp(-(((ys - 22) / 13.0) ** 2 + ((xs - 24) / 13.0) ** 2))
    return image, truth, (blob / blob.max()).astype(np.float32)[None]


def iou(a, b):
    return (a & b).sum() / (a | b).sum()


@pytest.mark.parametrize("mode", ["label", "soft"])
def test_crf_pulls_the_mask_onto_the_object_edges(mode):
    image, truth, cams = scene()
    before = cam_to_label_map(cams, [2], 0.15) == 3
    after = crf_label_map(image, cams, [2], CRFSettings(mode=mode))
    assert set(np.unique(after)) <= {0, 3, IGNORE}
    assert iou(after == 3, truth) > iou(before, truth) + 0.1


def test_label_mode_marks_disagreement_uncertain():
    image, truth, cams = scene()
    out = crf_label_map(image, cams * 0.6, [0], CRFSettings(mode="label"))
    # between the permissive (0.05) and the confident (0.30) run, pixels are 255
    assert (out == IGNORE).any() and (out == 1).any() and (out == 0).any()


def test_soft_mode_equals_a_bare_pydensecrf_call():
    dcrf = import_pydensecrf()
    image, _, cams = scene()
    s = CRFSettings(mode="soft", bilateral_sxy=80, bilateral_srgb=13, alpha=8, reference_size=48)
    probs = np.concatenate([(1 - cams.max(0, keepdims=True)) ** 8, cams])
    crf = dcrf.DenseCRF2D(48, 48, 2)
    crf.setUnaryEnergy(
        np.ascontiguousarray(-np.log(np.clip(probs, 1e-5, 1)).reshape(2, -1), dtype=np.float32)
    )
    crf.addPairwiseGaussian(sxy=3, compat=3)
    crf.addPairwiseBilateral(sxy=80, srgb=13, rgbim=image, compat=10)
    bare = np.array(crf.inference(10)).reshape(2, 48, 48).argmax(0)
    ours = crf_label_map(image, cams, [4], s)
    assert np.array_equal(ours, np.array([0, 5], np.uint8)[bare])


def test_spatial_widths_scale_with_the_image_size():
    image, _, cams = scene()
    s = CRFSettings(reference_size=48 * 4, bilateral_sxy=80, gaussian_sxy=12)
    same = CRFSettings(reference_size=None, bilateral_sxy=20)
    assert np.array_equal(crf_label_map(image, cams, [0], s), crf_label_map(image, cams, [0], same))


def test_downscale_keeps_the_full_size_and_the_answer():
    image, truth, cams = scene(64)
    full = crf_label_map(image, cams, [0], CRFSettings(reference_size=None, bilateral_sxy=20))
    half = crf_label_map(
        image, cams, [0], CRFSettings(reference_size=None, bilateral_sxy=20, downscale=0.5)
    )
    assert half.shape == (64, 64)
    assert iou(half == 1, full == 1) > 0.8
    assert abs(iou(half == 1, truth) - iou(full == 1, truth)) < 0.1


def test_inputs_that_pydensecrf_would_misread_are_refused():
    image, _, cams = scene()
    unary = np.zeros((2, 48 * 48), np.float32)
    with pytest.raises(ValueError, match="C-contiguous"):
        dense_crf(image[:, ::-1], unary, CRFSettings())
    with pytest.raises(ValueError, match="uint8"):
        dense_crf(image.astype(np.float32), unary, CRFSettings())
    with pytest.raises(ValueError, match="float32"):
        dense_crf(image, unary.astype(np.float64), CRFSettings())


def test_a_bad_image_becomes_a_reported_failure_not_a_crash():
    image, _, cams = scene()
    # maps of the wrong size
    bad, good = crf_label_maps([(image, cams[:, :10], [0]), (image, cams, [0])], CRFSettings())
    assert isinstance(bad, CRFFailure) and bad.error
    assert np.array_equal(good, crf_label_map(image, cams, [0], CRFSettings()))


def _square(x):
    return x * x


def test_ordered_map_keeps_order_with_workers():
    assert list(ordered_map(_square, range(20), workers=2, max_pending=3)) == [
        x * x for x in range(20)
    ]
    assert list(ordered_map(_square, iter([]), workers=2)) == []


def test_missing_pydensecrf_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "pydensecrf.densecrf", None)
    with pytest.raises(MissingDependencyError, match="pip install pydensecrf2"):
        import_pydensecrf()
