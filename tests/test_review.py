"""Which masks to trust: the quality estimate, the review page in a real browser (headless
Chromium from Debian's packages, driven by Playwright), and what the saved rejections do."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from commands import GENERATE_TINY, TINY, run
from PIL import Image

from wsss.cams import ClassifierCam
from wsss.data import load_label_map, load_split
from wsss.engine.generation import generate_pseudo_masks
from wsss.engine.review import apply_review
from wsss.errors import ConfigError, DataError
from wsss.export import ExportSettings
from wsss.export.report import Rejections, read_rejections
from wsss.masks import MaskPredictor
from wsss.masks.quality import (
    FEATURES,
    IMAGE_FEATURES,
    estimate,
    image_estimate,
    image_features,
    region_features,
)
from wsss.models import ModelSpec, create_classifier

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def reviewed_run(tiny_dataset, tmp_path_factory):
    torch.manual_seed(0)
    model = create_classifier(ModelSpec("smallcnn", None, {"width": 4}), 6)
    split = load_split(tiny_dataset, "eval.csv")
    # ids with characters a URL gives a meaning to ('#' starts a fragment, '?' a query)
    odd = [
        replace(s, image_id=i, file_name=f"{i}.png")
        for s, i in zip(split.samples[:2], ["a#1", "b?2"], strict=True)
    ]
    split = replace(split, samples=(*odd, *split.samples[2:]))
    out = tmp_path_factory.mktemp("run")
    predictor = MaskPredictor(model, ClassifierCam(scales=[1.0]))
    result = generate_pseudo_masks(predictor, split, out, ExportSettings(overlays=0))
    return split, out, result, model


def test_every_annotation_and_image_gets_a_quality_estimate(reviewed_run):
    split, out, result, _ = reviewed_run
    coco = json.loads((out / "annotations.json").read_text())
    assert coco["annotations"] and all(0 <= a["quality"] <= 1 for a in coco["annotations"])
    record = json.loads((out / "records" / f"{split.samples[0].image_id}.json").read_text())
    features = next(iter(record["quality"]["classes"].values()))
    assert set(FEATURES) <= set(features) and 0 <= record["quality"]["image"] <= 1
    regions = list(record["quality"]["classes"].values())
    assert record["quality"]["image"] == image_estimate(regions)  # from what the record holds
    assert len(result.review) == len(split) and (out / "report.html").is_file()
    assert all((out / item["thumb"]).is_file() for item in result.review)


def test_quality_features_see_a_region_that_holds_no_evidence():
    """A classifier that sees its class only in red: a mask on the red object keeps the
    evidence, a mask on the grey background holds none of it."""

    class Red(torch.nn.Module):
        def forward(self, x):
            redness = (x[:, 0] - x[:, 1:].mean(1)).clamp_min(0).mean(dim=(1, 2))
            return torch.stack([40 * redness - 2, -redness], dim=1)

    image = np.full((64, 64, 3), 128, np.uint8)
    image[10:40, 10:40] = (230, 20, 20)
    cams = np.zeros((1, 64, 64), np.float32)
    right, wrong = np.zeros((64, 64), np.uint8), np.zeros((64, 64), np.uint8)
    right[10:40, 10:40] = 1
    wrong[44:60, 44:60] = 1
    good = region_features(Red(), image, cams, [0], right)[0]
    bad = region_features(Red(), image, cams, [0], wrong)[0]
    assert good["kept"] > 0.9 > bad["kept"] and good["removed"] < bad["removed"]
    assert estimate(good) > estimate(bad)


def test_a_review_leaves_out_rejected_images_and_masks(reviewed_run, tmp_path):
    split, out, _, _ = reviewed_run
    coco = json.loads((out / "annotations.json").read_text())
    first, second = split.samples[0].image_id, split.samples[1].image_id
    name = split.class_names[split.samples[1].labels[0]]
    value = split.samples[1].labels[0] + 1
    assert (load_label_map(out / "masks" / f"{second}.png") == value).any()
    result = apply_review(out, tmp_path / "reviewed", Rejections({first}, {(second, name)}))
    reviewed = json.loads((tmp_path / "reviewed" / "annotations.json").read_text())
    assert result.rejected_images == 1 and len(reviewed["images"]) == len(coco["images"]) - 1
    assert not (tmp_path / "reviewed" / "masks" / f"{first}.png").exists()
    mask = load_label_map(tmp_path / "reviewed" / "masks" / f"{second}.png")
    assert not (mask == value).any() and (mask == 255).any(), "the rejected class is ignored"
    assert [a["id"] for a in reviewed["annotations"]] == list(range(1, result.annotations + 1))
    estimates = sorted(a["quality"] for a in coco["annotations"])
    low = apply_review(out, tmp_path / "strict", min_quality=estimates[-1] + 1e-6)
    assert low.annotations == 0
    bound = estimates[len(estimates) // 2]
    middle = apply_review(out, tmp_path / "middle", min_quality=bound)
    assert middle.annotations == sum(q >= bound for q in estimates) < len(estimates)


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium)")
def test_the_review_page_in_a_real_browser(reviewed_run, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    split, out, result, _ = reviewed_run
    flags = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=flags)
        page = browser.new_page(accept_downloads=True, viewport={"width": 1300, "height": 900})
        page.goto((out / "report.html").as_uri())
        cards = page.locator(".card")
        assert cards.count() == len(split)
        qualities = [float(t.split()[1]) for t in page.locator(".card .q").all_inner_texts()]
        assert qualities == sorted(qualities), "worst first"
        page.wait_for_function(
            "[...document.images].filter(i => i.closest('.card'))"
            ".every(i => i.complete && i.naturalWidth > 0)"
        )
        # every thumbnail shown is its own image's, 'a#1' and 'b?2' included
        sources = page.eval_on_selector_all(
            ".card", "cards => cards.map(c => [c.dataset.id, c.querySelector('img').src])"
        )
        assert {"a#1", "b?2"} <= {card_id for card_id, _ in sources}
        for card_id, source in sources:
            assert source.endswith(
                "/thumbs/" + card_id.replace("#", "%23").replace("?", "%3F") + ".jpg"
            )
        worst = cards.first.get_attribute("data-id")
        cards.first.locator(".reject-image").check()
        assert "rejected" in cards.first.get_attribute("class")
        one_class = cards.nth(1).locator(".reject-class").first
        one_class.check()
        with page.expect_download() as info:
            page.click("#save")
        saved = tmp_path / "rejected.json"
        info.value.save_as(saved)
        page.screenshot(path=str(tmp_path / "report.png"))
        # a class filter keeps only images with that class
        name = split.class_names[split.samples[0].labels[0]]
        page.select_option("#class", name)
        shown = page.locator(".card").count()
        browser.close()
    rejections = read_rejections(saved)
    assert rejections.images == {worst} and len(rejections.annotations) == 1
    assert shown == sum(name in [split.class_names[c] for c in s.labels] for s in split.samples)
    assert Image.open(tmp_path / "report.png").size == (1300, 900)


def test_export_and_train_segmentation_accept_the_rejections(tmp_path):
    cache = tmp_path / "cache"
    pseudo = tmp_path / "pseudo"
    run("wsss.generate_masks", *GENERATE_TINY, "split=train", f"hydra.run.dir={pseudo}",
        cwd=tmp_path, cache=cache)  # fmt: skip
    records = sorted((pseudo / "records").glob("*.json"))
    rejected = {"format": "wsss-rejections", "run": "pseudo",
                "images": [records[0].stem, records[1].stem], "annotations": []}  # fmt: skip
    (tmp_path / "rejected.json").write_text(json.dumps(rejected))
    proc = run("wsss.export", f"predictions={pseudo}", f"rejected={tmp_path / 'rejected.json'}",
               f"hydra.run.dir={tmp_path / 'export'}", cwd=tmp_path, cache=cache)  # fmt: skip
    assert "22 images" in proc.stdout and "2 images" in proc.stdout
    run("wsss.train_segmentation", *TINY[:3], f"pseudo_masks={pseudo}",
        f"rejected={tmp_path / 'rejected.json'}", "segmentation.epochs=1",
        "segmentation.batch_size=8", "segmentation.crop_size=48",
        f"hydra.run.dir={tmp_path / 'seg'}", cwd=tmp_path, cache=cache)  # fmt: skip
    metrics = json.loads((tmp_path / "seg" / "metrics.json").read_text())
    assert metrics["train_images"] == 22
    assert Path(metrics["rejected"]).name == "rejected.json"


def test_a_review_refuses_what_would_lose_work_or_do_nothing(reviewed_run, tmp_path):
    """Writing over the source run, a rejections file of another run or with a string for a
    list, and a quality bound that is no IoU are refused before anything is written."""
    split, out, _, _ = reviewed_run
    first = split.samples[0].image_id
    with pytest.raises(ConfigError, match="overwrite the run they come from"):
        apply_review(out, out, Rejections({first}))
    with pytest.raises(DataError, match=r"1 images it does not have \(\['m999'\]\)"):
        apply_review(out, tmp_path / "a", Rejections({"m999"}))
    with pytest.raises(DataError, match=r"classes it does not have \(\['zebra'\]\)"):
        apply_review(out, tmp_path / "b", Rejections(set(), {(first, "zebra")}))
    with pytest.raises(ConfigError, match="min_quality must be in"):
        apply_review(out, tmp_path / "c", None, min_quality=30)
    carried = set(split.samples[0].labels)
    other = next(n for i, n in enumerate(split.class_names) if i not in carried)
    with pytest.raises(DataError, match=rf"classes their images do not carry.*'{other}'"):
        apply_review(out, tmp_path / "d", Rejections(set(), {(first, other)}))
    with pytest.raises(DataError, match=r"saved by the review page of run 'another', not of"):
        apply_review(out, tmp_path / "e", Rejections({first}, run="another"))
    bad = tmp_path / "rejected.json"
    bad.write_text(json.dumps({"format": "wsss-rejections", "images": first}))
    with pytest.raises(DataError, match="must be lists"):
        read_rejections(bad)
    assert not any((tmp_path / name).exists() for name in "abcde")


def test_an_image_estimate_reads_what_its_regions_say_together():
    regions = [
        {"estimate": 0.8, "area": 0.3, "uncertain": 0.1},
        {"estimate": 0.4, "area": 0.5, "uncertain": 0.3},
    ]
    worked = {"estimate_mean": 0.6, "estimate_min": 0.4, "foreground": 0.8, "classes": 2.0,
              "uncertain_mean": 0.2, "uncertain_min": 0.1}  # fmt: skip
    assert image_features(regions) == pytest.approx(worked)
    assert set(worked) == set(IMAGE_FEATURES)
    weights = (0.1, 0.5, 0.2, -0.3, -0.05, 0.1, 0.2)
    by_hand = 0.1 + 0.5 * 0.6 + 0.2 * 0.4 - 0.3 * 0.8 - 0.05 * 2 + 0.1 * 0.2 + 0.2 * 0.1
    values = dict(zip(IMAGE_FEATURES, weights[1:], strict=True))
    assert values["foreground"] == -0.3 and values["classes"] == -0.05  # the order they're read
    assert image_estimate(regions, weights) == pytest.approx(by_hand)
    assert image_estimate(regions, (2.0, *weights[1:])) == 1.0  # clipped to an IoU
    assert image_estimate(regions, (-2.0, *weights[1:])) == 0.0
    assert image_estimate([], weights) == 0.0


def test_the_quality_fit_recovers_the_weights_its_data_was_made_with():
    """IoUs made as a known linear function of the features (plus a little noise): the fit
    finds that function again, to within the noise."""
    from wsss.masks.quality import fit_weights

    rng = np.random.default_rng(0)
    true = np.array([0.05, 0.2, 0.1, -0.1, 0.4, 0.3, 0.05, -0.05, -0.2])
    regions = []
    for _ in range(2000):
        features = {name: float(rng.uniform(0, 1)) for name in FEATURES}
        iou = true[0] + sum(w * features[n] for w, n in zip(true[1:], FEATURES, strict=True))
        regions.append({"features": features, "iou": iou + rng.normal(0, 0.01)})
    assert np.allclose(fit_weights(regions), true, atol=0.01)
    images = []
    for _ in range(2000):  # the image model: the same fit over other names
        features = {name: float(rng.uniform(0, 1)) for name in IMAGE_FEATURES}
        iou = true[0] + sum(w * features[n] for w, n in zip(true[1:7], IMAGE_FEATURES, strict=True))
        images.append({"features": features, "iou": iou + rng.normal(0, 0.01)})
    assert np.allclose(fit_weights(images, IMAGE_FEATURES), true[:7], atol=0.01)
