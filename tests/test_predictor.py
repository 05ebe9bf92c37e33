"""MaskPredictor: the one path from an image to its mask, as every caller uses it."""

from __future__ import annotations

from dataclasses import dataclass

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
        assert prediction.maps.shape == (len(sample.labels), 64, 64)


def test_predict_equals_the_stages_by_hand(model):
    image = np.random.default_rng(0).integers(0, 255, (40, 56, 3), np.uint8)
    cam = GradientCam(scales=[1.0, 1.5], flip=True)
    prediction = MaskPredictor(model, cam).predict(image, [1, 4])
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
    raw = multiscale_cams(cam.bind(model), x, [[1, 4]], cam.scales, cam.flip)[0]
    expected = normalize_cams(raw).numpy()
    assert np.abs(prediction.maps - expected).max() < 1e-6
    assert np.array_equal(prediction.label_map, ThresholdSettings().label_map(expected, [1, 4]))
    assert prediction.crf_mask is None and prediction.mask is prediction.label_map


def test_maps_are_computed_at_the_working_resolution_and_returned_at_the_images(model):
    image = np.random.default_rng(1).integers(0, 255, (64, 96, 3), np.uint8)
    assert working_size((64, 96), 48) == (32, 48) and working_size((64, 96), 200) == (64, 96)
    prediction = MaskPredictor(model, ClassifierCam(scales=[1.0], max_side=48)).predict(image, [2])
    assert prediction.maps.shape == (1, 64, 96) and prediction.label_map.shape == (64, 96)
    small = np.asarray(Image.fromarray(image).resize((48, 32), Image.BILINEAR))
    at_working = MaskPredictor(model, ClassifierCam(scales=[1.0])).predict(small, [2]).maps
    expected = upsample_cams(torch.from_numpy(at_working), (64, 96)).numpy()
    assert np.abs(prediction.maps - expected).max() < 1e-6


def test_the_classifier_labels_images_without_labels_only_when_asked(model):
    image = np.random.default_rng(2).integers(0, 255, (32, 32, 3), np.uint8)
    with torch.no_grad():  # a head voting for class 3 and against every other (features >= 0)
        weight = model.get_classifier().weight
        weight.fill_(-50.0 / weight.shape[1])
        weight[3].fill_(50.0 / weight.shape[1])
    with pytest.raises(DataError, match="no labels, and predict_labels is not set"):
        MaskPredictor(model, ClassifierCam()).predict(image)
    prediction = MaskPredictor(model, ClassifierCam(), predict_labels=0.5).predict(image)
    assert prediction.labels == (3,) and prediction.probabilities[0] > 0.5


def test_a_batch_must_share_one_size(model):
    images = [np.zeros((32, 32, 3), np.uint8), np.zeros((32, 40, 3), np.uint8)]
    with pytest.raises(ValueError, match="share a size"):
        MaskPredictor(model, ClassifierCam()).predict_batch(images, [[0], [1]])


def test_the_crf_runs_in_process_as_in_the_workers_and_as_by_hand(model):
    pytest.importorskip("pydensecrf.densecrf")
    from wsss.masks import CRFSettings, crf_label_map

    rng = np.random.default_rng(3)
    images = [rng.integers(0, 255, (48, 64, 3), np.uint8) for _ in range(3)]
    cam = ClassifierCam(scales=[1.0], max_side=32)
    crf = CRFSettings(workers=2)
    in_process = [MaskPredictor(model, cam, crf=crf).predict(im, [0, 5]) for im in images]
    items = [_Item(im, (0, 5), f"image {i}") for i, im in enumerate(images)]
    streamed = list(MaskPredictor(model, cam, crf=crf).stream([items[:2], items[2:]]))
    assert [item for item, _ in streamed] == items  # in order
    without = MaskPredictor(model, cam).predict(images[0], [0, 5])
    small = np.asarray(Image.fromarray(images[0]).resize((32, 24), Image.BILINEAR))
    maps = torch.nn.functional.interpolate(
        torch.from_numpy(without.maps)[None], (24, 32), mode="bilinear", antialias=True
    )[0].numpy()
    by_hand = np.asarray(
        Image.fromarray(crf_label_map(small, maps, [0, 5], crf)).resize((64, 48), Image.NEAREST)
    )
    assert np.array_equal(in_process[0].crf_mask, by_hand)
    for (_, prediction), expected in zip(streamed, in_process, strict=True):
        assert np.array_equal(prediction.mask, expected.mask) and prediction.mask.shape == (48, 64)
        assert np.array_equal(prediction.label_map, expected.label_map)


@dataclass
class _Item:
    image: np.ndarray
    labels: tuple
    name: str


def test_pil_float_and_tensor_images_give_the_uint8_images_mask(model):
    """What Python users hand over: a PIL image, a float array in [0, 1], a tensor in either
    layout; a float image in 0..255 and a label map that cannot hold the class are refused."""
    image = np.random.default_rng(4).integers(0, 255, (40, 48, 3), np.uint8)
    predictor = MaskPredictor(model, ClassifierCam(scales=[1.0]))
    expected = predictor.predict(image, [2]).mask
    for given in (
        Image.fromarray(image),
        image.astype(np.float32) / 255,
        torch.from_numpy(image).permute(2, 0, 1).float() / 255,
        torch.from_numpy(image),
    ):
        assert np.array_equal(predictor.predict(given, [2]).mask, expected), type(given)
    with pytest.raises(ValueError, match=r"values in \[0, 1\]"):
        predictor.predict(image.astype(np.float32), [2])
    with pytest.raises(ValueError, match="expected an image array"):
        predictor.predict("cat.jpg", [2])
    from wsss.masks import cam_to_label_map

    with pytest.raises(ValueError, match="holds classes 0..253"):
        cam_to_label_map(np.ones((1, 4, 4), np.float32), [300], 0.5)
    with pytest.raises(ValueError, match="class index -1: a uint8 label map holds"):
        cam_to_label_map(np.ones((2, 4, 4), np.float32), [-1, 2], 0.5)
    with pytest.raises(ValueError, match="class index -1"):
        predictor.predict(image, [-1, 2])
    with pytest.raises(ValueError, match=r"class 'block' in \['block'\]: classes are 0-based"):
        predictor.predict(image, ["block"])
    assert np.array_equal(predictor.predict(image, [np.int64(2)]).mask, expected)


@pytest.mark.parametrize("backend", ["openvino", "onnxruntime"])
def test_an_inference_engine_gives_pytorchs_maps(backend, monkeypatch):
    """cam.backend runs the classifier's features in OpenVINO or ONNX Runtime: the same maps
    (to float32 rounding) and the same masks, at any image size (dynamic shapes)."""
    pytest.importorskip(backend)
    from wsss.models.inference import AcceleratedClassifier

    calls = []
    engine_features = AcceleratedClassifier.forward_features

    def spy(self, images):
        calls.append(tuple(images.shape))
        return engine_features(self, images)

    monkeypatch.setattr(AcceleratedClassifier, "forward_features", spy)
    torch.manual_seed(0)
    model = create_classifier(ModelSpec("smallcnn", None, {"width": 8}), 6).eval()
    rng = np.random.default_rng(5)
    reference = MaskPredictor(model, ClassifierCam(backend="torch"))
    engine = MaskPredictor(model, ClassifierCam(backend=backend))
    for shape in ((40, 56, 3), (64, 33, 3)):
        image = rng.integers(0, 255, shape, np.uint8)
        expected, found = reference.predict(image, [1, 4]), engine.predict(image, [1, 4])
        assert np.abs(found.maps - expected.maps).max() < 1e-4
        assert (found.label_map != expected.label_map).mean() < 0.01
    assert set(calls) >= {(2, 3, 40, 56), (2, 3, 64, 33)}, "the engine ran"


def test_auto_leaves_small_models_to_pytorch_and_accelerates_large_ones():
    from wsss.models.inference import AcceleratedClassifier, accelerated

    small = create_classifier(ModelSpec("smallcnn", None, {"width": 8}), 6)
    assert accelerated(small, "auto", torch.device("cpu")) is small
    pytest.importorskip("openvino")
    large = create_classifier(ModelSpec("smallcnn", None, {"width": 400}), 6).eval()
    assert isinstance(accelerated(large, "auto", torch.device("cpu")), AcceleratedClassifier)
    assert accelerated(large, "torch", torch.device("cpu")) is large
