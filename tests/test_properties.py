"""Property-based tests (hypothesis, derandomised): labels files and the COCO export round-trip
whatever valid input they get, and invalid input raises the package's own errors."""

from __future__ import annotations

import contextlib
import json
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from pycocotools import mask as mask_utils
from scipy import ndimage

from wsss.data import load_split
from wsss.data.folder import write_labels_csv
from wsss.errors import WsssError
from wsss.export import coco_annotations

PROFILE = settings(max_examples=60, deadline=None, derandomize=True)

# Class names and file names as people write them: letters of any script, digits, spaces and
# punctuation, but not the characters the formats reserve (";" separates labels, "/" folders).
name_chars = st.characters(
    blacklist_categories=("Cs", "Cc", "Zl", "Zp"), blacklist_characters=";/\\:\r\n\t\x00"
)
class_name = (
    st.text(name_chars, min_size=1, max_size=12)
    .map(str.strip)
    .filter(lambda n: n and n != "background")
)
file_stem = (
    st.text(name_chars, min_size=1, max_size=16)
    .map(str.strip)
    .filter(lambda n: n and n not in (".", "..") and not n.startswith("."))
)


@st.composite
def labelled_images(draw):
    classes = draw(st.lists(class_name, min_size=1, max_size=6, unique=True))
    stems = draw(st.lists(file_stem, min_size=1, max_size=8, unique_by=str.casefold))
    folders = draw(st.lists(st.sampled_from(["", "a/", "b/c/"]), min_size=len(stems),
                            max_size=len(stems)))  # fmt: skip
    rows = []
    for stem, folder in zip(stems, folders, strict=True):
        labels = draw(st.lists(st.sampled_from(classes), min_size=1, max_size=3, unique=True))
        rows.append((f"{folder}{stem}.jpg", labels))
    ids = [r[0].rsplit(".", 1)[0] for r in rows]
    if len(set(ids)) < len(ids):  # two files differing only by folder/suffix: one id
        rows = list({r[0].rsplit(".", 1)[0]: r for r in rows}.values())
    return classes, rows


@PROFILE
@given(labelled_images(), st.sampled_from(["csv", "csv-bom-crlf", "json"]))
def test_valid_labels_files_round_trip(data, form):
    classes, rows = data
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "classes.txt").write_text("\n".join(classes) + "\n", encoding="utf-8")
        if form == "json":
            name = "labels.json"
            (root / name).write_text(json.dumps(dict(rows), ensure_ascii=False), encoding="utf-8")
        else:
            name = "labels.csv"
            write_labels_csv(root / name, rows)
            if form == "csv-bom-crlf":
                text = (root / name).read_text(encoding="utf-8").replace("\r\n", "\n")
                (root / name).write_bytes(text.replace("\n", "\r\n").encode("utf-8-sig"))
        split = load_split(root, name)
    assert [s.file_name for s in split.samples] == [file for file, _ in rows]
    for sample, (_, labels) in zip(split.samples, rows, strict=True):
        assert sample.labels == tuple(sorted(classes.index(n) for n in labels))


@PROFILE
@given(st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
def test_any_bytes_as_a_labels_file_load_or_raise_a_wsss_error(content):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "classes.txt").write_text("cat\ndog\n")
        for name in ("labels.csv", "labels.json", "labels.txt"):
            (root / name).write_bytes(content)
            try:
                split = load_split(root, name, allow_unlabelled=True)
            except WsssError:
                continue
            assert all(set(s.labels) <= {0, 1} for s in split.samples)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=10,
)


@PROFILE
@given(json_values)
def test_any_json_as_a_labels_file_loads_or_raises_a_wsss_error(value):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "classes.txt").write_text("cat\ndog\n")
        (root / "labels.json").write_text(json.dumps(value))
        with contextlib.suppress(WsssError):
            load_split(root, "labels.json")


@st.composite
def label_maps(draw):
    height, width = draw(st.integers(1, 24)), draw(st.integers(1, 24))
    classes = draw(st.lists(st.integers(0, 5), min_size=1, max_size=3, unique=True))
    values = [0, *(c + 1 for c in classes)]
    cells = draw(st.lists(st.sampled_from(values), min_size=height * width,
                          max_size=height * width))  # fmt: skip
    return np.array(cells, np.uint8).reshape(height, width), sorted(classes)


@PROFILE
@given(label_maps(), st.sampled_from(["class", "component"]))
def test_rle_annotations_decode_to_exactly_the_mask(data, instances):
    label_map, classes = data
    cams = np.ones((len(classes), *label_map.shape), np.float32)
    annotations = coco_annotations(label_map, cams, classes, 1, instances=instances)
    painted = np.zeros_like(label_map)
    for ann in annotations:
        region = mask_utils.decode(ann["segmentation"]).astype(bool)
        assert not painted[region].any(), "annotations do not overlap"
        painted[region] = ann["category_id"]
        assert ann["area"] == float(region.sum()) and ann["score"] == 1.0
    assert np.array_equal(painted, label_map)


@PROFILE
@given(label_maps())
def test_polygon_annotations_rasterise_to_the_mask_with_holes_filled(data):
    label_map, classes = data
    cams = np.ones((len(classes), *label_map.shape), np.float32)
    annotations = coco_annotations(label_map, cams, classes, 1, polygons=True)
    height, width = label_map.shape
    for ann in annotations:
        assert all(len(p) >= 6 for p in ann["segmentation"]), "polygons of 3 points or more"
        rle = mask_utils.merge(mask_utils.frPyObjects(ann["segmentation"], height, width))
        drawn = mask_utils.decode(rle).astype(bool)
        components, count = ndimage.label(label_map == ann["category_id"])  # 4-connected
        filled = np.zeros_like(drawn)
        for k in range(1, count + 1):
            filled |= ndimage.binary_fill_holes(components == k)
        assert np.array_equal(drawn, filled)
