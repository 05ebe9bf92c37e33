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


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"rule": "median"}, r"mask.rule must be one of \('fixed', 'otsu', 'mass'\), got 'median'"),
        ({"bg_threshold": -0.01}, r"mask.bg_threshold must be in \[0, 1\], got -0.01"),
        ({"bg_threshold": 1.01}, r"mask.bg_threshold must be in \[0, 1\], got 1.01"),
        ({"bg_threshold": 0.3, "fg_threshold": 0.2}, r"fg_threshold must be in \[bg_threshold"),
        ({"fg_threshold": 1.01}, r"mask.fg_threshold must be in \[bg_threshold, 1\], got 1.01"),
        ({"mass": 0.0}, r"mask.mass must be in \(0, 1\], got 0.0"),
        ({"mass": 1.01}, r"mask.mass must be in \(0, 1\], got 1.01"),
    ],
)
def test_threshold_settings_refuse_out_of_range_values_naming_them(settings, message):
    from wsss.errors import ConfigError
    from wsss.masks import ThresholdSettings

    with pytest.raises(ConfigError, match=message):
        ThresholdSettings(**settings).validate()


@pytest.mark.parametrize(
    "settings",
    [{"bg_threshold": 0.0}, {"bg_threshold": 1.0}, {"bg_threshold": 0.3, "fg_threshold": 0.3},
     {"fg_threshold": 1.0}, {"mass": 1.0}, {"rule": "fixed"}, {"rule": "mass"}],
)  # fmt: skip
def test_threshold_settings_accept_their_bounds(settings):
    from wsss.masks import ThresholdSettings

    ThresholdSettings(**settings).validate()


def test_each_rule_describes_itself_and_gives_its_thresholds():
    from wsss.masks import ThresholdSettings
    from wsss.masks.threshold import mass_threshold, otsu_threshold

    assert ThresholdSettings(rule="fixed", bg_threshold=0.2).describe() == "threshold 0.20"
    assert ThresholdSettings(rule="otsu").describe() == "otsu rule"
    assert ThresholdSettings(rule="mass", mass=0.7).describe() == "mass rule 0.7"
    cams = np.random.default_rng(1).random((2, 8, 8)).astype(np.float32)
    assert ThresholdSettings(rule="fixed", bg_threshold=0.2).thresholds(cams) == 0.2
    otsu = ThresholdSettings(rule="otsu").thresholds(cams)
    assert otsu.tolist() == [np.float32(otsu_threshold(m)) for m in cams]
    mass = ThresholdSettings(rule="mass", mass=0.7).thresholds(cams)
    assert mass.tolist() == [np.float32(mass_threshold(m, 0.7)) for m in cams]
    assert otsu.dtype == mass.dtype == np.float32


def test_otsu_threshold_of_two_clusters_lies_between_them():
    from wsss.masks.threshold import otsu_threshold

    values = np.concatenate([np.full(60, 0.2), np.full(40, 0.8)])
    assert 0.2 < otsu_threshold(values) <= 0.8
    assert (values >= otsu_threshold(values)).sum() == 40
    # 4 bins (edges 0, .25, .5, .75, 1): the cuts after bins 0, 1 and 2 split the two clusters
    # alike; the first, the lowest, is kept
    assert otsu_threshold(values, bins=4) == 0.25


def test_mass_threshold_takes_the_largest_value_that_keeps_the_share():
    from wsss.masks.threshold import mass_threshold

    values = np.array([0.5, 0.25, 0.125, 0.125], np.float32)  # total 1, exact in binary
    assert mass_threshold(values, 0.5) == 0.5  # 0.5 alone holds half
    assert mass_threshold(values, 0.51) == 0.25
    assert mass_threshold(values, 0.75) == 0.25
    assert mass_threshold(values, 0.76) == 0.125
    assert mass_threshold(values.reshape(2, 2), 0.75) == 0.25  # any shape


@pytest.mark.parametrize(
    "classes, message",
    [
        ([True], r"class True in \[True\]: classes are 0-based indices"),
        (["cat"], r"split.class_names.index\(name\)"),
        ([1.0], r"class 1.0 in \[1.0\]"),
        ([254], r"class index 254: a uint8 label map holds classes 0..253 \(value = index \+ 1; "
                r"0 means background, 255 uncertain\)"),
        ([-1], r"class index -1"),
    ],
)  # fmt: skip
def test_class_indices_a_label_map_cannot_hold_are_refused(classes, message):
    cams = np.zeros((1, 2, 2), np.float32)
    with pytest.raises(ValueError, match=message):
        cam_to_label_map(cams, classes, 0.5)


def test_the_largest_class_index_and_numpy_integers_are_accepted():
    cams = np.ones((2, 1, 1), np.float32)
    assert cam_to_label_map(cams, [np.int64(253), 0], 0.5).tolist() == [[254]]


def test_maps_that_do_not_match_their_classes_are_refused():
    with pytest.raises(ValueError, match=r"cams must be \(len\(classes\), H, W\), got \(2, 3\)"):
        cam_to_label_map(np.zeros((2, 3), np.float32), [0, 1], 0.5)
    with pytest.raises(ValueError, match=r"got \(1, 2, 2\) for \[0, 1\]"):
        cam_to_label_map(np.zeros((1, 2, 2), np.float32), [0, 1], 0.5)
    with pytest.raises(ValueError, match="fg_threshold 0.2 < bg_threshold 0.3"):
        cam_to_label_map(np.zeros((1, 2, 2), np.float32), [0], 0.3, fg_threshold=0.2)


def test_a_map_exactly_at_its_threshold_is_kept():
    cams = np.array([[[0.3, 0.29]]], np.float32)
    assert cam_to_label_map(cams, [0], np.float32(0.3)).tolist() == [[1, 0]]
    assert cam_to_label_map(cams, [0], np.array([0.3], np.float32)).tolist() == [[1, 0]]
    band = cam_to_label_map(np.array([[[0.3, 0.5, 0.49]]], np.float32), [0], 0.3, 0.5)
    assert band.tolist() == [[IGNORE, 1, IGNORE]]
    per_map_band = cam_to_label_map(
        np.array([[[0.3, 0.5]], [[0.1, 0.0]]], np.float32), [0, 1], np.array([0.3, 0.5]), 0.5
    )
    assert per_map_band.tolist() == [[IGNORE, 1]]


def test_confusion_matrix_equals_per_class_sets_counted_naively():
    """Random label maps: IoU, precision and recall per class against sets of pixels counted
    here (255 in the ground truth ignored; a 255 prediction scored as background)."""
    rng = np.random.default_rng(3)
    gt = rng.integers(0, 4, (2, 9, 11)).astype(np.uint8)
    gt[rng.random(gt.shape) < 0.1] = IGNORE
    pred = rng.integers(0, 4, gt.shape).astype(np.uint8)
    pred[rng.random(gt.shape) < 0.15] = IGNORE
    cm = ConfusionMatrix(4)
    for p, g in zip(pred, gt, strict=True):
        cm.update(p, g)
    valid = gt != IGNORE
    scored = np.where(pred == IGNORE, 0, pred)
    summary = cm.summary(["a", "b", "c"])
    for k, name in enumerate(["background", "a", "b", "c"]):
        truth, marked = valid & (gt == k), valid & (scored == k)
        iou = (truth & marked).sum() / (truth | marked).sum()
        assert cm.iou[k] == pytest.approx(iou)
        stats = summary["per_class"][name]
        assert stats["iou"] == round(iou, 4)
        assert stats["precision"] == round((truth & marked).sum() / marked.sum(), 4)
        assert stats["recall"] == round((truth & marked).sum() / truth.sum(), 4)
    confident = valid & (pred != IGNORE)
    truths = [confident & (gt == k) for k in range(4)]
    marks = [confident & (pred == k) for k in range(4)]
    ious = [(t & m).sum() / (t | m).sum() for t, m in zip(truths, marks, strict=True)]
    assert cm.miou_confident == pytest.approx(np.mean(ious))
    assert summary["miou"] == round(cm.miou, 4)
    assert summary["miou_confident_pixels"] == round(cm.miou_confident, 4)
    uncertain = (valid & (pred == IGNORE)).sum()
    assert summary["uncertain_pixels"] == uncertain and summary["pixels"] == valid.sum()
    assert summary["uncertain_pixel_fraction"] == round(uncertain / valid.sum(), 4)
    objects, marked_objects = valid & (gt > 0), valid & (scored > 0)
    assert summary["foreground"] == {
        "precision": round((objects & marked_objects).sum() / marked_objects.sum(), 4),
        "recall": round((objects & marked_objects).sum() / objects.sum(), 4),
    }


def test_confusion_matrix_refuses_what_it_cannot_count():
    cm = ConfusionMatrix(3)
    with pytest.raises(ValueError, match=r"shape mismatch: \(1, 2\) vs \(2, 1\)"):
        cm.update(np.zeros((1, 2), np.uint8), np.zeros((2, 1), np.uint8))
    with pytest.raises(ValueError, match="ground truth has class ids >= 3"):
        cm.update(np.zeros((1, 2), np.uint8), np.array([[0, 3]], np.uint8))
    with pytest.raises(ValueError, match="prediction has class ids >= 3"):
        cm.update(np.array([[3, 0]], np.uint8), np.zeros((1, 2), np.uint8))
    # 255 in the ground truth is no class id; 2 (the last) is one
    cm.update(np.array([[2, 1]], np.uint8), np.array([[2, IGNORE]], np.uint8))
    assert cm.matrix.sum() == 1 and cm.matrix[2, 2] == 1


def test_confusion_matrices_merge_and_travel_as_sparse_counts():
    first, second = ConfusionMatrix(3), ConfusionMatrix(3)
    first.update(np.array([[0, 1, IGNORE]], np.uint8), np.array([[0, 2, 1]], np.uint8))
    second.update(np.array([[2, 2, IGNORE]], np.uint8), np.array([[2, 1, 2]], np.uint8))
    sparse = first.to_sparse()
    assert sparse == {"matrix": [[0, 0, 1], [2, 1, 1]], "uncertain": [[1, 1]]}
    copy = ConfusionMatrix(3)
    copy.add_sparse(sparse)
    copy.add_sparse(second.to_sparse())
    first.merge(second)
    assert np.array_equal(copy.matrix, first.matrix) and first.matrix.sum() == 4
    assert np.array_equal(copy.uncertain_by_gt, first.uncertain_by_gt)
    assert first.uncertain_by_gt.tolist() == [0, 1, 1]


def test_an_empty_confusion_matrix_and_an_absent_class_have_no_figures():
    cm = ConfusionMatrix(3)
    assert cm.uncertain_fraction == 0.0
    assert all(np.isnan(v) for v in cm.foreground_precision_recall)
    cm.update(np.array([[0, 1]], np.uint8), np.array([[0, 1]], np.uint8))
    summary = cm.summary(["a", "b"])
    assert summary["per_class"]["b"] == {"iou": None, "precision": None, "recall": None}
    assert summary["miou"] == 1.0  # the mean over the classes seen
    only_background = ConfusionMatrix(2)
    only_background.update(np.zeros((1, 2), np.uint8), np.zeros((1, 2), np.uint8))
    assert only_background.summary([])["foreground"] == {"precision": None, "recall": None}


def test_sweep_accumulates_travels_and_reports_each_threshold(tmp_path):
    from wsss.metrics.segmentation import DEFAULT_SWEEP

    assert DEFAULT_SWEEP == (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6)
    gt = np.array([[1, 1, 0, 0]], np.uint8)
    cams = np.array([[[0.9, 0.5, 0.3, 0.1]]], np.float32)
    sweep = ThresholdSweep(2, thresholds=[0.2, 0.4])
    sweep.update(cams, [0], gt)
    # 0.2: marks 3 pixels (bg IoU 1/2, class 2/3); 0.4: marks 2 (both exact)
    assert sweep.mious == pytest.approx([(0.5 + 2 / 3) / 2, 1.0])
    copy = ThresholdSweep(2, thresholds=[0.2, 0.4])
    copy.add_sparse(sweep.to_sparse())
    assert copy.mious == sweep.mious
    assert sweep.summary() == {
        "note": "best threshold is tuned on the ground truth: an upper bound, not a result",
        "thresholds": [0.2, 0.4],
        "miou": [round((0.5 + 2 / 3) / 2, 4), 1.0],
        "best_threshold": 0.4,
        "best_miou": 1.0,
    }
    sweep.save_plot(tmp_path / "sweep.png", fixed_threshold=0.2)
    assert (tmp_path / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_mass_threshold_sums_in_double_precision_and_clamps_an_impossible_share():
    """float32 cannot hold 2^24 + 1: the cumulative sums must be taken in float64. Total
    2^24 + 10; cumulative sums 2^24 + (0, 4, 7, 9, 10)."""
    from wsss.masks.threshold import mass_threshold

    values = np.array([2.0**24, 4, 3, 2, 1], np.float32)
    assert mass_threshold(values, 0.9999999) == 2.0  # target 2^24 + 8.32: the 4th value
    assert mass_threshold(values, 0.99999995) == 1.0  # target 2^24 + 9.16: the 5th
    assert mass_threshold(values, 1.5) == 1.0  # more than the total: everything is kept


def test_sparse_counts_add_up_exactly_even_past_float_precision():
    """add_sparse adds (it does not overwrite), and counts stay exact integers past 2**53, where
    a float matrix would lose the odd pixel (a sum over a whole dataset's records)."""
    one = ConfusionMatrix(2)
    one.update(np.array([[0, 1, IGNORE]], np.uint8), np.array([[0, 1, 1]], np.uint8))
    total = ConfusionMatrix(2)
    for _ in range(3):
        total.add_sparse(one.to_sparse())
    assert total.matrix.tolist() == [[3, 0], [0, 3]] and total.uncertain_by_gt.tolist() == [0, 3]
    huge = ConfusionMatrix(2)
    huge.add_sparse({"matrix": [[0, 0, 2**53]], "uncertain": [[1, 2**53]]})
    huge.add_sparse({"matrix": [[0, 0, 1]], "uncertain": [[1, 1]]})
    assert int(huge.matrix[0, 0]) == 2**53 + 1 and int(huge.uncertain_by_gt[1]) == 2**53 + 1
    sweep = ThresholdSweep(2, thresholds=[0.5])
    sweep.update(np.array([[[0.9, 0.1]]], np.float32), [0], np.array([[1, 1]], np.uint8))
    summed = ThresholdSweep(2, thresholds=[0.5])
    summed.add_sparse(sweep.to_sparse())
    summed.add_sparse(sweep.to_sparse())
    assert summed.matrices[0].matrix.tolist() == [[0, 0], [2, 2]]


def test_a_summary_rounds_to_four_places_and_warns_of_nothing():
    """Figures by hand on a matrix with an absent class, computed with every numpy warning an
    error (0/0 for a class never seen is expected, not a warning)."""
    import warnings

    cm = ConfusionMatrix(3)
    # gt:   0 0 0 1 1 1 (class 2 never occurs), pred: 0 1 IGNORE 1 1 0
    cm.update(
        np.array([[0, 1, IGNORE, 1, 1, 0]], np.uint8), np.array([[0, 0, 0, 1, 1, 1]], np.uint8)
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        summary = cm.summary(["a", "b"])
    # uncertain as background: bg row [2 (0 + uncertain), 1, 0], class-a row [1, 2, 0]
    assert summary["uncertain_pixel_fraction"] == round(1 / 6, 4) == 0.1667
    assert summary["per_class"]["background"] == {
        "iou": round(2 / 4, 4), "precision": round(2 / 3, 4), "recall": round(2 / 3, 4)
    }  # fmt: skip
    assert summary["per_class"]["a"] == {
        "iou": round(2 / 4, 4), "precision": round(2 / 3, 4), "recall": round(2 / 3, 4)
    }  # fmt: skip
    assert summary["per_class"]["b"] == {"iou": None, "precision": None, "recall": None}
    assert summary["pixels"] == 6 and summary["uncertain_pixels"] == 1
    sweep = ThresholdSweep(2, thresholds=[0.2, 0.4])
    cams = np.array([[[0.9, 0.5, 0.45, 0.3, 0.1]]], np.float32)
    sweep.update(cams, [0], np.array([[1, 1, 0, 0, 0]], np.uint8))
    assert sweep.best == (0.4, pytest.approx(2 / 3))  # 3 pixels marked: both IoUs 2/3
    assert sweep.summary()["best_miou"] == 0.6667


def test_the_sweep_plot_draws_the_sweep_its_best_and_the_threshold_used(tmp_path):
    from PIL import Image

    sweep = ThresholdSweep(2, thresholds=[0.2, 0.4])
    sweep.update(
        np.array([[[0.9, 0.5, 0.3, 0.1]]], np.float32), [0], np.array([[1, 1, 0, 0]], np.uint8)
    )
    fig = sweep.figure(fixed_threshold=0.2)
    ax = fig.axes[0]
    curve, best, used = ax.lines
    assert curve.get_xydata().tolist() == [[0.2, sweep.mious[0]], [0.4, 1.0]]
    assert list(best.get_xdata()) == [0.4, 0.4] and list(used.get_xdata()) == [0.2, 0.2]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["best 0.40: 1.000", "used 0.20"]
    assert (best.get_color(), used.get_color()) == ("tab:green", "tab:red")
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("background threshold", "mIoU")
    assert len(ThresholdSweep.figure(sweep).axes[0].lines) == 2, "no threshold used: no line"
    sweep.save_plot(tmp_path / "sweep.png", fixed_threshold=0.2)
    assert Image.open(tmp_path / "sweep.png").size == (600, 408)  # 5 x 3.4 in at 120 dpi
