import json

import numpy as np
import pytest
from PIL import Image

from wsss.data import load_image, load_label_map, load_split, save_label_map
from wsss.data.synthetic import CLASS_NAMES, SyntheticSpec, ensure_synthetic_dataset
from wsss.errors import DataError


def _folder(tmp_path, rows, classes=("cat", "sofa")):
    (tmp_path / "images").mkdir()
    for name in {r[0] for r in rows}:
        Image.fromarray(np.full((8, 10, 3), 120, np.uint8)).save(tmp_path / "images" / name)
    (tmp_path / "classes.txt").write_text("\n".join(classes) + "\n")
    lines = ["file,labels", *[f"{f},{labels}" for f, labels in rows]]
    (tmp_path / "train.csv").write_text("\n".join(lines) + "\n")
    return tmp_path


def test_folder_split_reads_labels_in_class_order(tmp_path):
    root = _folder(tmp_path, [("a.png", "sofa;cat"), ("b.png", "sofa")])
    split = load_split(root, "train.csv")
    assert split.class_names == ("cat", "sofa")
    assert [s.labels for s in split.samples] == [(0, 1), (1,)]
    assert [s.image_id for s in split.samples] == ["a", "b"]
    assert not split.has_masks


def test_json_labels_and_inferred_classes(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "labels.json").write_text(json.dumps({"x.jpg": ["dog"], "y.jpg": ["cat", "dog"]}))
    split = load_split(tmp_path, "labels.json")
    assert split.class_names == ("cat", "dog")
    assert [s.labels for s in split.samples] == [(1,), (0, 1)]


def test_a_json_entry_listed_twice_is_refused(tmp_path):
    """json.loads would keep the last of two entries for one file; the CSV refuses repeats."""
    (tmp_path / "images").mkdir()
    (tmp_path / "labels.json").write_text('{"x.jpg": ["dog"], "y.jpg": ["cat"], "x.jpg": ["cat"]}')
    with pytest.raises(DataError, match=r"labels\.json: entry 'x.jpg' is listed twice"):
        load_split(tmp_path, "labels.json")


def test_unknown_class_names_the_file_and_line(tmp_path):
    root = _folder(tmp_path, [("a.png", "cat"), ("b.png", "sofaa")])
    with pytest.raises(DataError, match=r"train\.csv: line 3: unknown class name\(s\) \['sofaa'\]"):
        load_split(root, "train.csv")


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([("a.png", "")], "empty label set"),
        ([("a.png", "cat"), ("a.png", "sofa")], "duplicate image id 'a'"),
        ([("../evil.png", "cat")], "must be a relative path inside images/"),
        ([("/etc/passwd", "cat")], "must be a relative path inside images/"),
        ([(".", "cat")], r"file '\.' must be a relative path inside images/"),
    ],
)
def test_bad_label_rows_fail_before_any_work(tmp_path, rows, message):
    (tmp_path / "images").mkdir()
    (tmp_path / "classes.txt").write_text("cat\nsofa\n")
    lines = ["file,labels", *[f"{f},{labels}" for f, labels in rows]]
    (tmp_path / "train.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=message):
        load_split(tmp_path, "train.csv")


def test_corrupt_missing_and_empty_images_name_the_file(tmp_path):
    good = tmp_path / "good.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), np.uint8)).save(good)
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    text = tmp_path / "text.png"
    text.write_text("not an image")
    for path, message in [
        (truncated, "corrupt image, truncated"),
        (empty, "empty"),
        (text, "not a readable image"),
        (tmp_path / "missing.png", "not found"),
    ]:
        with pytest.raises(DataError, match=message) as info:
            load_image(path)
        assert str(path) in str(info.value)


def test_image_modes_become_rgb_uint8(tmp_path):
    gray = np.arange(64, dtype=np.uint8).reshape(8, 8) * 4
    Image.fromarray(gray).save(tmp_path / "l.png")
    assert load_image(tmp_path / "l.png")[..., 1].tolist() == gray.tolist()
    sixteen = gray.astype(np.uint16) * 257
    Image.fromarray(sixteen).save(tmp_path / "i16.png")
    img16 = load_image(tmp_path / "i16.png")
    assert img16.dtype == np.uint8 and img16[..., 0].tolist() == gray.tolist()
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[:4, :, 3] = 255  # top half opaque red, bottom half transparent
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    out = load_image(tmp_path / "rgba.png")
    assert out[0, 0].tolist() == [200, 0, 0] and out[7, 0].tolist() == [255, 255, 255]
    palette = Image.new("P", (8, 8), 1)
    palette.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    palette.save(tmp_path / "p.png")
    assert load_image(tmp_path / "p.png")[3, 3].tolist() == [10, 200, 30]
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg")
    assert load_image(tmp_path / "cmyk.jpg").shape == (8, 8, 3)


def test_exif_rotation_is_applied(tmp_path):
    arr = np.zeros((10, 20, 3), np.uint8)  # wide image
    img = Image.fromarray(arr)
    exif = img.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    img.save(tmp_path / "rot.jpg", exif=exif)
    assert load_image(tmp_path / "rot.jpg").shape == (20, 10, 3)


def test_label_map_round_trip_keeps_raw_values_and_palette(tmp_path):
    lm = np.array([[0, 1, 2], [20, 255, 7]], np.uint8)
    save_label_map(tmp_path / "m.png", lm)
    with Image.open(tmp_path / "m.png") as img:
        assert img.mode == "P"
        assert img.getpalette()[3:6] == [128, 0, 0]  # VOC colour of class 1
    assert load_label_map(tmp_path / "m.png").tolist() == lm.tolist()
    with pytest.raises(DataError, match="mask is 3x2 .* but its image is 4x2"):
        load_label_map(tmp_path / "m.png", size=(2, 4))


def test_synthetic_dataset_is_deterministic_and_well_formed(tmp_path, tiny_dataset):
    from tests.conftest import TINY_SPEC

    again = ensure_synthetic_dataset(tmp_path, TINY_SPEC)
    for name in ["train_00000", "eval_00003"]:
        a = np.asarray(Image.open(tiny_dataset / "images" / f"{name}.png"))
        b = np.asarray(Image.open(again / "images" / f"{name}.png"))
        assert np.array_equal(a, b)
    train = load_split(tiny_dataset, "train.csv")
    assert train.class_names == CLASS_NAMES and train.has_masks and len(train) == 48
    for sample in train.samples:
        mask = load_label_map(sample.mask_path, size=(64, 64))
        present = sorted(int(c) - 1 for c in np.unique(mask) if c > 0)
        assert present == list(sample.labels), sample.image_id
        assert 1 <= len(sample.labels) <= 3


def test_synthetic_boats_sit_on_water():
    from wsss.data.synthetic import render_image

    spec = SyntheticSpec()
    boat = CLASS_NAMES.index("boat")
    blue_below_boat, boats = 0, 0
    for i in range(150):
        rng = np.random.default_rng([7, i])
        image, labels, present = render_image(rng, 96, spec)
        if boat not in present:
            continue
        boats += 1
        rows = np.nonzero((labels == boat + 1).any(axis=1))[0]
        below = image[min(rows[-1] + 3, 95) :, :, :].reshape(-1, 3).astype(int)
        # water is blue: blue channel dominates red in most pixels under the hull
        blue_below_boat += np.mean(below[:, 2] > below[:, 0] + 20) > 0.5
    assert boats >= 10 and blue_below_boat / boats > 0.8


def test_a_mask_value_beyond_the_classes_names_the_mask(tmp_path):
    root = _folder(tmp_path, [("a.png", "cat")])
    (root / "masks").mkdir()
    mask = np.zeros((8, 10), np.uint8)
    mask[2:4, 2:4] = 7  # 2 classes: only 0, 1, 2 and 255 are labels
    save_label_map(root / "masks" / "a.png", mask)
    split = load_split(root, "train.csv")
    with pytest.raises(DataError, match=r"masks/a\.png: mask values \[7\] are neither a class"):
        split.ground_truth(split.samples[0])
