"""The file contracts segmentation trainers rely on (detectron2, MMSegmentation, torchvision,
Ultralytics' COCO converter): checked on real generate output, since those tools do not install
here."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from scipy import ndimage

from wsss.cams import ClassifierCam
from wsss.data import load_split
from wsss.data.images import voc_palette
from wsss.engine.generation import generate_pseudo_masks
from wsss.export import ExportSettings, mask_to_polygons
from wsss.masks import MaskPredictor
from wsss.models import ModelSpec, create_classifier


def _polygon_mask(polygons, height, width) -> np.ndarray:
    return mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(polygons, height, width)))


def test_a_rectangle_is_outlined_on_pixel_edges_and_decodes_exactly():
    mask = np.zeros((10, 12), bool)
    mask[2:5, 3:9] = True  # pixels x 3..8, y 2..4: edges x 3..9, y 2..5
    (polygon,) = mask_to_polygons(mask)
    xs, ys = polygon[::2], polygon[1::2]
    assert (min(xs), min(ys), max(xs), max(ys)) == (3.0, 2.0, 9.0, 5.0)
    assert np.array_equal(_polygon_mask([polygon], 10, 12).astype(bool), mask)


def test_polygons_fill_holes_split_blobs_and_keep_slivers():
    mask = np.zeros((20, 20), bool)
    mask[2:10, 2:10] = True
    mask[5:7, 5:7] = False  # a hole: polygons cannot carry it
    mask[15, 15] = True  # a one-pixel blob
    polygons = mask_to_polygons(mask)
    assert len(polygons) == 2 and all(len(p) >= 6 and len(p) % 2 == 0 for p in polygons)
    decoded = _polygon_mask(polygons, 20, 20).astype(bool)
    assert np.array_equal(decoded, ndimage.binary_fill_holes(mask))


@pytest.fixture(scope="module")
def generated(tiny_dataset, tmp_path_factory):
    """Three generate runs on the tiny dataset: RLE per class, polygons, and components."""
    torch.manual_seed(0)
    model = create_classifier(ModelSpec("smallcnn", backbone_kwargs={"width": 8}), 6)
    split = load_split(tiny_dataset, "eval.csv")
    runs = {}
    for name, extra in {
        "rle": {},
        "polygons": {"polygons": True},
        "components": {"instances": "component"},
    }.items():
        out = tmp_path_factory.mktemp(name)
        predictor = MaskPredictor(model, ClassifierCam(scales=[1.0], flip=False))
        generate_pseudo_masks(predictor, split, out, ExportSettings(overlays=0, **extra))
        runs[name] = out
    return split, runs


def test_label_pngs_are_what_semantic_trainers_read(generated):
    """detectron2 load_sem_seg / MMSegmentation / torchvision references: one single-channel PNG
    per image, named like the image, same size, raw values = class ids, 255 = ignore."""
    split, runs = generated
    num_classes = len(split.class_names)
    for sample in split.samples:
        path = runs["rle"] / "masks" / f"{sample.image_id}.png"
        with Image.open(path) as png:
            assert png.mode == "P" and tuple(png.getpalette()) == voc_palette()[: 3 * 256]
            values = np.asarray(png)
            with Image.open(sample.image_path) as image:
                assert png.size == image.size
        assert set(np.unique(values)) <= set(range(num_classes + 1)) | {255}


@pytest.mark.parametrize("run", ["rle", "polygons", "components"])
def test_coco_file_is_what_instance_trainers_read(generated, run):
    split, runs = generated
    path = runs[run] / "annotations.json"
    coco = COCO(str(path))  # pycocotools indexes it without complaint
    data = json.loads(path.read_text())
    ann_ids = [a["id"] for a in data["annotations"]]
    assert ann_ids == list(range(1, len(ann_ids) + 1)), "unique ids from 1"
    image_ids = [i["id"] for i in data["images"]]
    assert len(set(image_ids)) == len(image_ids) == len(split)
    assert [c["id"] for c in data["categories"]] == list(range(1, 7)), "categories from 1"
    assert data["annotations"], "the run produced annotations to check"
    for ann in data["annotations"]:
        info = coco.imgs[ann["image_id"]]
        decoded = coco.annToMask(ann).astype(bool)
        assert decoded.shape == (info["height"], info["width"]) and decoded.any()
        assert ann["iscrowd"] == 0 and ann["area"] == pytest.approx(decoded.sum())
        x, y, w, h = ann["bbox"]
        ys, xs = np.nonzero(decoded)
        assert (x, y, x + w, y + h) == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
        if run == "polygons":
            assert isinstance(ann["segmentation"], list)
            assert all(len(p) >= 6 and len(p) % 2 == 0 for p in ann["segmentation"])
        else:
            assert isinstance(ann["segmentation"]["counts"], str)
    # Exactly the pixels of the PNGs (polygons: with holes filled).
    for info in data["images"]:
        image_id = info["file_name"].rsplit(".", 1)[0]
        png = np.asarray(Image.open(runs[run] / "masks" / f"{image_id}.png"))
        anns = coco.loadAnns(coco.getAnnIds(imgIds=info["id"]))
        for category in range(1, 7):
            ours = [coco.annToMask(a).astype(bool) for a in anns if a["category_id"] == category]
            union = np.any(ours, axis=0) if ours else np.zeros(png.shape, bool)
            expected = png == category
            if run == "polygons":  # per 8-connected blob, holes filled
                blobs, count = ndimage.label(expected, np.ones((3, 3)))
                expected = np.zeros_like(expected)
                for i in range(1, count + 1):
                    expected |= ndimage.binary_fill_holes(blobs == i)
            assert np.array_equal(union, expected)
            if run == "components":
                assert all(ndimage.label(m, np.ones((3, 3)))[1] == 1 for m in ours)


def test_torchvision_coco_detection_reads_the_export(generated, tiny_dataset):
    from torchvision.datasets import CocoDetection

    split, runs = generated
    dataset = CocoDetection(str(split.images_root), str(runs["polygons"] / "annotations.json"))
    image, annotations = dataset[0]
    assert image.size == Image.open(split.samples[0].image_path).size
    assert all(a["image_id"] == dataset.ids[0] for a in annotations)
