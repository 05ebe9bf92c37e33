"""A VOC-style fixture (JPEGImages, SegmentationClass, ImageSets) read via labels_from_masks."""

import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from wsss.cams import ClassifierCam
from wsss.data import load_split, save_label_map
from wsss.engine.generation import generate_pseudo_masks
from wsss.export import ExportSettings
from wsss.masks import MaskPredictor
from wsss.models import ModelSpec, create_classifier

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
import labels_from_masks  # noqa: E402


def test_voc_layout_becomes_a_folder_dataset(tmp_path):
    voc = tmp_path / "VOC2012"
    (voc / "JPEGImages").mkdir(parents=True)
    (voc / "SegmentationClass").mkdir()
    (voc / "ImageSets/Segmentation").mkdir(parents=True)
    ids = ["2007_000032", "2007_000039", "2007_000063"]
    contents = [(1, 15), (20,), ()]  # aeroplane+person, tvmonitor, nothing (dropped)
    rng = np.random.default_rng(0)
    for image_id, classes in zip(ids, contents, strict=True):
        Image.fromarray(rng.integers(0, 255, (20, 30, 3), np.uint8)).save(
            voc / "JPEGImages" / f"{image_id}.jpg"
        )
        mask = np.zeros((20, 30), np.uint8)
        for i, c in enumerate(classes):
            mask[2 + 8 * i : 8 + 8 * i, 5:20] = c
            mask[1 + 8 * i, 5:20] = 255  # VOC's object borders
        save_label_map(voc / "SegmentationClass" / f"{image_id}.png", mask)
    (voc / "ImageSets/Segmentation/train.txt").write_text("\n".join(ids) + "\n")

    code = labels_from_masks.main(
        [
            "--root",
            str(voc),
            "--list",
            "ImageSets/Segmentation/train.txt",
            "--out",
            str(voc / "train.csv"),
        ]
    )
    assert code == 0
    assert (voc / "train.csv").read_text().splitlines() == [
        "file,labels",
        "2007_000032.jpg,aeroplane;person",
        "2007_000039.jpg,tvmonitor",
    ]
    split = load_split(voc, "train.csv", images_dir="JPEGImages", masks_dir="SegmentationClass")
    assert len(split.class_names) == 20 and split.has_masks
    assert [s.labels for s in split.samples] == [(0, 14), (19,)]

    # The whole generation runs on it; COCO file names are relative to JPEGImages/.
    model = create_classifier(ModelSpec("smallcnn", None, {"width": 4}), 20)
    out = tmp_path / "out"
    predictor = MaskPredictor(model, ClassifierCam(scales=[1.0]))
    generate_pseudo_masks(predictor, split, out, ExportSettings(overlays=0))
    coco = json.loads((out / "annotations.json").read_text())
    assert [i["file_name"] for i in coco["images"]] == ["2007_000032.jpg", "2007_000039.jpg"]
    assert (out / "masks" / "2007_000039.png").is_file()
