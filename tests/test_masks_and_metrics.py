import numpy as np
import pytest

from wsss.masks import IGNORE, cam_to_label_map
from wsss.metrics import ConfusionMatrix, ThresholdSweep, average_precision


def test_label_map_threshold_and_argmax():
    cams = np.array([[[0.9, 0.2, 0.05]], [[0.3, 0.6, 0.1]]], dtype=np.float32)  # 2 classes, 1x3
    lm = cam_to_label_map(cams, classes=[4, 1], bg_threshold=0.15)
    # pixel 0: class index 4 wins (id 5); pixel 1: class index 1 (id 2); pixel 2: all < 0.15
    assert lm.tolist() == [[5, 2, 0]]
    assert lm.dtype == np.uint8


def test_label_map_uncertain_band():
    cams = np.array([[[0.05, 0.2, 0.5]]], dtype=np.float32)
    lm = cam_to_label_map(cams, classes=[0], bg_threshold=0.1, fg_threshold=0.3)
    assert lm.tolist() == [[0, IGNORE, 1]]
    with pytest.raises(ValueError):
        cam_to_label_map(cams, classes=[0], bg_threshold=0.3, fg_threshold=0.1)


def test_label_map_no_classes_is_background():
    lm = cam_to_label_map(np.zeros((0, 2, 3), np.float32), classes=[], bg_threshold=0.1)
    assert lm.shape == (2, 3) and not lm.any()


def test_confusion_matrix_miou_by_hand():
    gt = np.array([[0, 0, 1, 1], [2, 2, 255, 1]], dtype=np.uint8)
    pred = np.array([[0, 1, 1, 1], [2, 0, 2, 255]], dtype=np.uint8)
    cm = ConfusionMatrix(3)
    cm.update(pred, gt)
    # gt 255 pixel ignored. Uncertain pred (gt=1) counted as background in miou.
    # bg: tp 1, fp (pred bg, gt!=bg) 1 (gt2) + 1 (uncertain gt1) = 2, fn 1 -> 1/4
    # c1: tp 2, fp 1, fn 1 (the uncertain) -> 2/4 ; c2: tp 1, fn 1 -> 1/2
    assert cm.iou.tolist() == pytest.approx([0.25, 0.5, 0.5])
    assert cm.miou == pytest.approx(np.mean([0.25, 0.5, 0.5]))
    # Confident pixels only: bg tp1 fp1 fn1 = 1/3; c1 tp2 fp1 = 2/3; c2 tp1 fn1 = 1/2
    assert cm.miou_confident == pytest.approx(np.mean([1 / 3, 2 / 3, 1 / 2]))
    assert cm.uncertain_fraction == pytest.approx(1 / 7)
    summary = cm.summary(["a", "b"])
    assert summary["uncertain_pixels"] == 1 and summary["pixels"] == 7
    assert summary["per_class"]["a"]["precision"] == pytest.approx(2 / 3, abs=1e-4)
    assert summary["per_class"]["b"]["recall"] == pytest.approx(0.5)
    # Objects vs background (uncertain as background; gt 255 ignored): marked as objects:
    # (0,1) (0,2) (0,3) (1,0), of which objects in gt: (0,2) (0,3) (1,0) -> 3 of 4.
    # Object pixels in gt: (0,2) (0,3) (1,0) (1,1) (1,3) = 5, marked: 3 -> 3/5.
    assert summary["foreground"] == {"precision": 0.75, "recall": 0.6}


def test_sweep_finds_the_right_threshold():
    gt = np.zeros((1, 10), np.uint8)
    gt[0, :4] = 1
    cams = np.linspace(1.0, 0.0, 10, dtype=np.float32)[None, None]  # 1.0 .. 0.0
    sweep = ThresholdSweep(2, thresholds=[0.1, 0.35, 0.6, 0.9])
    sweep.update(cams, [0], gt)
    # values > 0.6 are the first 4 pixels -> the 0.6 threshold is exact (mIoU 1)
    assert sweep.best == (0.6, 1.0)
    assert sweep.summary()["best_threshold"] == 0.6


def test_average_precision_matches_hand_computation():
    scores = np.array([[0.9, 0.1], [0.8, 0.7], [0.3, 0.2], [0.1, 0.6]])
    targets = np.array([[1, 0], [0, 1], [1, 0], [0, 0]])
    ap = average_precision(scores, targets)
    # class 0: ranks 1 (hit), 2 (miss), 3 (hit) -> (1 + 2/3) / 2
    assert ap.per_class[0] == pytest.approx((1 + 2 / 3) / 2)
    assert ap.per_class[1] == pytest.approx(1.0)
    assert ap.mean == pytest.approx(((1 + 2 / 3) / 2 + 1) / 2)
    assert average_precision(scores, np.zeros_like(targets)).per_class == [None, None]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_otsu_rule_splits_where_scikit_image_does(seed):
    """Our Otsu threshold is the upper edge of the bin scikit-image's centre names (half a bin
    above it: both split the histogram between the same bins), and the label map keeps the
    pixels at or above it."""
    from skimage.filters import threshold_otsu

    from wsss.masks import ThresholdSettings
    from wsss.masks.threshold import otsu_threshold

    rng = np.random.default_rng(seed)
    values = np.concatenate([rng.beta(2, 8, 3000), rng.beta(8, 2, 1000), [0.0, 1.0]])
    values = values.astype(np.float32)
    expected = threshold_otsu(values, nbins=256) + 0.5 / 256
    assert otsu_threshold(values) == pytest.approx(expected, abs=1e-6)
    cams = values.reshape(1, 2, -1)
    label_map = ThresholdSettings(rule="otsu").label_map(cams, [4])
    assert np.array_equal(label_map == 5, cams[0] >= otsu_threshold(values))
    assert otsu_threshold(np.full(100, 0.3, np.float32)) == 1.0, "a flat map keeps nothing"


def test_mass_rule_keeps_the_share_of_the_total_by_hand():
    """Values 0.9, 0.5, 0.3, 0.2, 0.1 sum to 2.0; keeping 80% (1.6) takes 0.9 + 0.5 + 0.3 = 1.7,
    so the threshold is 0.3; at 65% (1.3) 0.9 + 0.5 = 1.4 suffices: 0.5."""
    from wsss.masks import ThresholdSettings
    from wsss.masks.threshold import mass_threshold

    values = np.array([0.2, 0.9, 0.1, 0.5, 0.3], np.float32)
    assert mass_threshold(values, 0.8) == pytest.approx(0.3)
    assert mass_threshold(values, 0.65) == pytest.approx(0.5)
    assert mass_threshold(values, 1.0) == pytest.approx(0.1)
    assert mass_threshold(np.zeros(5, np.float32), 0.8) == 1.0
    cams = np.stack([values.reshape(1, 5), values[::-1].reshape(1, 5)])
    label_map = ThresholdSettings(rule="mass", mass=0.8).label_map(cams, [0, 1])
    # both maps hold the same values, so both thresholds are 0.3; a class competes where its own
    # map is >= 0.3: pixel 0 (0.2 | 0.3) -> 2, 1 (0.9 | 0.5) -> 1, 2 (0.1 | 0.1) -> 0,
    # 3 (0.5 | 0.9) -> 2, 4 (0.3 | 0.2) -> 1
    assert label_map.tolist() == [[2, 1, 0, 2, 1]]


def test_fixed_and_per_map_thresholds_by_hand():
    cams = np.array([[[0.1, 0.4, 0.8]], [[0.3, 0.35, 0.2]]], np.float32)
    assert cam_to_label_map(cams, [0, 2], 0.3).tolist() == [[3, 1, 1]]
    # per map: class 0 needs 0.5 (only its 0.8 counts), class 2 needs 0.25
    per_map = cam_to_label_map(cams, [0, 2], np.array([0.5, 0.25]))
    assert per_map.tolist() == [[3, 3, 1]]
    uncertain = cam_to_label_map(cams, [0, 2], 0.3, fg_threshold=0.5)
    assert uncertain.tolist() == [[255, 255, 1]]
