"""Explaining classifiers: metric definitions, the report, and the CLI on two kinds of model."""

import json

import numpy as np
import pytest
import torch
from commands import TINY, run
from PIL import Image

from wsss.cams import GradientCam
from wsss.data import load_image, load_label_map, load_split
from wsss.data.image_items import ImageItem
from wsss.engine.explanation import ExplainSettings, explain
from wsss.masks.quality import remove_object
from wsss.metrics import maps as map_metrics
from wsss.models import ModelSpec, create_classifier


def test_localisation_metrics_by_hand():
    cam = np.zeros((4, 4))
    cam[0, 0], cam[1, 1], cam[3, 3] = 1.0, 0.5, 0.5
    obj = np.zeros((4, 4), bool)
    obj[:2, :2] = True
    assert map_metrics.energy_inside(cam, obj) == pytest.approx(1.5 / 2.0)
    assert map_metrics.pointing_hit(cam, obj)
    assert not map_metrics.pointing_hit(cam, ~obj)
    far = np.zeros((4, 4), bool)
    far[2, 2] = True  # the peak at (0, 0) is 2.83 px away
    assert not map_metrics.pointing_hit(cam, far, tolerance=2)
    assert map_metrics.pointing_hit(cam, far, tolerance=3)
    assert map_metrics.map_iou(cam, obj, threshold=0.5) == pytest.approx(2 / 5)
    assert np.isnan(map_metrics.energy_inside(np.zeros((4, 4)), obj))


def test_faithfulness_metrics_by_hand():
    assert map_metrics.average_drop([0.8, 0.5], [0.4, 0.6]) == pytest.approx(25.0)
    assert map_metrics.increase_in_confidence([0.8, 0.5], [0.4, 0.6]) == pytest.approx(50.0)

    # A "classifier" whose probability is the mean brightness of the top-left quarter.
    def probability(batch):
        return batch[:, :, :8, :8].mean(dim=(1, 2, 3))

    image = torch.zeros(3, 16, 16)
    image[:, :8, :8] = 1.0
    good = np.zeros((16, 16))
    good[:8, :8] = 1.0  # points at the evidence
    bad = 1.0 - good  # points away from it
    del_good, ins_good = map_metrics.deletion_insertion(probability, image, good, steps=8)
    del_bad, ins_bad = map_metrics.deletion_insertion(probability, image, bad, steps=8)
    assert del_good < del_bad and ins_good > ins_bad


def test_shortcut_reasons_follow_the_rule():
    from wsss.engine.explanation import ExplainSettings, shortcut_reasons

    settings = ExplainSettings()
    learned = {"energy_near": 0.8, "context_reliance": 0.1}
    assert shortcut_reasons(learned, settings) == []
    context = {
        "energy_near": 0.8,
        "context_reliance": 0.6,
        "p_with_object": 0.9,
        "p_without_object": 0.55,
        "p_absent": 0.02,
    }
    assert "60% of the classifier's evidence" in shortcut_reasons(context, settings)[0]
    spread = {"energy_near": 0.3, "context_reliance": None}
    assert "only 30% of its map energy" in shortcut_reasons(spread, settings)[0]


def test_remove_object_fills_it_from_its_surroundings():
    image = torch.zeros(3, 32, 32)
    image[2] = 1.0  # blue everywhere
    mask = np.zeros((32, 32), bool)
    mask[10:20, 10:20] = True
    image[:, mask] = torch.tensor([1.0, 0.0, 0.0])[:, None]  # a red square
    out = remove_object(image, mask)
    assert torch.allclose(out[:, 15, 15], torch.tensor([0.0, 0.0, 1.0]), atol=1e-3)
    assert torch.equal(out[:, 0, 0], image[:, 0, 0])


def test_explain_writes_figures_json_and_a_report(tiny_dataset, tmp_path):
    torch.manual_seed(0)
    model = create_classifier(ModelSpec("smallcnn", None, {"width": 4}), 6)
    split = load_split(tiny_dataset, "eval.csv")
    items = [
        ImageItem(s.image_id, load_image(s.image_path), s.labels, load_label_map(s.mask_path))
        for s in split.samples[:4]
    ]
    settings = ExplainSettings(top_k=3, classes=["boat"], figures=2, deletion_steps=4)
    cam = GradientCam(scales=[1.0], flip=False)
    summary = explain(model, items, split.class_names, tmp_path, cam, settings)
    saved = json.loads((tmp_path / "explain.json").read_text())
    assert saved["images"] == 4 and len(saved["per_image"]) == 4
    first = saved["per_image"][0]
    assert len(first["top_k"]) == 3
    assert set(first["classes"]) == {split.class_names[c] for c in split.samples[0].labels}
    assert {
        "energy_inside",
        "energy_near",
        "p_without_object",
        "average_drop",
        "insertion_auc",
    } <= set(saved["overall"])
    assert summary["likely_shortcuts"] == saved["likely_shortcuts"]
    assert set(saved["shortcut_reasons"]) == set(saved["likely_shortcuts"])
    assert all("context_reliance" in v for v in saved["per_class"].values())
    assert len(list((tmp_path / "figures").glob("*.png"))) == 2
    figure = Image.open(tmp_path / "figures" / "00000.png")
    assert figure.width > 4 * figure.height  # the input and 4 maps (top-3 + boat) side by side
    report = (tmp_path / "report.html").read_text()
    assert "<table>" in report and "figures/00000.png" in report
    assert "context reliance" in report and "energy near object" in report


def test_explain_cli_on_the_tiny_dataset(tmp_path):
    cache = tmp_path / "cache"
    out = tmp_path / "explain"
    proc = run(
        "wsss.explain",
        *TINY,
        "limit=3",
        "classes=[boat]",
        f"hydra.run.dir={out}",
        cwd=tmp_path,
        cache=cache,
    )
    assert "likely shortcut learners:" in proc.stdout
    saved = json.loads((out / "explain.json").read_text())
    assert saved["images"] == 3 and saved["method"] == "gradcam"


def test_explain_cli_on_a_torchvision_model_and_a_folder(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a.jpg", "b.png"):
        Image.fromarray(rng.integers(0, 255, (50, 70, 3), np.uint8)).save(folder / name)
    out = tmp_path / "explain"
    run(
        "wsss.explain",
        "torchvision_model=resnet18",
        "weights=null",
        f"images={folder}",
        "top_k=3",
        "classes=[tench]",
        "cam=gradcampp",
        "image_size=64",
        f"hydra.run.dir={out}",
        cwd=tmp_path,
        cache=tmp_path / "cache",
    )
    saved = json.loads((out / "explain.json").read_text())
    assert [e["image"] for e in saved["per_image"]] == ["a", "b"]
    assert len(saved["per_image"][0]["top_k"]) == 3
    assert "energy_inside" not in saved["overall"] and "average_drop" in saved["overall"]
    assert "No ground-truth masks" in (out / "report.html").read_text()


def test_explain_cli_on_a_timm_model(tmp_path):
    pytest.importorskip("timm")
    folder = tmp_path / "photos"
    folder.mkdir()
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (48, 48, 3), np.uint8)).save(
        folder / "c.png"
    )
    out = tmp_path / "explain"
    run(
        "wsss.explain",
        "timm_model=resnet18",
        "weights=null",
        f"images={folder}",
        "top_k=2",
        "classes=[tench]",
        f"hydra.run.dir={out}",
        cwd=tmp_path,
        cache=tmp_path / "cache",
    )
    saved = json.loads((out / "explain.json").read_text())
    assert saved["images"] == 1 and len(saved["per_image"][0]["top_k"]) == 2
