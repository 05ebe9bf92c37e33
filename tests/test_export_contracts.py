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


def test_annotations_by_hand_every_field():
    """Two classes on a 4x6 map, worked out by hand: category ids through a mapping, the score
    from the maps or the classifier, the quality, area and bbox of the RLE."""
    from wsss.export import coco_annotations

    label_map = np.zeros((4, 6), np.uint8)
    label_map[0:2, 0:3] = 3  # class index 2: 6 pixels, x 0..2, y 0..1
    label_map[3, 4:6] = 1  # class index 0: 2 pixels
    cams = np.zeros((3, 4, 6), np.float32)
    cams[0, 3, 4:6] = (0.5, 0.25)
    cams[2, 0:2, 0:3] = 0.75
    annotations = coco_annotations(label_map, cams, [0, 1, 2], 7, category_ids=[10, 20, 30],
                                   quality={0: 0.123456, 2: 0.9})  # fmt: skip
    first, second = annotations  # class 1 is absent: no annotation
    assert {k: v for k, v in first.items() if k != "segmentation"} == {
        "image_id": 7, "category_id": 10, "area": 2.0, "bbox": [4.0, 3.0, 2.0, 1.0],
        "iscrowd": 0, "score": 0.375, "quality": 0.1235,
    }  # fmt: skip
    assert second["category_id"] == 30 and second["area"] == 6.0 and second["score"] == 0.75
    assert second["bbox"] == [0.0, 0.0, 3.0, 2.0] and second["quality"] == 0.9
    assert np.array_equal(mask_utils.decode(second["segmentation"]), label_map == 3)
    by_classifier = coco_annotations(label_map, cams, [0, 1, 2], 7, probabilities=[0.61, 0.2, 0.93])
    assert [a["score"] for a in by_classifier] == [0.61, 0.93]
    assert [a["category_id"] for a in by_classifier] == [1, 3]  # default: index + 1
    assert "quality" not in by_classifier[0]
    polygons = coco_annotations(label_map, cams, [2], 1, polygons=True)
    (outline,) = polygons[0]["segmentation"]  # the 3x2 block's edges, corners cut by half a pixel
    corners = {(0.0, 0.5), (0.5, 0.0), (2.5, 0.0), (3.0, 0.5), (3.0, 1.5), (2.5, 2.0), (0.5, 2.0),
               (0.0, 1.5)}  # fmt: skip
    assert len(outline) == 16 and set(zip(outline[::2], outline[1::2], strict=True)) == corners
    assert polygons[0]["area"] == 6.0 and polygons[0]["bbox"] == [0.0, 0.0, 3.0, 2.0]
    with pytest.raises(ValueError, match=r"instances must be one of \('class', 'component'\)"):
        coco_annotations(label_map, cams, [0], 1, instances="blob")


def test_components_split_a_class_into_its_8_connected_blobs():
    from wsss.export import coco_annotations

    label_map = np.zeros((5, 5), np.uint8)
    label_map[0, 0] = label_map[1, 1] = 1  # diagonal neighbours: one 8-connected blob
    label_map[4, 4] = 1
    cams = np.ones((1, 5, 5), np.float32)
    blobs = coco_annotations(label_map, cams, [0], 1, instances="component")
    assert [a["area"] for a in blobs] == [2.0, 1.0]
    assert len(coco_annotations(label_map, cams, [0], 1)) == 1


def test_the_coco_file_numbers_annotations_and_lists_categories(tmp_path):
    from wsss.export.coco import coco_categories, write_coco

    assert coco_categories(["cat", "dog"]) == [
        {"id": 1, "name": "cat", "supercategory": "object"},
        {"id": 2, "name": "dog", "supercategory": "object"},
    ]
    assert [c["id"] for c in coco_categories(["cat", "dog"], [17, 3])] == [17, 3]
    images = [{"id": 1, "file_name": "a.jpg", "height": 2, "width": 2}]
    write_coco(tmp_path / "a.json", images, [{"image_id": 1}, {"image_id": 1}], ["cat"])
    written = json.loads((tmp_path / "a.json").read_text())
    assert written == {
        "info": {"description": "wsss pseudo-masks"},
        "images": images,
        "annotations": [{"image_id": 1, "id": 1}, {"image_id": 1, "id": 2}],
        "categories": [{"id": 1, "name": "cat", "supercategory": "object"}],
    }
    write_coco(tmp_path / "b.json", [], [], ["cat"], description="mine", category_ids=[5])
    written = json.loads((tmp_path / "b.json").read_text())
    assert written["info"] == {"description": "mine"} and written["categories"][0]["id"] == 5


def test_rle_counts_are_a_json_string_that_decodes_to_the_mask():
    from wsss.export import mask_to_rle

    mask = np.zeros((3, 4), bool)
    mask[1, 1:3] = True
    rle = mask_to_rle(mask)
    assert isinstance(rle["counts"], str) and rle["size"] == [3, 4]
    assert np.array_equal(mask_utils.decode({**rle, "counts": rle["counts"].encode()}), mask)


def test_a_simplified_outline_still_covers_its_corners():
    mask = np.zeros((12, 12), bool)
    mask[2:10, 2:10] = True
    exact, coarse = mask_to_polygons(mask)[0], mask_to_polygons(mask, tolerance=0.0)[0]
    assert len(coarse) >= len(exact) == 16  # 8 points: each corner cut by half a pixel
    assert np.array_equal(_polygon_mask([coarse], 12, 12).astype(bool), mask)


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
