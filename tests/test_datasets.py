"""VOC 2012 (+SBD) and COCO read in their real layouts; bad input is refused or recorded."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from formats import COCO_IDS
from PIL import Image

from wsss.cams import ClassifierCam
from wsss.data import load_coco_split, load_split, load_voc_split
from wsss.data.screen import BadImages, sample_problem
from wsss.data.screen import BadImages as Policy
from wsss.data.voc import VOC_CLASSES
from wsss.engine.generation import generate_pseudo_masks
from wsss.errors import DataError
from wsss.export import ExportSettings
from wsss.masks import MaskPredictor, ThresholdSettings
from wsss.models import ModelSpec, create_classifier


def test_voc_labels_come_from_masks_with_borders_ignored(voc_root, tiny_dataset):
    synthetic = load_split(tiny_dataset, "eval.csv")
    val = load_voc_split(voc_root, "ImageSets/Segmentation/val.txt")
    assert val.class_names == VOC_CLASSES and len(val) == len(synthetic)
    assert [s.labels for s in val.samples] == [s.labels for s in synthetic.samples]
    assert val.has_masks
    truth = val.ground_truth(val.samples[0])
    assert set(np.unique(truth)) >= {0, 255}, "VOC masks keep their 255 borders"


def test_sbd_train_aug_reads_deeplab_lines_and_falls_back_to_xml(voc_root, tiny_dataset):
    synthetic = load_split(tiny_dataset, "train.csv")
    aug = load_voc_split(
        voc_root,
        "ImageSets/SegmentationAug/train_aug.txt",
        masks_dirs=("SegmentationClassAug", "SegmentationClass"),
    )
    assert len(aug) == len(synthetic)
    assert [s.labels for s in aug.samples] == [s.labels for s in synthetic.samples]
    xml_only = aug.samples[3]  # no mask anywhere: labels from Annotations/*.xml
    assert xml_only.mask_path is None and xml_only.labels == synthetic.samples[3].labels
    assert not aug.has_masks, "one image has no mask, so the split is not evaluated"
    train = load_voc_split(voc_root, "ImageSets/Segmentation/train.txt")
    assert all(s.mask_path.parent.name == "SegmentationClass" for s in train.samples)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("../../etc/passwd", "must be a relative path"),
        ("/JPEGImages/a.jpg /../secret.png", "must be a relative path"),
        ("2008_eval0000\n2008_eval0000", "duplicate image id '2008_eval0000'"),
        ("no_such_image", "has neither a mask"),
        ("a b c", "expected '<id>' or '<image> <mask>'"),
    ],
)
def test_bad_voc_split_lists_name_the_line(voc_root, line, message):
    (voc_root / "bad.txt").write_text(line + "\n")
    with pytest.raises(DataError, match=message) as info:
        load_voc_split(voc_root, "bad.txt")
    assert "bad.txt" in str(info.value)


def test_voc_xml_with_an_unknown_class_is_an_error(voc_root):
    (voc_root / "Annotations" / "odd.xml").write_text(
        "<annotation><object><name>dragon</name></object></annotation>"
    )
    Image.new("RGB", (8, 8)).save(voc_root / "JPEGImages" / "odd.jpg")
    (voc_root / "odd.txt").write_text("odd\n")
    with pytest.raises(DataError, match=r"odd\.xml: unknown VOC class name\(s\) \['dragon'\]"):
        load_voc_split(voc_root, "odd.txt")


def test_coco_labels_ids_and_painted_ground_truth(coco_root, tiny_dataset):
    synthetic = load_split(tiny_dataset, "eval.csv")
    split = load_coco_split(
        coco_root / "val2017", coco_root / "annotations" / "instances_val2017.json"
    )
    assert split.class_names == tuple(f"c{c}" for c in COCO_IDS)
    assert split.coco_category_ids == COCO_IDS
    # image 0 has only crowd regions: left out
    assert len(split) == len(synthetic) - 1
    assert [s.labels for s in split.samples[1:]] == [s.labels for s in synthetic.samples[2:]]
    for sample, source in zip(split.samples[1:], synthetic.samples[2:], strict=True):
        truth = split.ground_truth(sample, sample.size)
        exact = np.asarray(Image.open(source.mask_path))
        if 3 not in exact:  # triangles are stored as box polygons, the rest exactly
            assert np.array_equal(truth, exact)
    # image 1: its first region is a crowd, painted 255
    crowd_image = split.ground_truth(split.samples[0])
    assert (crowd_image == 255).any()


def test_coco_errors_name_the_file(coco_root, tmp_path):
    path = coco_root / "annotations" / "instances_val2017.json"
    data = json.loads(path.read_text())
    data["annotations"][0]["category_id"] = 99
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data))
    with pytest.raises(DataError, match=r"bad\.json: annotation 1 has unknown category 99"):
        load_coco_split(coco_root / "val2017", bad)
    data = json.loads(path.read_text())
    data["images"][0]["file_name"] = "../../outside.jpg"
    bad.write_text(json.dumps(data))
    with pytest.raises(DataError, match="must be a relative path"):
        load_coco_split(coco_root / "val2017", bad)
    bad.write_text("{not json")
    with pytest.raises(DataError, match=r"bad\.json: invalid JSON"):
        load_coco_split(coco_root / "val2017", bad)


def test_export_keeps_coco_category_ids(coco_root, tmp_path):
    split = load_coco_split(
        coco_root / "val2017", coco_root / "annotations" / "instances_val2017.json"
    )
    model = create_classifier(ModelSpec("smallcnn", backbone_kwargs={"width": 8}), 6)
    predictor = MaskPredictor(
        model, ClassifierCam(scales=[1.0], flip=False), ThresholdSettings(0.0, rule="fixed")
    )
    generate_pseudo_masks(predictor, split, tmp_path, ExportSettings(overlays=0))
    coco = json.loads((tmp_path / "annotations.json").read_text())
    assert [c["id"] for c in coco["categories"]] == list(COCO_IDS)
    assert {a["category_id"] for a in coco["annotations"]} <= set(COCO_IDS)
    assert [i["file_name"] for i in coco["images"]] == [s.file_name for s in split.samples]


# --------------------------------------------------------------------------------------------
# Bad input


def _one_image_split(tmp_path, image: Image.Image, mask: np.ndarray | None = None, **save):
    (tmp_path / "images").mkdir(parents=True)
    image.save(tmp_path / "images" / "a.jpg", **save)
    (tmp_path / "classes.txt").write_text("cat\n")
    (tmp_path / "train.csv").write_text("file,labels\na.jpg,cat\n")
    if mask is not None:
        (tmp_path / "masks").mkdir()
        save_mask = Image.fromarray(mask)
        save_mask.save(tmp_path / "masks" / "a.png")
    return load_split(tmp_path, "train.csv")


def test_exif_rotated_jpeg_needs_a_mask_as_the_user_sees_it(tmp_path):
    image = Image.fromarray(np.zeros((10, 20, 3), np.uint8))  # stored 20 wide, 10 high
    exif = image.getexif()
    exif[0x0112] = 6  # shown rotated: 10 wide, 20 high
    upright = _one_image_split(tmp_path / "ok", image, np.zeros((20, 10), np.uint8), exif=exif)
    assert sample_problem(upright.samples[0]) is None
    stored = _one_image_split(tmp_path / "bad", image, np.zeros((10, 20), np.uint8), exif=exif)
    problem = sample_problem(stored.samples[0])
    assert "mask are 20x10 (WxH) but the image is 10x20" in problem


def test_mask_size_mismatch_is_refused_or_skipped(tmp_path):
    split = _one_image_split(tmp_path, Image.new("RGB", (12, 8)), np.zeros((9, 12), np.uint8))
    with pytest.raises(DataError, match="1 of 1 images cannot be used") as info:
        BadImages("error").screen(split)
    assert "a.jpg: its mask are 12x9" in str(info.value)
    bad = BadImages("skip")
    assert len(bad.screen(split)) == 0 and bad.skipped[0]["file"].endswith("a.jpg")


def test_a_mask_value_beyond_the_classes_is_found_when_the_split_is_screened(tmp_path):
    mask = np.zeros((8, 12), np.uint8)
    mask[2:4, 2:4] = 1  # cat
    mask[5, 5] = 255  # ignored
    ok = _one_image_split(tmp_path / "ok", Image.new("RGB", (12, 8)), mask)
    assert len(BadImages("error").screen(ok)) == 1
    mask[6, 6] = 7  # one class only: 7 is no class
    split = _one_image_split(tmp_path / "bad", Image.new("RGB", (12, 8)), mask)
    with pytest.raises(DataError, match=r"a.png: mask values \[7\] are neither a class \(1..1\)"):
        BadImages("error").screen(split)


def test_generate_masks_checks_the_masks_before_training(tmp_path):
    from commands import run

    mask = np.zeros((8, 12), np.uint8)
    mask[0, 0] = 9
    _one_image_split(tmp_path / "data", Image.new("RGB", (12, 8)), mask)
    proc = run("wsss.generate_masks", "dataset=folder", f"dataset.root={tmp_path / 'data'}",
               "dataset.splits.train=train.csv", "split=train", "val_split=null",
               f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path, cache=tmp_path / "cache",
               expect=2)  # fmt: skip
    assert "mask values [9] are neither a class" in proc.stderr
    assert "training" not in proc.stderr and not (tmp_path / "cache" / "classifiers").exists()


def test_truncated_jpeg_found_while_decoding_is_skipped_and_recorded(tmp_path, tiny_dataset):
    source = load_split(tiny_dataset, "eval.csv")
    (tmp_path / "images").mkdir()
    rows = ["file,labels"]
    for sample in source.samples[:4]:
        Image.open(sample.image_path).convert("RGB").save(
            tmp_path / "images" / f"{sample.image_id}.jpg"
        )
        names = ";".join(source.class_names[c] for c in sample.labels)
        rows.append(f"{sample.image_id}.jpg,{names}")
    (tmp_path / "split.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "classes.txt").write_text("\n".join(source.class_names) + "\n")
    victim = tmp_path / "images" / f"{source.samples[1].image_id}.jpg"
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 2])  # the header is intact: only decoding fails
    split = load_split(tmp_path, "split.csv")
    assert sample_problem(split.samples[1]) is None
    model = create_classifier(ModelSpec("smallcnn", backbone_kwargs={"width": 8}), 6)
    predictor = MaskPredictor(model, ClassifierCam(scales=[1.0], flip=False))
    export = ExportSettings(overlays=0)
    with pytest.raises(DataError, match="truncated.*on_bad_image=skip"):
        generate_pseudo_masks(predictor, split, tmp_path / "error", export)
    assert len(list((tmp_path / "error" / "masks").glob("*.png"))) == 1, "work before it is kept"
    result = generate_pseudo_masks(predictor, split, tmp_path / "skip", export, bad=Policy("skip"))
    assert len(result.skipped) == 1 and result.num_images == 3
    skipped = json.loads((tmp_path / "skip" / "skipped.json").read_text())
    assert skipped[0]["file"] == str(victim) and "truncated" in skipped[0]["reason"]
    coco = json.loads((tmp_path / "skip" / "annotations.json").read_text())
    assert [i["id"] for i in coco["images"]] == [1, 3, 4], "ids stay positions in the split"


def test_unlabelled_images_are_labelled_by_the_classifier(tmp_path, tiny_dataset):
    source = load_split(tiny_dataset, "eval.csv")
    (tmp_path / "images").mkdir()
    for sample in source.samples[:3]:
        Image.open(sample.image_path).save(tmp_path / "images" / sample.file_name)
    (tmp_path / "classes.txt").write_text("\n".join(source.class_names) + "\n")
    first = source.class_names[source.samples[0].labels[0]]
    (tmp_path / "split.csv").write_text(
        f"file,labels\n{source.samples[0].file_name},{first}\n"
        f"{source.samples[1].file_name},\n{source.samples[2].file_name},\n"
    )
    with pytest.raises(DataError, match="empty label set.*predict_labels"):
        load_split(tmp_path, "split.csv")
    split = load_split(tmp_path, "split.csv", allow_unlabelled=True)
    torch.manual_seed(0)
    model = create_classifier(ModelSpec("smallcnn", backbone_kwargs={"width": 8}), 6)
    with torch.no_grad():  # a head voting for class 2 and against every other (features >= 0)
        weight = model.get_classifier().weight
        weight.fill_(-50.0 / weight.shape[1])
        weight[2].fill_(50.0 / weight.shape[1])
    cam = ClassifierCam(scales=[1.0], flip=False)
    predictor = MaskPredictor(model, cam, predict_labels=0.5)
    result = generate_pseudo_masks(predictor, split, tmp_path / "out", ExportSettings(overlays=0))
    assert result.predicted_labels == 2
    coco = json.loads((tmp_path / "out" / "annotations.json").read_text())
    predicted = [a for a in coco["annotations"] if a["image_id"] in (2, 3)]
    assert all(a["category_id"] == 3 for a in predicted)
    assert all(0.5 <= a["score"] <= 1.0 for a in predicted)
