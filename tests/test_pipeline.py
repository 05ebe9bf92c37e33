"""The generation stage through its Python API: outputs, COCO contracts, metrics."""

import dataclasses
import json

import numpy as np
import pytest
import torch
from PIL import Image

from wsss.cams import ClassifierCam, method_settings
from wsss.data import load_label_map, load_split
from wsss.engine.generation import generate_pseudo_masks
from wsss.export import ExportSettings
from wsss.io import output_path
from wsss.masks import MaskPredictor
from wsss.models import ModelSpec, create_classifier


@pytest.fixture(scope="module")
def generated(tiny_dataset, tmp_path_factory):
    torch.manual_seed(0)
    model = create_classifier(ModelSpec("smallcnn", None, {"width": 8}), 6)
    split = load_split(tiny_dataset, "eval.csv")
    out = tmp_path_factory.mktemp("run")
    predictor = MaskPredictor(model, ClassifierCam(scales=[1.0, 0.5]))
    export = ExportSettings(overlays=4, save_cams=True)
    result = generate_pseudo_masks(predictor, split, out, export, batch_size=5)
    return split, out, result


def test_every_image_gets_a_mask_using_only_its_labels(generated):
    split, out, result = generated
    assert result.num_images == len(split)
    for sample in split.samples:
        mask = load_label_map(out / "masks" / f"{sample.image_id}.png", size=(64, 64))
        present = {int(v) - 1 for v in np.unique(mask) if v not in (0, 255)}
        assert present <= set(sample.labels)


def test_coco_file_follows_the_format(generated):
    split, out, _ = generated
    coco = json.loads((out / "annotations.json").read_text())
    assert [c["id"] for c in coco["categories"]] == list(range(1, 7))
    assert [c["name"] for c in coco["categories"]] == list(split.class_names)
    ids = [a["id"] for a in coco["annotations"]]
    assert ids == list(range(1, len(ids) + 1))
    for ann in coco["annotations"]:
        assert isinstance(ann["segmentation"]["counts"], str)
        assert isinstance(ann["area"], float) and ann["iscrowd"] == 0
        assert len(ann["bbox"]) == 4 and all(isinstance(v, float) for v in ann["bbox"])
        assert 0.0 <= ann["score"] <= 1.0


def test_coco_round_trip_matches_the_pngs(generated):
    from pycocotools.coco import COCO

    split, out, _ = generated
    coco = COCO(str(out / "annotations.json"))
    checked = 0
    for image in coco.dataset["images"]:
        sample = split.samples[image["id"] - 1]
        png = load_label_map(out / "masks" / f"{sample.image_id}.png")
        anns = coco.loadAnns(coco.getAnnIds(imgIds=image["id"]))
        assert {a["category_id"] for a in anns} == {
            int(v) for v in np.unique(png) if v not in (0, 255)
        }
        for ann in anns:
            assert np.array_equal(coco.annToMask(ann).astype(bool), png == ann["category_id"])
            checked += 1
    assert checked > 0


def test_torchvision_coco_dataset_reads_the_same_masks(generated):
    from torchvision.datasets import CocoDetection, wrap_dataset_for_transforms_v2

    split, out, _ = generated
    dataset = wrap_dataset_for_transforms_v2(
        CocoDetection(str(split.root / "images"), str(out / "annotations.json")),
        target_keys=("image_id", "masks", "labels"),
    )
    for i in range(len(dataset)):
        image, target = dataset[i]
        sample = split.samples[target["image_id"] - 1]
        png = load_label_map(out / "masks" / f"{sample.image_id}.png")
        assert tuple(image.size[::-1]) == png.shape
        for mask, label in zip(target["masks"], target["labels"], strict=True):
            assert np.array_equal(mask.numpy(), png == int(label))


def test_overlays_metrics_and_cam_cache(generated):
    split, out, result = generated
    overlays = sorted(p.name for p in (out / "overlays").glob("*.png"))
    assert "contact_sheet.png" in overlays and len(overlays) == 5
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["threshold_rule"]["rule"] == "otsu"
    assert metrics["threshold_rule"]["miou"] == pytest.approx(result.confusion.miou, abs=1e-4)
    assert len(metrics["threshold_sweep"]["miou"]) == 12
    assert Image.open(out / "threshold_sweep.png").size[0] > 100
    with np.load(out / "cams" / f"{split.samples[0].image_id}.npz") as data:
        assert data["cams"].dtype == np.float16
        assert tuple(data["classes"]) == split.samples[0].labels
        assert data["cams"].shape == (len(split.samples[0].labels), 64, 64)
        assert float(data["cams"].max()) <= 1.0


def test_output_path_refuses_to_escape(tmp_path):
    assert output_path(tmp_path, "masks", "a/b", ".png") == (tmp_path / "masks/a/b.png").resolve()
    with pytest.raises(ValueError, match="outside"):
        output_path(tmp_path, "masks", "../../etc/x", ".png")


@pytest.mark.parametrize("method", ["gradcam", "gradcampp", "layercam", "scorecam"])
def test_every_method_runs_through_the_pipeline(tiny_dataset, tmp_path, method):
    torch.manual_seed(0)
    model = create_classifier(ModelSpec("smallcnn", None, {"width": 4}), 6)
    split = load_split(tiny_dataset, "eval.csv")
    split = dataclasses.replace(split, samples=split.samples[:3])
    predictor = MaskPredictor(model, method_settings(method, scales=[1.0, 0.5]))
    export = ExportSettings(overlays=0, save_cams=True)
    result = generate_pseudo_masks(predictor, split, tmp_path, export)
    assert result.num_images == 3
    for sample in split.samples:
        with np.load(tmp_path / "cams" / f"{sample.image_id}.npz") as data:
            cams = data["cams"].astype(np.float32)
        assert cams.shape == (len(sample.labels), 64, 64)
        assert cams.min() >= 0 and cams.max() <= 1.0 + 1e-3


def test_crf_in_two_workers_matches_one_and_is_scored_against_the_raw_masks(tiny_dataset, tmp_path):
    pytest.importorskip("pydensecrf.densecrf")
    from wsss.masks import CRFSettings

    torch.manual_seed(0)
    model = create_classifier(ModelSpec("smallcnn", None, {"width": 4}), 6)
    split = load_split(tiny_dataset, "eval.csv")
    results = {}
    for workers in (1, 2):
        crf = CRFSettings(mode="label", workers=workers)
        predictor = MaskPredictor(model, ClassifierCam(scales=[1.0]), crf=crf)
        out = tmp_path / str(workers)
        results[workers] = generate_pseudo_masks(predictor, split, out, ExportSettings(overlays=0))
    for sample in split.samples:
        one = (tmp_path / "1" / "masks" / f"{sample.image_id}.png").read_bytes()
        assert one == (tmp_path / "2" / "masks" / f"{sample.image_id}.png").read_bytes()
    result = results[2]
    assert result.rule_confusion is not None and not result.crf_failures
    metrics = json.loads((tmp_path / "2" / "metrics.json").read_text())
    assert metrics["crf"]["mode"] == "label"
    assert metrics["threshold_rule"]["miou"] == pytest.approx(result.rule_confusion.miou, abs=1e-4)
    assert metrics["masks_on_disk"]["miou"] == pytest.approx(result.confusion.miou, abs=1e-4)


def test_a_crf_failure_keeps_the_raw_mask_and_the_run_going(tiny_dataset, tmp_path, monkeypatch):
    pytest.importorskip("pydensecrf.densecrf")
    import wsss.masks.crf
    from wsss.masks import CRFSettings

    real = wsss.masks.crf.crf_label_map
    calls = []

    def flaky(image, cams, classes, settings):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("boom")
        return real(image, cams, classes, settings)

    monkeypatch.setattr(wsss.masks.crf, "crf_label_map", flaky)
    model = create_classifier(ModelSpec("smallcnn", None, {"width": 4}), 6)
    split = load_split(tiny_dataset, "eval.csv")
    crf = CRFSettings(workers=1)
    predictor = MaskPredictor(model, ClassifierCam(scales=[1.0]), crf=crf)
    result = generate_pseudo_masks(predictor, split, tmp_path, ExportSettings(overlays=0))
    assert result.num_images == len(split) and len(result.crf_failures) == 1
    failures = json.loads((tmp_path / "crf_failures.json").read_text())
    assert failures[0]["image"].endswith(f"{split.samples[1].image_id}.png")
    assert "boom" in failures[0]["error"]
