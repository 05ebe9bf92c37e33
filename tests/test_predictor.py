"""MaskPredictor: the one path from an image to its mask, as every caller uses it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from wsss.cams import ClassifierCam, GradientCam, multiscale_cams, normalize_cams, upsample_cams
from wsss.data import load_image, load_label_map, load_split
from wsss.engine.generation import generate_pseudo_masks
from wsss.errors import DataError
from wsss.export import ExportSettings
from wsss.masks import MaskPredictor, ThresholdSettings, working_size
from wsss.models import ModelSpec, create_classifier


@pytest.fixture
def model():
    torch.manual_seed(0)
    return create_classifier(ModelSpec("smallcnn", None, {"width": 4}), 6).eval()


def test_predict_is_the_generation_loops_mask(model, tiny_dataset, tmp_path):
    split = load_split(tiny_dataset, "eval.csv")
    predictor = MaskPredictor(
        model, ClassifierCam(scales=[1.0, 0.5]), ThresholdSettings(0.2, rule="fixed")
    )
    generate_pseudo_masks(predictor, split, tmp_path, ExportSettings(overlays=0), batch_size=4)
    for sample in split.samples[:4]:
        prediction = predictor.predict(load_image(sample.image_path), sample.labels)
        on_disk = load_label_map(tmp_path / "masks" / f"{sample.image_id}.png")
        assert np.array_equal(prediction.mask, on_disk)
        assert prediction.cams.shape == (len(sample.labels), 64, 64)


def test_predict_equals_the_stages_by_hand(model):
    image = np.random.default_rng(0).integers(0, 255, (40, 56, 3), np.uint8)
    cam = GradientCam(scales=[1.0, 1.5], flip=True)
    prediction = MaskPredictor(model, cam).predict(image, [1, 4])
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
    raw = multiscale_cams(cam.bind(model), x, [[1, 4]], cam.scales, cam.flip)[0]
    expected = normalize_cams(raw).numpy()
    assert np.abs(prediction.cams - expected).max() < 1e-6
    assert np.array_equal(prediction.label_map, ThresholdSettings().label_map(expected, [1, 4]))
    assert prediction.refined is None and prediction.mask is prediction.label_map


def test_maps_are_computed_at_the_working_resolution_and_returned_at_the_images(model):
    image = np.random.default_rng(1).integers(0, 255, (64, 96, 3), np.uint8)
    assert working_size((64, 96), 48) == (32, 48) and working_size((64, 96), 200) == (64, 96)
    prediction = MaskPredictor(model, ClassifierCam(scales=[1.0], max_side=48)).predict(image, [2])
    assert prediction.cams.shape == (1, 64, 96) and prediction.label_map.shape == (64, 96)
    small = np.asarray(Image.fromarray(image).resize((48, 32), Image.BILINEAR))
    at_working = MaskPredictor(model, ClassifierCam(scales=[1.0])).predict(small, [2]).cams
    expected = upsample_cams(torch.from_numpy(at_working), (64, 96)).numpy()
    assert np.abs(prediction.cams - expected).max() < 1e-6


def test_the_classifier_labels_images_without_labels_only_when_asked(model):
    image = np.random.default_rng(2).integers(0, 255, (32, 32, 3), np.uint8)
    with torch.no_grad():  # a head voting for class 3 and against every other (features >= 0)
        weight = model.get_classifier().weight
        weight.fill_(-50.0 / weight.shape[1])
        weight[3].fill_(50.0 / weight.shape[1])
    with pytest.raises(DataError, match="no labels, and predict_labels is not set"):
        MaskPredictor(model, ClassifierCam()).predict(image)
    prediction = MaskPredictor(model, ClassifierCam(), label_threshold=0.5).predict(image)
    assert prediction.labels == (3,) and prediction.probabilities[0] > 0.5


def test_a_batch_must_share_one_size(model):
    images = [np.zeros((32, 32, 3), np.uint8), np.zeros((32, 40, 3), np.uint8)]
    with pytest.raises(ValueError, match="share a size"):
        MaskPredictor(model, ClassifierCam()).predict_batch(images, [[0], [1]])


def test_refinement_runs_in_process_as_in_the_workers(model):
    pytest.importorskip("pydensecrf.densecrf")
    from wsss.masks import CRFSettings, refine_or_fail

    image = np.random.default_rng(3).integers(0, 255, (48, 48, 3), np.uint8)
    predictor = MaskPredictor(model, ClassifierCam(scales=[1.0]), crf=CRFSettings())
    refined = predictor.predict(image, [0, 5])
    unrefined = predictor.predict(image, [0, 5], crf=False)
    assert unrefined.refined is None
    worker = refine_or_fail(predictor.crf_job(image, unrefined))
    assert np.array_equal(refined.mask, worker) and refined.mask.shape == (48, 48)
