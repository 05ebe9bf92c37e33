"""The three CLIs end to end, in subprocesses, at a tiny size."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from commands import GENERATE_TINY, TINY, run


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    return root, root / "cache"


def test_train_writes_a_weights_only_checkpoint(workspace):
    root, cache = workspace
    out = root / "train_run"
    proc = run("wsss.train", *TINY, f"hydra.run.dir={out}", cwd=root, cache=cache)
    assert "validation mAP" in proc.stdout
    payload = torch.load(out / "checkpoint.pt", weights_only=True)
    assert payload["format"] == "wsss-classifier" and len(payload["class_names"]) == 6
    assert "val_map" in json.loads((out / "train_metrics.json").read_text())


def test_generate_with_checkpoint_then_evaluate(workspace):
    root, cache = workspace
    out = root / "gen_run"
    proc = run(
        "wsss.generate_masks",
        *GENERATE_TINY,
        f"checkpoint={root / 'train_run/checkpoint.pt'}",
        "export.save_cams=true",
        f"hydra.run.dir={out}",
        cwd=root,
        cache=cache,
    )
    assert "mIoU with the otsu rule" in proc.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["images"] == 6 and summary["trained_in_this_run"] is False
    assert len(list((out / "masks").glob("*.png"))) == 6
    coco = json.loads((out / "annotations.json").read_text())
    assert len(coco["images"]) == 6
    metrics = json.loads((out / "metrics.json").read_text())

    eval_out = root / "eval_run"
    proc = run(
        "wsss.evaluate",
        *TINY[:3],
        f"predictions={out}",
        f"hydra.run.dir={eval_out}",
        cwd=root,
        cache=cache,
    )
    evaluated = json.loads((eval_out / "metrics.json").read_text())
    # The masks on disk score exactly what generate measured while writing them.
    assert evaluated["masks_on_disk"]["miou"] == metrics["threshold_rule"]["miou"]
    # The sweep reads the saved float16 maps, generate swept the float32 ones: a pixel whose map
    # lies within float16 rounding (5e-4) of a threshold can change sides.
    assert evaluated["threshold_sweep"]["miou"] == pytest.approx(
        metrics["threshold_sweep"]["miou"], abs=1e-3
    )
    assert "tuned on ground truth" in proc.stdout


@pytest.mark.parametrize(
    "setting, named", [("model=resnet18", "resnet18"), ("model.backbone_kwargs.width=16", "16")]
)
def test_a_model_setting_that_contradicts_the_checkpoint_is_refused(workspace, setting, named):
    root, cache = workspace
    out = root / f"contradiction_{named}"
    proc = run(
        "wsss.generate_masks",
        *[a for a in GENERATE_TINY if not a.startswith("model.")],
        f"checkpoint={root / 'train_run/checkpoint.pt'}",
        setting,
        f"hydra.run.dir={out}",
        cwd=root,
        cache=cache,
        expect=2,
    )
    error = proc.stderr.strip().splitlines()[-1]
    assert "smallcnn {'width': 8}" in error and named in error and "checkpoint.pt" in error
    assert not (out / "masks").exists()


def test_train_refuses_a_finished_folder_with_other_settings_and_a_masks_run(workspace):
    root, cache = workspace
    trained = root / "train_run"
    before = (trained / "checkpoint.pt").read_bytes(), (trained / ".hydra/config.yaml").read_text()
    proc = run("wsss.train", *TINY, "train.lr=0.05", f"hydra.run.dir={trained}", cwd=root,
               cache=cache, expect=2)  # fmt: skip
    assert "train.lr" in proc.stderr and "other settings" in proc.stderr
    # the same settings again: nothing to redo, nothing rewritten
    proc = run("wsss.train", *TINY, f"hydra.run.dir={trained}", cwd=root, cache=cache)
    assert "already trained" in proc.stdout
    after = (trained / "checkpoint.pt").read_bytes(), (trained / ".hydra/config.yaml").read_text()
    assert after == before
    masks_run = root / "gen_run"
    record = (masks_run / ".hydra/config.yaml").read_text()
    proc = run("wsss.train", *TINY, f"hydra.run.dir={masks_run}", cwd=root, cache=cache, expect=2)
    assert "holds a generate_masks run" in proc.stderr
    assert (masks_run / ".hydra/config.yaml").read_text() == record
    assert not (masks_run / "checkpoint.pt").exists()


def test_a_file_in_the_way_of_the_run_folder_or_its_masks_is_a_clear_error(workspace, tmp_path):
    root, cache = workspace
    checkpoint = f"checkpoint={root / 'train_run/checkpoint.pt'}"
    a_file = tmp_path / "run_is_a_file"
    a_file.write_text("mine")
    proc = run("wsss.generate_masks", *GENERATE_TINY, checkpoint, f"hydra.run.dir={a_file}",
               cwd=tmp_path, cache=cache, expect=2)  # fmt: skip
    assert proc.stderr.strip() == (
        f"error: {a_file}: the run folder is a file; pick another one (hydra.run.dir=...)"
    )
    assert a_file.read_text() == "mine"
    below = tmp_path / "run_is_a_file" / "sub"
    proc = run("wsss.generate_masks", *GENERATE_TINY, checkpoint, f"hydra.run.dir={below}",
               cwd=tmp_path, cache=cache, expect=2)  # fmt: skip
    assert f"{a_file}: a file is in the way of the run folder" in proc.stderr
    out = tmp_path / "run"
    out.mkdir()
    (out / "masks").write_text("mine")
    proc = run("wsss.generate_masks", *GENERATE_TINY, checkpoint, f"hydra.run.dir={out}",
               cwd=tmp_path, cache=cache, expect=2)  # fmt: skip
    assert "Traceback" not in proc.stderr
    assert "a file is in the way of a folder the run writes" in proc.stderr
    assert str(out / "masks") in proc.stderr
    assert (out / "masks").read_text() == "mine"


def test_generate_with_dense_crf_reports_both_figures(workspace, tmp_path):
    pytest.importorskip("pydensecrf.densecrf")
    root, cache = workspace
    proc = run(
        "wsss.generate_masks",
        *GENERATE_TINY,
        "crf=dense",
        "crf.workers=2",
        f"checkpoint={root / 'train_run/checkpoint.pt'}",
        f"hydra.run.dir={tmp_path / 'o'}",
        cwd=tmp_path,
        cache=cache,
    )
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert {"miou", "rule_miou", "uncertain_pixel_fraction"} <= set(summary)
    # the summary's mIoU is the masks written (the CRF's), as wsss.evaluate scores them
    for label, key in (("mIoU of the masks (CRF, label mode)", "miou"),
                       ("mIoU with the otsu rule, before the CRF", "rule_miou")):  # fmt: skip
        assert re.search(rf"{re.escape(label)}\s+{summary[key]:.4f}\n", proc.stdout), label
    metrics = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert summary["miou"] == round(metrics["masks_on_disk"]["miou"], 4)
    assert summary["rule_miou"] == round(metrics["threshold_rule"]["miou"], 4)


def test_demo_without_checkpoint_trains_once_then_reuses(workspace, tmp_path):
    root, cache = workspace
    # Run from an unrelated working directory: nothing may depend on it.
    first = run(
        "wsss.generate_masks",
        *GENERATE_TINY,
        f"hydra.run.dir={tmp_path / 'a'}",
        cwd=tmp_path,
        cache=cache,
    )
    assert "trained in this run" in first.stdout
    second = run(
        "wsss.generate_masks",
        *GENERATE_TINY,
        f"hydra.run.dir={tmp_path / 'b'}",
        cwd=tmp_path,
        cache=cache,
    )
    assert "trained in this run" not in second.stdout
    a = sorted((tmp_path / "a/masks").glob("*.png"))
    b = sorted((tmp_path / "b/masks").glob("*.png"))
    assert [p.read_bytes() for p in a] == [p.read_bytes() for p in b]


def test_multirun_sweep_writes_one_folder_per_job(workspace, tmp_path):
    root, cache = workspace
    run(
        "wsss.generate_masks",
        "-m",
        *GENERATE_TINY,
        "mask.rule=fixed",
        "mask.bg_threshold=0.1,0.4",
        f"checkpoint={root / 'train_run/checkpoint.pt'}",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        cwd=tmp_path,
        cache=cache,
    )
    jobs = sorted(p for p in (tmp_path / "sweep").iterdir() if p.is_dir() and p.name.isdigit())
    assert [p.name for p in jobs] == ["0", "1"]
    thresholds = [
        json.loads((p / "metrics.json").read_text())["threshold_rule"]["bg_threshold"] for p in jobs
    ]
    assert thresholds == [0.1, 0.4]


def _folder_copy(workspace, dest: Path) -> Path:
    """A folder dataset made from the tiny synthetic one (the same format)."""
    _, cache = workspace
    source = next((cache / "datasets").glob("synthetic-*"))
    shutil.copytree(source, dest)
    return dest


def test_corrupt_image_is_refused_up_front_or_skipped_and_recorded(workspace, tmp_path):
    root, cache = workspace
    data = _folder_copy(workspace, tmp_path / "data")
    bad = data / "images" / "eval_00002.png"
    bad.write_bytes(bad.read_bytes()[:200])
    args = [
        "dataset=folder",
        f"dataset.root={data}",
        "cam.scales=[1.0]",
        f"checkpoint={root / 'train_run/checkpoint.pt'}",
    ]
    proc = run(
        "wsss.generate_masks", *args, f"hydra.run.dir={tmp_path / 'e'}", cwd=tmp_path,
        cache=cache, expect=2,
    )  # fmt: skip
    assert f"{bad}: corrupt image" in proc.stderr
    assert "on_bad_image=skip" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not list((tmp_path / "e").rglob("*.png")), "nothing is written before the check"

    run(
        "wsss.generate_masks", *args, "on_bad_image=skip", f"hydra.run.dir={tmp_path / 's'}",
        cwd=tmp_path, cache=cache,
    )  # fmt: skip
    skipped = json.loads((tmp_path / "s" / "skipped.json").read_text())
    assert [entry["file"] for entry in skipped] == [str(bad)]
    assert "corrupt image" in skipped[0]["reason"]
    masks = sorted(p.stem for p in (tmp_path / "s" / "masks").glob("*.png"))
    assert len(masks) == 5 and "eval_00002" not in masks
    summary = json.loads((tmp_path / "s" / "summary.json").read_text())
    assert summary["skipped_images"] == 1 and summary["images"] == 5


def test_unknown_class_in_labels_file_is_a_clear_error(workspace, tmp_path):
    root, cache = workspace
    data = _folder_copy(workspace, tmp_path / "data")
    lines = (data / "eval.csv").read_text().splitlines()
    lines[3] = lines[3].split(",")[0] + ",disc;dragon"
    (data / "eval.csv").write_text("\n".join(lines) + "\n")
    proc = run(
        "wsss.generate_masks",
        "dataset=folder",
        f"dataset.root={data}",
        f"checkpoint={root / 'train_run/checkpoint.pt'}",
        f"hydra.run.dir={tmp_path / 'o'}",
        cwd=tmp_path,
        cache=cache,
        expect=2,
    )
    assert "eval.csv: line 4: unknown class name(s) ['dragon']" in proc.stderr


def test_config_typo_fails_at_the_command_line(workspace, tmp_path):
    _, cache = workspace
    proc = run("wsss.generate_masks", "mask.bg_treshold=0.3", cwd=tmp_path, cache=cache, expect=1)
    assert "bg_treshold" in proc.stderr
    assert not np.any([p.name == "masks" for p in tmp_path.rglob("masks")])


MODEL_TINY = [o for o in TINY if not o.startswith("dataset.")]


@pytest.mark.parametrize(
    ("fmt", "dataset_args", "num_eval"),
    [
        ("voc", ["dataset=voc"], 12),
        ("sbd", ["dataset=voc_aug"], 12),
        ("coco", ["dataset=coco"], 11),  # one image has only crowd regions
    ],
)
def test_each_dataset_format_trains_generates_and_evaluates(
    workspace, tmp_path, voc_root, coco_root, fmt, dataset_args, num_eval
):
    """The whole pipeline with nothing but ``dataset=`` and a path, as a user runs it."""
    _, cache = workspace
    root = coco_root if fmt == "coco" else voc_root
    args = [*dataset_args, f"dataset.root={root}", *MODEL_TINY]
    out = tmp_path / "gen"
    run(
        "wsss.generate_masks", *args, "cam.scales=[1.0]", "export.overlays=1",
        f"hydra.run.dir={out}", cwd=tmp_path, cache=cache,
    )  # fmt: skip
    summary = json.loads((out / "summary.json").read_text())
    assert summary["trained_in_this_run"] and summary["images"] == num_eval
    assert 0.0 < summary["miou"] <= 1.0
    coco = json.loads((out / "annotations.json").read_text())
    if fmt == "coco":
        source = json.loads((root / "annotations/instances_val2017.json").read_text())
        assert coco["categories"] == [
            {"id": c["id"], "name": c["name"], "supercategory": "object"}
            for c in source["categories"]
        ]
    else:
        assert coco["categories"][0]["name"] == "aeroplane" and len(coco["categories"]) == 20
    run(
        "wsss.evaluate", *dataset_args, f"dataset.root={root}", f"predictions={out}",
        f"hydra.run.dir={tmp_path / 'eval'}", cwd=tmp_path, cache=cache,
    )  # fmt: skip
    evaluated = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    metrics = json.loads((out / "metrics.json").read_text())
    assert evaluated["masks_on_disk"]["miou"] == metrics["masks_on_disk"]["miou"]


@pytest.mark.parametrize("targets", ["masks", "coco", "ground_truth"])
def test_train_segmentation_on_pseudo_masks_end_to_end(workspace, tmp_path, targets):
    """Pseudo-masks of the training images -> a torchvision model -> mIoU on the eval split."""
    root, cache = workspace
    pseudo = root / "pseudo_train"
    if not (pseudo / "summary.json").is_file():
        run(
            "wsss.generate_masks", *GENERATE_TINY, "split=train",
            f"checkpoint={root / 'train_run/checkpoint.pt'}", f"hydra.run.dir={pseudo}",
            cwd=root, cache=cache,
        )  # fmt: skip
    out = tmp_path / "seg"
    proc = run(
        "wsss.train_segmentation", *TINY[:3], f"targets={targets}", f"pseudo_masks={pseudo}",
        "segmentation.epochs=1", "segmentation.batch_size=8", "segmentation.crop_size=48",
        "score_train=true", f"hydra.run.dir={out}", cwd=tmp_path, cache=cache,
    )  # fmt: skip
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["targets"] == targets and metrics["train_images"] == 24
    assert 0.0 <= metrics["eval"]["miou"] <= 1.0 and f"{metrics['eval']['miou']:.4f}" in proc.stdout
    state = torch.load(out / "model.pt", weights_only=True)
    assert any(k.startswith("classifier.") for k in state)
    # score_train: the saved model scored again here, on the 24 training images' ground truth
    from wsss.cli.config import compose_config
    from wsss.engine.segmentation import evaluate_segmentation
    from wsss.models.segmentation import build_segmentation_model

    config = compose_config("train_segmentation", [*TINY[:3], f"cache_dir={cache}"])
    model = build_segmentation_model(config.segmentation.model, 7, None)
    model.load_state_dict(state)
    train = config.dataset.load("train", cache_dir=cache)
    again = evaluate_segmentation(model, train).summary(train.class_names)["miou"]
    assert metrics["train"]["miou"] == pytest.approx(again, abs=2e-3)  # threads may differ


def test_train_segmentation_score_train_needs_ground_truth_and_says_so_before_training(
    workspace, tmp_path
):
    _, cache = workspace
    data = _folder_copy(workspace, tmp_path / "data")
    shutil.rmtree(data / "masks")
    out = tmp_path / "seg"
    proc = run(
        "wsss.train_segmentation", "dataset=folder", f"dataset.root={data}", "score_train=true",
        f"pseudo_masks={tmp_path}", f"hydra.run.dir={out}", cwd=tmp_path, cache=cache, expect=2,
    )  # fmt: skip
    assert "score_train=true needs ground-truth masks for train_split 'train'" in proc.stderr
    assert "Traceback" not in proc.stderr and not (out / "model.pt").exists()


def test_train_segmentation_refuses_masks_of_another_split(workspace, tmp_path):
    root, cache = workspace
    proc = run(
        "wsss.train_segmentation", *TINY[:3], f"pseudo_masks={root / 'gen_run'}",
        f"hydra.run.dir={tmp_path / 'seg'}", cwd=tmp_path, cache=cache, expect=2,
    )  # fmt: skip
    assert "24 of 24 training images have no target" in proc.stderr
    assert "split=train" in proc.stderr


def test_train_segmentation_is_reproducible(workspace, tmp_path):
    """Same command, same model: the initial weights are seeded too."""
    _, cache = workspace
    states = []
    for name in ("first", "second"):
        run(
            "wsss.train_segmentation", *TINY[:3], "targets=ground_truth", "segmentation.epochs=1",
            "segmentation.batch_size=8", "segmentation.crop_size=48",
            f"hydra.run.dir={tmp_path / name}", cwd=tmp_path, cache=cache,
        )  # fmt: skip
        states.append(torch.load(tmp_path / name / "model.pt", weights_only=True))
    assert states[0].keys() == states[1].keys()
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


def test_irn_without_a_checkpoint_makes_seeds_and_network_once_and_maps_are_cached(
    workspace, tmp_path
):
    """refine=irn with no checkpoint: the command makes the train split's CRF seeds and the
    boundary network on the way (cached); a rerun with another background score reuses both
    and the maps, and writes the same maps with other masks."""
    pytest.importorskip("pydensecrf.densecrf")
    root, cache = workspace
    irn = [*GENERATE_TINY, f"checkpoint={root / 'train_run/checkpoint.pt'}", "refine=irn",
           "refine.exp_times=4", "affinity.epochs=1", "affinity.crop_size=48", "cache_maps=true",
           "export.save_cams=true", "irn_seeds.workers=1"]  # fmt: skip
    first = run("wsss.generate_masks", *irn, f"hydra.run.dir={tmp_path / 'a'}", cwd=root,
                cache=cache)  # fmt: skip
    said = first.stdout + first.stderr
    assert "CRF seeds of the 24 images of split 'train'" in said
    assert "training the boundary network on 24 seeds" in said
    networks = list((cache / "affinity").glob("*/affinity.pt"))
    assert len(networks) == 1 and len(list((cache / "seeds").glob("*/masks/*.png"))) == 24
    cached = sorted((cache / "maps").rglob("*.npz"))
    assert len(cached) == 24 + 2 * 6, "the seeds' maps, and the eval maps before and after the walk"
    again = run("wsss.generate_masks", *irn, "refine.bg_threshold=0.4",
                f"hydra.run.dir={tmp_path / 'b'}", cwd=root, cache=cache)  # fmt: skip
    said = again.stdout + again.stderr
    assert "reusing the CRF seeds" in said and "reusing the boundary network" in said
    assert sorted((cache / "maps").rglob("*.npz")) == cached, "the maps were read, not made"
    for sample in sorted((tmp_path / "a" / "cams").glob("*.npz")):
        with np.load(sample) as a, np.load(tmp_path / "b" / "cams" / sample.name) as b:
            assert np.array_equal(a["cams"], b["cams"])
    summary = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert summary["bg_threshold"] == 0.4 and summary["mask_rule"] == "fixed"
