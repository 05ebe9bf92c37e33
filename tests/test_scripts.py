"""Every script in scripts/ runs for real at a tiny size, so no README figure's command rots.

Each is run as a user runs it (``python scripts/<name>.py ...``, in a subprocess, from another
folder) and its output is checked for the table or figure it exists to print.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from commands import GENERATE_TINY, TINY
from conftest import REPO

SCRIPTS = REPO / "scripts"
#: every override of the tiny demo, as the scripts that compose a config take them
OVERRIDES = [a for o in GENERATE_TINY for a in ("--override", o)]


def script(name: str, *args: str, cwd: Path, cache: Path, timeout: int = 600) -> str:
    env = {**os.environ, "WSSS_CACHE": str(cache), "HYDRA_FULL_ERROR": "0"}
    proc = subprocess.run(
        [sys.executable, str(SCRIPTS / name), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> tuple[Path, Path, Path]:
    """A folder, its wsss cache, and a tiny trained classifier."""
    root = tmp_path_factory.mktemp("scripts")
    cache = root / "cache"
    from commands import run

    run("wsss.train", *TINY, f"hydra.run.dir={root / 'train'}", cwd=root, cache=cache)
    return root, cache, root / "train" / "checkpoint.pt"


def test_every_script_has_a_test():
    names = set(re.findall(r'"(\w+\.py)"', Path(__file__).read_text()))
    on_disk = {p.name for p in SCRIPTS.glob("*.py") if not p.name.startswith("_")}
    assert on_disk <= names, f"scripts without a tiny run here: {sorted(on_disk - names)}"


def test_cam_quality(workspace, tmp_path):
    root, cache, _ = workspace
    out = script(
        "cam_quality.py", "--methods", "cam,gradcam,scorecam:4,cam+label", "--limit", "3",
        *OVERRIDES, "--json", str(tmp_path / "q.json"), cwd=root, cache=cache,
    )  # fmt: skip
    rows = [line for line in out.splitlines() if line.startswith("| ")]
    assert [r.split(" | ")[0] for r in rows[2:]] == [
        "| cam", "| gradcam", "| scorecam (top 4 channels)", "| cam",
    ]  # fmt: skip
    assert "| label |" in rows[-1]
    figures = json.loads((tmp_path / "q.json").read_text())["figures"]
    assert figures["images"] == 3 and [r["crf"] for r in figures["rows"]] == [None] * 3 + ["label"]
    for row, line in zip(figures["rows"], rows[2:], strict=True):
        assert f"| {row['miou']:.4f} |" in line  # the file holds the figures printed


def test_tune_crf(workspace):
    root, cache, _ = workspace
    out = script(
        "tune_crf.py", "--split", "eval", "--limit", "3", "--grid", "default", "--workers", "1",
        *OVERRIDES, "--json", str(root / "crf.json"), cwd=root, cache=cache,
    )  # fmt: skip
    assert "no CRF (otsu rule): mIoU" in out and "| mIoU | mIoU confident |" in out
    figures = json.loads((root / "crf.json").read_text())["figures"]
    assert figures["images"] == 3 and f"| {figures['rows'][0]['miou']:.4f} |" in out


def test_bench_memory(workspace, tmp_path):
    root, cache, _ = workspace
    out = script("bench_memory.py", "--sizes", "3", "6", "--train-images", "16", "--json",
                 str(tmp_path / "m.json"), cwd=root, cache=cache)  # fmt: skip
    assert "3 images: peak RSS" in out and "ratio 6 / 3 images:" in out
    figures = json.loads((tmp_path / "m.json").read_text())["figures"]
    assert figures["ratio"] == pytest.approx(
        figures["peak_rss_mib"][1] / figures["peak_rss_mib"][0]
    )


def test_bench_cams(workspace, tmp_path):
    root, cache, _ = workspace
    out = script(
        "bench_cams.py", "--arch", "resnet18", "--batch", "2", "--size", "32", "--repeats", "1",
        "--score-images", "1", "--top-channels", "8", "--json", str(tmp_path / "c.json"),
        cwd=root, cache=cache,
    )  # fmt: skip
    assert "gradcampp" in out and "scorecam top8" in out and "speed-up" in out
    rows = json.loads((tmp_path / "c.json").read_text())["figures"]["rows"]
    assert rows["gradcam"]["max_difference"] < 1e-3 and rows["gradcam"]["speedup"] > 0


def test_scorecam_convention(workspace, tmp_path):
    root, cache, _ = workspace
    out = script("scorecam_convention.py", "--arch", "resnet18", "--size", "32", "--json",
                 str(tmp_path / "s.json"), cwd=root, cache=cache)  # fmt: skip
    found = dict(re.findall(r"align_corners=(\w+) .*max \|diff\| ([0-9.e+-]+)", out))
    assert set(found) == {"False", "True"}, out
    saved = json.loads((tmp_path / "s.json").read_text())["figures"]["max_difference"]
    assert {k: f"{v:.2e}" for k, v in saved.items()} == {
        f"align_corners={k}": v for k, v in found.items()
    }
    # pytorch-grad-cam's convention makes the two agree to float precision; wsss's does not
    assert float(found["True"]) < 1e-4 and float(found["False"]) >= float(found["True"])


def test_bench_crf(workspace, tmp_path):
    root, cache, _ = workspace
    out = script("bench_crf.py", "--images", "2", "--size", "48", "--repeats", "1", "--json",
                 str(tmp_path / "crf.json"), cwd=root, cache=cache)  # fmt: skip
    assert "label" in out and "speed-up" in out
    figures = json.loads((tmp_path / "crf.json").read_text())["figures"]
    assert set(figures["modes"]) == {"label", "soft"} and figures["workers"]["speedup"] > 0


def test_upper_bound(workspace, tmp_path):
    root, cache, checkpoint = workspace
    out = script(
        "upper_bound.py", "--out", str(root / "ub"), "--epochs", "1", "--json",
        str(tmp_path / "ub.json"),
        "--generate", f"checkpoint={checkpoint}", "--generate", "cam.scales=[1.0]",
        "--segmentation", "segmentation.crop_size=48",
        "--segmentation", "segmentation.batch_size=8",
        "--", *TINY[:3], cwd=root, cache=cache,
    )  # fmt: skip
    ub = root / "ub"
    miou = {name: json.loads((ub / f"seg_{name}" / "metrics.json").read_text())["eval"]["miou"]
            for name in ("a", "b", "c")}  # fmt: skip
    for name, label in (("a", "(a) CAM pseudo-masks"), ("c", "(c) ground truth")):
        assert re.search(rf"{re.escape(label)}\s+{miou[name]:.4f}\s", out), (label, out)
    assert f"ratio (b) / (c): {miou['b'] / miou['c']:.3f}" in out
    crf = json.loads((ub / "pseudo_cam+crf" / "summary.json").read_text())
    assert "rule_miou" in crf and f"CAM + CRF {crf['miou']:.4f}" in out
    figures = json.loads((tmp_path / "ub.json").read_text())["figures"]
    assert figures["pseudo_masks_miou"]["cam+crf"] == crf["miou"]
    assert figures["segmentation_miou"]["(c) ground truth"] == miou["c"]
    assert figures["ratio_crf_to_truth"] == miou["b"] / miou["c"]


def _ids(path: Path) -> list[str]:
    return path.read_text().split()


def test_bench_voc(voc_root, tmp_path):
    """The real-photo benchmark end to end on a tiny VOC-layout folder (small model, 1 epoch):
    the preset's one command (LPCAM + CRF), the seed, seed + CRF, walk and LPCAM rows from its
    cached classifier (a row given twice is one run, two rows), every row scored on the report
    and tune photos, the segmentation loop, and a results file."""
    tiny = ["model=smallcnn", "model.backbone_kwargs.width=8", "train.epochs=1",
            "train.crop_size=48", "train.batch_size=8", "cam.scales=[1.0]",
            "affinity.epochs=1", "affinity.crop_size=48",
            "irn_seeds.workers=1"]  # fmt: skip
    out = script(
        "bench_voc.py", "--root", str(voc_root), "--out", str(tmp_path / "bench"), "--limit", "24",
        *[a for o in tiny for a in ("--generate", o)], "--segmentation",
        "--segment", "segmentation.epochs=1", "--segment", "segmentation.crop_size=48",
        "--segment", "segmentation.backbone_weights=null", "--timing-images", "2",
        "--row", "cam_crf=cam=cam refine=none crf=dense", "--lever", "sp=refine=superpixels",
        "--json", str(tmp_path / "bench_voc.json"), cwd=tmp_path, cache=tmp_path / "cache",
        timeout=1200,
    )  # fmt: skip
    rows = (
        "| preset |",
        "| seed |",
        "| seed+crf |",
        "| walk |",
        "| lpcam |",
        "| cam_crf (= seed+crf) |",
    )
    for row in rows:
        assert out.count(row) == 2, row  # report and tune
    assert "report photos (16):" in out and "tune photos (8):" in out
    assert "held-out mAP" in out and "ratio pseudo-masks / ground truth" in out
    assert "least precise classes of the model on the preset's masks" in out
    saved = json.loads((tmp_path / "bench_voc.json").read_text())
    figures = saved["figures"]
    assert saved["benchmark"] == "bench_voc" and "bench_voc.py" in saved["command"]
    # the training's short epoch and its bare loop were timed beside each other in this run
    short_epoch = f"a short epoch {figures['train_seconds_per_image']:.3f} s/photo"
    assert short_epoch in out and "bare forward/backward loop timed beside it" in out
    names = ("preset", "seed", "seed+crf", "walk", "lpcam", "cam_crf")
    assert set(figures["rows"]) == {f"{n}/{p}" for n in names for p in ("report", "tune")}
    assert figures["same_as"] == {"cam_crf": "seed+crf"} and figures["complete"]
    assert figures["rows"]["cam_crf/tune"] == figures["rows"]["seed+crf/tune"]
    # the preset maps with LPCAM (at this size a class whose centres all fail keeps its CAM,
    # so its rows may equal the seed's)
    assert "method: lpcam" in (tmp_path / "bench/masks_preset/.hydra/config.yaml").read_text()
    assert "method: cam" in (tmp_path / "bench/masks_seed/.hydra/config.yaml").read_text()
    preset = figures["rows"]["preset/report"]
    assert 0 <= preset["miou"] <= 1 and 0 <= preset["foreground_recall"] <= 1
    assert preset["best_threshold_miou"] is None and figures["heldout_images"] == 2  # a CRF row
    assert figures["rows"]["seed/report"]["best_threshold_miou"] >= 0
    # a lever labels and scores the tune photos alone, and is no row of the record
    lever = figures["levers"]["sp"]
    assert lever["overrides"] == ["refine=superpixels"] and 0 <= lever["miou"] <= 1
    lever_run = json.loads((tmp_path / "bench/masks_lever_sp/summary.json").read_text())
    assert lever_run["images"] == 8 and lever["seconds_per_photo"] > 0
    lever_config = (tmp_path / "bench/masks_lever_sp/.hydra/config.yaml").read_text()
    assert "name: superpixels" in lever_config and "split: tune" in lever_config
    assert f"| sp | `refine=superpixels` | {lever['miou']:.4f} |" in out
    seg = figures["segmentation_miou"]
    assert set(seg) == {"preset", "ground_truth", "preset_on_fit", "ground_truth_on_fit",
                        "preset_masks_on_fit"}  # fmt: skip
    assert figures["segmentation_ratio"] == seg["preset"] / seg["ground_truth"]
    for name in ("preset", "ground_truth"):
        metrics = json.loads(
            (tmp_path / "bench" / f"segmentation_{name}" / "metrics.json").read_text()
        )
        heldout = figures["segmentation_heldout"][name]
        assert heldout["per_class"] == metrics["eval"]["per_class"]
        assert heldout["foreground"] == metrics["eval"]["foreground"]
        assert (seg[name], seg[f"{name}_on_fit"]) == (
            metrics["eval"]["miou"],
            metrics["train"]["miou"],
        )
        assert f"mIoU {seg[name]:.4f} on the held-out photos, {seg[f'{name}_on_fit']:.4f}" in out
    timings = json.loads((tmp_path / "bench" / "timings.json").read_text())
    assert figures["record_seconds"] == pytest.approx(
        sum(t["seconds"] for t in timings.values()), abs=0.2
    )
    whole = f"{figures['record_seconds'] / 60:.1f} min"
    assert f"the whole record (every stage above, the classifier included): {whole}" in out
    masks = json.loads((tmp_path / "bench" / "evaluate_preset_fit" / "metrics.json").read_text())
    assert seg["preset_masks_on_fit"] == masks["masks_on_disk"]["miou"]
    bench = tmp_path / "bench"
    assert len(list((bench / "masks_preset" / "masks").glob("*.png"))) == 24
    assert not (bench / "masks_cam_crf").exists()
    assert list((bench / "cache" / "affinity").glob("*/affinity.pt")), "the walk's network"
    assert list((bench / "cache" / "prototypes").glob("*/prototypes.pt")), "the preset's LPCAM"
    # --only: a rerun of some rows reuses their finished stages and reports those rows alone
    again = script(
        "bench_voc.py", "--root", str(voc_root), "--out", str(bench), "--limit", "24",
        *[a for o in tiny for a in ("--generate", o)], "--timing-images", "2", "--only", "seed",
        "--json", str(tmp_path / "only.json"), cwd=tmp_path, cache=tmp_path / "cache",
    )  # fmt: skip
    only = json.loads((tmp_path / "only.json").read_text())["figures"]
    assert set(only["rows"]) == {f"{n}/{p}" for n in ("preset", "seed") for p in ("report", "tune")}
    assert only["rows"]["seed/tune"] == figures["rows"]["seed/tune"] and "| walk |" not in again


def test_bench_voc_folder(voc_root, tmp_path):
    """A user's folder (--folder): every 3rd report photo, the classifier trained on those alone,
    the rows scored on all of them; the run ends with its figures (it has no tune photos, and
    no lever), and its folder name is bench_voc_folder's."""
    tiny = ["model=smallcnn", "model.backbone_kwargs.width=8", "train.epochs=1",
            "train.crop_size=48", "train.batch_size=4", "cam.scales=[1.0]"]  # fmt: skip
    out = script(
        "bench_voc.py", "--root", str(voc_root), "--out", str(tmp_path / "folder"), "--folder",
        "--limit", "24", *[a for o in tiny for a in ("--generate", o)], "--timing-images", "2",
        "--only", "seed", "--json", str(tmp_path / "folder.json"), cwd=tmp_path,
        cache=tmp_path / "cache",
    )  # fmt: skip
    saved = json.loads((tmp_path / "folder.json").read_text())
    figures = saved["figures"]
    assert saved["benchmark"] == "bench_voc_folder" and figures["complete"]
    assert figures["regime"] == "folder" and figures["part_images"] == {"all": 6}
    assert set(figures["rows"]) == {"preset/all", "seed/all"} and figures["levers"] == {}
    ids = _ids(voc_root / "ImageSets/Segmentation/train.txt")[:24]
    report = [x for i, x in enumerate(ids) if i % 3 != 0]
    assert _ids(tmp_path / "folder/lists/fit.txt") == report[::3]
    assert figures["heldout_images"] == 0 and figures["heldout_map"] is None
    assert "| seed |" in out


@pytest.fixture(scope="module")
def saved_run(workspace) -> Path:
    """A run of the tiny eval split with its maps saved and its quality estimated."""
    root, cache, checkpoint = workspace
    from commands import run

    out = root / "saved"
    if not (out / "summary.json").is_file():
        run("wsss.generate_masks", *GENERATE_TINY, f"checkpoint={checkpoint}",
            "export.save_cams=true", f"hydra.run.dir={out}", cwd=root, cache=cache)  # fmt: skip
    return out


def test_tune_threshold(workspace, saved_run):
    root, cache, _ = workspace
    overrides = [a for o in GENERATE_TINY[:3] for a in ("--override", o)]
    out = script("tune_threshold.py", "--run", str(saved_run), "--tune", "eval", "--report",
                 "eval", *overrides, "--json", str(saved_run.parent / "t.json"), cwd=root,
                 cache=cache)  # fmt: skip
    assert "| otsu |" in out and "fixed: best on eval is" in out
    rules = json.loads((saved_run.parent / "t.json").read_text())["figures"]["rules"]
    assert f"| otsu | {rules['otsu']['tune']:.4f} |" in out


def test_error_analysis(workspace, saved_run):
    """The three kinds of error add up to the pixels the masks get wrong, counted here directly."""
    import numpy as np
    from PIL import Image

    from wsss.cli.config import compose_config

    root, cache, _ = workspace
    overrides = [a for o in GENERATE_TINY[:3] for a in ("--override", o)]
    out = script("error_analysis.py", "--run", str(saved_run), "--split", "eval", "--band", "1",
                 *overrides, "--json", str(saved_run.parent / "e.json"), cwd=root,
                 cache=cache)  # fmt: skip
    figures = json.loads((saved_run.parent / "e.json").read_text())["figures"]
    run = figures["runs"]["saved"]
    split = compose_config("evaluate", GENERATE_TINY[:3] + [f"cache_dir={cache}"]).dataset.load(
        "eval", cache_dir=cache
    )
    wrong = scored = 0
    for sample in split.samples:
        truth = split.ground_truth(sample)
        pred = np.asarray(Image.open(saved_run / "masks" / f"{sample.image_id}.png"))
        pred = np.where(pred == 255, 0, pred)
        wrong += int(((pred != truth) & (truth != 255)).sum())
        scored += int((truth != 255).sum())
    assert run["pixels"] == scored and run["images"] == len(split.samples)
    total = sum(run["overall"][k]["share"] for k in ("spill", "missed", "confused"))
    assert total == pytest.approx(wrong / scored)
    assert all(0 <= run["overall"][k]["near_boundary"] <= run["overall"][k]["share"]
               for k in ("spill", "missed", "confused"))  # fmt: skip
    assert f"| saved | {run['overall']['spill']['share']:.3f} (" in out


def test_error_counts_by_hand(monkeypatch):
    """A 3x4 image: truth background left, class 1 right; each kind of error placed by hand."""
    import numpy as np

    monkeypatch.syspath_prepend(str(SCRIPTS))
    from error_analysis import boundary_band, error_counts

    truth = np.array([[0, 0, 1, 1], [0, 0, 1, 1], [0, 0, 1, 255]], np.uint8)
    pred = np.array([[1, 0, 1, 1], [0, 0, 0, 2], [0, 255, 1, 2]], np.uint8)
    near = boundary_band(truth, 0)
    assert near.astype(int).tolist() == [[0, 1, 1, 0], [0, 1, 1, 1], [0, 1, 1, 1]]
    counts, scored = error_counts(pred, truth, near, num_labels=3)
    assert scored == 11  # the 255 truth pixel is not scored
    assert counts[0, 1].tolist() == [0, 1]  # spill at (0, 0), charged to class 1, inside
    assert counts[1, 1].tolist() == [1, 0]  # missed at (1, 2), near the boundary
    assert counts[2, 1].tolist() == [1, 0]  # confused at (1, 3) as class 2 ((2, 3) is ignored)
    assert counts.sum() == 3  # pred 255 at (2, 1) on true background is background: no error


def test_boundary_scores_by_hand(monkeypatch):
    """A 2x2 object in a 6x6 image: 12 pixels where two labels meet (its 4 and the 8 beside
    it); a boundary found on one of them and one found 2 pixels from any."""
    import numpy as np

    monkeypatch.syspath_prepend(str(SCRIPTS))
    from error_analysis import boundary_scores

    truth = np.zeros((6, 6), np.uint8)
    truth[2:4, 2:4] = 1
    edge = np.zeros((6, 6), np.float32)
    edge[2, 2], edge[0, 5] = 0.9, 0.6
    exact = boundary_scores(edge, truth, 0, (0.5, 0.7))
    assert exact.tolist() == [[2, 1, 12, 1], [1, 1, 12, 1]]  # found, on a true one, true, seen
    # within a pixel: (2, 2) sees the 8 true boundary pixels around it; (0, 5) is still off
    assert boundary_scores(edge, truth, 1, (0.5, 0.7)).tolist() == [[2, 1, 12, 8], [1, 1, 12, 8]]


def test_mutation_score(tmp_path):
    """mutmut's verdicts counted per module: kills and timeouts over every checked mutant."""
    meta = tmp_path / "mutants" / "wsss" / "masks" / "threshold.py.meta"
    meta.parent.mkdir(parents=True)
    codes = {"m1": 1, "m2": 0, "m3": 36, "m4": 33, "m5": None, "m6": 1}
    meta.write_text(json.dumps({"exit_code_by_key": codes}))
    out = script("mutation_score.py", "--mutants", str(tmp_path / "mutants"), "--json",
                 str(tmp_path / "mutation.json"), cwd=tmp_path, cache=tmp_path)  # fmt: skip
    module = json.loads((tmp_path / "mutation.json").read_text())["figures"]["modules"][
        "wsss/masks/threshold.py"
    ]
    assert module["killed"] == 2 and module["survived"] == 1 and module["timeout"] == 1
    assert module["no tests"] == 1 and module["mutants"] == 6
    assert module["killed_share"] == pytest.approx(3 / 5)  # the unchecked one left out
    assert module["strict_killed_share"] == pytest.approx(2 / 5) and module["checked"] == 5
    assert "| wsss/masks/threshold.py | 6 | 5 | 2 | 1 | 1 | 1 | 0.600 | 0.400 |" in out


def test_fit_quality(workspace, saved_run):
    root, cache, _ = workspace
    overrides = [a for o in GENERATE_TINY[:3] for a in ("--override", o)]
    out = script("fit_quality.py", "--run", str(saved_run), "--tune", "eval", "--report",
                 "eval", *overrides, "--json", str(saved_run.parent / "q.json"), cwd=root,
                 cache=cache)  # fmt: skip
    assert "WEIGHTS = (" in out and "| worst 20% |" in out
    figures = json.loads((saved_run.parent / "q.json").read_text())["figures"]
    assert len(figures["weights"]) == 9 and set(figures["spearman"]) >= {"fitted", "shipped"}
    assert len(figures["image_weights"]) == 7 and "IMAGE_WEIGHTS = (" in out


def test_bench_large_photos(workspace, tmp_path):
    root, cache, _ = workspace
    out = script("bench_large_photos.py", "--sizes", "320x240", "--model", "smallcnn",
                 "--json", str(tmp_path / "l.json"), cwd=root, cache=cache)  # fmt: skip
    assert out.count("320x240") == 3 and "MiB" in out
    measured = json.loads((tmp_path / "l.json").read_text())["figures"]["sizes"]["320x240"]
    assert measured["megapixels"] == pytest.approx(0.0768)
    for command in ("train", "generate_masks", "explain"):
        line = f"320x240 {0.1:>10.1f} {command:<15} {measured[command]['seconds']:>8.1f} "
        assert line in out and measured[command]["peak_rss_mib"] > 0


def test_labels_from_masks(voc_root, tmp_path):
    """The labels file of a VOC-layout folder, checked against the masks read here, and a
    generation over it as a folder dataset (COCO file names relative to JPEGImages/)."""
    import shutil

    import numpy as np

    from wsss.cams import ClassifierCam
    from wsss.data import load_label_map, load_split
    from wsss.data.voc import VOC_CLASSES
    from wsss.engine.generation import generate_pseudo_masks
    from wsss.export import ExportSettings
    from wsss.masks import MaskPredictor
    from wsss.models import ModelSpec, create_classifier

    data = tmp_path / "data"  # a folder dataset of the VOC layout: labels file beside the photos
    for folder in ("JPEGImages", "SegmentationClass"):
        shutil.copytree(voc_root / folder, data / folder)
    listed = voc_root / "ImageSets/Segmentation/train.txt"
    out = script(
        "labels_from_masks.py", "--root", str(voc_root), "--list", str(listed),
        "--out", str(data / "train.csv"), cwd=tmp_path, cache=tmp_path / "cache",
    )  # fmt: skip
    assert out.startswith("wrote ")
    expected = ["file,labels"]
    for image_id in listed.read_text().split():
        mask = load_label_map(voc_root / "SegmentationClass" / f"{image_id}.png")
        present = [int(c) for c in np.unique(mask) if 0 < c < 255]
        if present:  # a photo of background alone has no label and is left out
            names = ";".join(VOC_CLASSES[c - 1] for c in present)
            expected.append(f"{image_id}.jpg,{names}")
    assert (data / "train.csv").read_text().splitlines() == expected

    split = load_split(data, "train.csv", images_dir="JPEGImages", masks_dir="SegmentationClass")
    assert split.class_names == tuple(VOC_CLASSES) and split.has_masks
    assert len(split) == len(expected) - 1
    model = create_classifier(ModelSpec("smallcnn", None, {"width": 4}), 20)
    generated = tmp_path / "out"
    generate_pseudo_masks(MaskPredictor(model, ClassifierCam(scales=[1.0])), split, generated,
                          ExportSettings(overlays=0))  # fmt: skip
    coco = json.loads((generated / "annotations.json").read_text())
    assert [i["file_name"] for i in coco["images"]] == [e.split(",")[0] for e in expected[1:]]


def test_bench_walk(tmp_path):
    out = script("bench_walk.py", "--sizes", "80x60", "--exp-times", "2", "--json",
                 str(tmp_path / "w.json"), cwd=tmp_path, cache=tmp_path / "cache")  # fmt: skip
    assert "| 80x60 | 20x15 |" in out and "MiB" in out
    rows = json.loads((tmp_path / "w.json").read_text())["figures"]["rows"]
    assert rows[0]["grid"] == [15, 20] and rows[0]["walk_seconds"] > 0


@pytest.fixture(scope="module")
def tiny_affinity(workspace, saved_run) -> Path:
    """A boundary network trained for one epoch on the saved run's seeds."""
    root, cache, checkpoint = workspace
    from commands import run

    affinity = root / "affinity"
    run("wsss.train_affinity", *TINY, f"checkpoint={checkpoint}", f"seeds={saved_run}",
        "split=eval", "affinity.epochs=1", "affinity.crop_size=48", f"hydra.run.dir={affinity}",
        cwd=root, cache=cache)  # fmt: skip
    return affinity / "affinity.pt"


def test_error_analysis_scores_the_boundary_network(
    workspace, saved_run, tiny_affinity, tmp_path, monkeypatch
):
    """Its precision and recall are the counts of boundary_scores over the split's images."""
    import numpy as np
    import torch.nn.functional as F

    from wsss.cli.config import compose_config
    from wsss.data import load_image
    from wsss.masks import IrnSettings, at_working_size

    monkeypatch.syspath_prepend(str(SCRIPTS))
    from error_analysis import THRESHOLDS, boundary_scores

    root, cache, _ = workspace
    overrides = [a for o in GENERATE_TINY[:3] for a in ("--override", o)]
    out = script("error_analysis.py", "--run", str(saved_run), "--split", "eval", "--band", "1",
                 "--boundary-net", str(tiny_affinity), *overrides, "--json",
                 str(tmp_path / "e.json"), cwd=root, cache=cache)  # fmt: skip
    found = json.loads((tmp_path / "e.json").read_text())["figures"]["boundary_network"]
    config = compose_config("generate_masks", [*GENERATE_TINY[:3], f"cache_dir={cache}"])
    split = config.dataset.load("eval", cache_dir=cache)
    irn, total = IrnSettings(checkpoint=str(tiny_affinity)), 0
    for sample in split.samples:
        image = load_image(sample.image_path)
        edge = irn.boundary(at_working_size(image, config.cam.max_side))
        truth = split.ground_truth(sample, size=image.shape[:2])
        edge = F.interpolate(edge[None, None], truth.shape, mode="bilinear")[0, 0].numpy()
        total = total + boundary_scores(edge, truth, 1, THRESHOLDS)
    for (t, row), (predicted, hit, true, seen) in zip(found["by_threshold"].items(), total,
                                                       strict=True):  # fmt: skip
        assert row == {"precision": hit / max(1, predicted), "recall": seen / max(1, true)}
        assert f"| {t} | {row['precision']:.3f} | {row['recall']:.3f} |" in out
    assert np.all(total[:, 2] > 0)  # the fixture's objects have boundaries


def test_tune_walk(workspace, saved_run, tiny_affinity, tmp_path):
    """The walk's ablation script: two settings of one boundary network, scored side by side."""
    root, cache, _ = workspace
    overrides = [a for o in GENERATE_TINY[:3] for a in ("--override", o)]
    out = script("tune_walk.py", "--run", str(saved_run), "--affinity",
                 str(tiny_affinity), "--split", "eval", "--set", "beta=5,10",
                 "--set", "exp_times=2", "--json", str(tmp_path / "walk.json"), *overrides,
                 cwd=root, cache=cache)  # fmt: skip
    rows = [
        line for line in out.splitlines() if line.startswith("| affinity |") and "(0.4)" in line
    ]
    assert len(rows) == 2 and "| 5.0 | 2 |" in rows[0] and "| 10.0 | 2 |" in rows[1]
    saved = json.loads((tmp_path / "walk.json").read_text())
    assert saved["images"] == 6 and [r["beta"] for r in saved["rows"]] == [5.0, 10.0]
    # the sweep includes the walk's background score, so its best is at least as good
    assert all(0 < r["miou"] <= r["best_threshold_miou"] + 1e-9 for r in saved["rows"])


def test_same_outputs_finds_no_difference_between_a_tree_and_itself(tmp_path):
    """The refactoring check: the committed tree against itself, two tiny commands."""
    out = script("same_outputs.py", "--baseline", "HEAD", "--tiny", "--only", "demo,evaluate",
                 "--out", str(tmp_path / "same"), cwd=tmp_path, cache=tmp_path / "cache",
                 timeout=900)  # fmt: skip
    assert "0 differences in" in out


def test_same_outputs_rejects_a_mask_of_an_image_that_has_one(tmp_path, monkeypatch):
    """The export command's review: the first image may have no mask (a tiny model's), so the
    rejected mask is the first annotated image's, and another image is rejected whole."""
    import importlib.util

    monkeypatch.syspath_prepend(str(SCRIPTS))
    spec = importlib.util.spec_from_file_location("same_outputs", SCRIPTS / "same_outputs.py")
    same = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(same)
    demo = tmp_path / "demo"
    (demo / "records").mkdir(parents=True)
    (demo / "annotations.json").write_text(json.dumps({"categories": [{"id": 3, "name": "star"}]}))
    for name, found in (("a", []), ("b", [{"category_id": 3}]), ("c", [])):
        (demo / "records" / f"{name}.json").write_text(json.dumps({"annotations": found}))
    same.prepare_inputs(None, 0)("export", tmp_path)
    rejected = json.loads((tmp_path / "rejected.json").read_text())
    assert rejected["annotations"] == [{"image": "b", "class": "star"}]
    assert rejected["images"] == ["a"]


def test_same_outputs_reports_a_changed_mask_and_ignores_timings(tmp_path, monkeypatch):
    import importlib.util

    monkeypatch.syspath_prepend(str(SCRIPTS))  # its own imports (_results), as when run
    spec = importlib.util.spec_from_file_location("same_outputs", SCRIPTS / "same_outputs.py")
    same = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(same)
    for side in ("baseline", "current"):
        run = tmp_path / side / "demo"
        (run / "masks").mkdir(parents=True)
        (run / "masks" / "a.png").write_bytes(b"same")
        (run / "metrics.json").write_text(json.dumps({"miou": 0.5, "seconds": len(side),
                                                      "outputs": str(run)}))  # fmt: skip
    (tmp_path / "current" / "demo" / "masks" / "b.png").write_bytes(b"new")
    assert same.compare(tmp_path / "baseline", tmp_path / "current") == [
        "only in the current tree: demo/masks/b.png"
    ]
    (tmp_path / "current" / "demo" / "masks" / "a.png").write_bytes(b"changed")
    assert "differs: demo/masks/a.png" in same.compare(tmp_path / "baseline", tmp_path / "current")


def test_irn_ablation(voc_root, tmp_path):
    """The walk's ablation on a tiny VOC-layout folder: every stage, every variant's row."""
    tiny = ["--model", "model=smallcnn", "--model", "model.backbone_kwargs.width=8",
            "--train", "train.epochs=1", "--train", "train.crop_size=48",
            "--affinity", "affinity.epochs=1", "--affinity", "affinity.crop_size=48"]  # fmt: skip
    out = script("irn_ablation.py", "--root", str(voc_root), "--run", str(tmp_path / "run"),
                 *tiny, "--json", str(tmp_path / "ablation.json"), cwd=tmp_path,
                 cache=tmp_path / "cache", timeout=1200)  # fmt: skip
    saved = json.loads((tmp_path / "ablation.json").read_text())["figures"]
    variants = {row["variant"] for row in saved["walks"]}
    assert variants == {"earlier", "seeds: fit photos", "training: 10 epochs", "walk: beta",
                        "walk: exp_times", "walk: radius"}  # fmt: skip
    assert len(saved["walks"]) == 3 + 1 + 1 + 3 + 2 and "| walk: radius | radius 8 |" in out
    assert {row["bg_threshold"] for row in saved["walks"]} == {0.25}, "IRN's, in every row"
    assert (
        saved["networks"]["seeds: fit photos"]["seed_photos"]
        > saved["networks"]["earlier"]["seed_photos"]
    )


def test_bench_speed(workspace, voc_root, tmp_path):
    """One photo through every engine and stage, the machine's own GFLOP/s, and the peer."""
    root, cache, checkpoint = workspace
    import torch

    from wsss.cams.prototypes import Prototypes
    from wsss.models import load_checkpoint

    classifier = load_checkpoint(checkpoint)  # prototypes in its feature space: 2 + 2 per class
    weights = classifier.model.cam_weights.detach()
    prototypes = Prototypes(list(classifier.class_names),
                            [torch.randn(2, weights.shape[1]) for _ in weights],
                            [torch.randn(2, weights.shape[1]) for _ in weights])  # fmt: skip
    prototypes.save(tmp_path / "prototypes.pt")
    out = script("bench_speed.py", "--checkpoint", str(checkpoint), "--root", str(voc_root),
                 "--repeats", "1", "--prototypes", str(tmp_path / "prototypes.pt"),
                 "--json", str(tmp_path / "speed.json"), cwd=root, cache=cache)  # fmt: skip
    saved = json.loads((tmp_path / "speed.json").read_text())["figures"]
    engines = {row["engine"]: row for row in saved["forward"]}
    assert "PyTorch eager (float32, channels-last)" in engines and "OpenVINO" in engines
    assert engines["OpenVINO"]["max_relative_difference"] < 1e-4
    assert saved["forward_gflop"] > 0 and saved["machine_gflops"]["gemm"] > 0
    stages = saved["stages"]
    assert (
        "dense CRF (label mode, 2 runs)" in stages and "superpixels (SLIC, 200 regions)" in stages
    )
    whole = stages["preset=photos whole (LPCAM, rule, CRF, quality, writing)"]
    assert whole > stages["LPCAM maps (scales 1.0, 1.5 + flips)"] > 0  # the maps are part of it
    assert f"| preset=photos whole (LPCAM, rule, CRF, quality, writing) | {whole:.3f} |" in out
    assert "| OpenVINO |" in out and "GFLOP/s" in out


def test_compare_backbones(voc_root, tmp_path):
    """Two models through the preset (their classifiers trained, prototypes fitted), their seed
    and preset masks of the tune photos scored, their maps timed side by side, one file."""
    tiny = ["train.epochs=1", "train.crop_size=48", "train.batch_size=8", "cam.scales=[1.0]"]
    out = script("compare_backbones.py", "--root", str(voc_root), "--out", str(tmp_path / "cmp"),
                 "--models", "smallcnn,efficientnet_lite0", "--limit", "24",
                 *[a for o in tiny for a in ("--generate", o)], "--timing-images", "2", "--json",
                 str(tmp_path / "cmp.json"), cwd=tmp_path, cache=tmp_path / "cache",
                 timeout=900)  # fmt: skip
    figures = json.loads((tmp_path / "cmp.json").read_text())["figures"]
    assert list(figures["models"]) == ["smallcnn", "efficientnet_lite0"] and figures["complete"]
    for model, row in figures["models"].items():
        folder = tmp_path / "cmp" / "backbones" / model
        for name in ("seed", "preset"):
            summary = json.loads((folder / f"masks_{name}" / "summary.json").read_text())
            assert row[f"{name}_miou"] == summary["miou"] and summary["images"] == 8  # tune
        assert "method: lpcam" in (folder / "masks_preset/.hydra/config.yaml").read_text()
        assert row["maps_seconds_per_image"] > 0
        assert f"| {model} | {row['heldout_map']:.4f} |" in out
    # one classifier per model, shared by its two runs
    assert len(list((tmp_path / "cmp" / "cache" / "classifiers").glob("*/checkpoint.pt"))) == 2


def test_check_readme_refuses_a_hand_edited_figure_and_a_drifted_demo(tmp_path):
    """The figure check passes a figure a config holds and names one nothing holds; the demo
    check passes a summary within the tolerance and names the key that drifted past it."""
    readme = tmp_path / "README.md"
    demo = ("## What the demo prints\n\n```\n  classifier mAP (val)   0.9000\n"
            "  mIoU with the otsu rule   0.6000\n"
            "  mIoU at best fixed threshold 0.35   0.5900\n```\n")  # fmt: skip
    readme.write_text(f"IRN's background score is 0.25 here.\n\n{demo}")
    args = ["--readme", str(readme)]
    assert "figures: 0 problems" in script("check_readme.py", "figures", *args, cwd=tmp_path,
                                           cache=tmp_path / "c")  # fmt: skip
    readme.write_text(f"IRN's background score is 0.25 here, mIoU 0.98765.\n\n{demo}")
    proc = subprocess.run([sys.executable, str(SCRIPTS / "check_readme.py"), "figures", *args],
                          capture_output=True, text=True)  # fmt: skip
    assert proc.returncode == 1 and "0.98765: no result file" in proc.stdout
    assert "0.25" not in proc.stdout.replace("0.98765", "")
    summary = tmp_path / "summary.json"
    summary.write_text(json.dumps({"classifier_val_map": 0.91, "miou": 0.61,
                                   "best_threshold_miou": 0.585}))  # fmt: skip
    out = script("check_readme.py", "demo", str(summary), *args, cwd=tmp_path, cache=tmp_path)
    assert "demo: 0 problems" in out
    summary.write_text(json.dumps({"classifier_val_map": 0.90, "miou": 0.65,
                                   "best_threshold_miou": 0.59}))  # fmt: skip
    proc = subprocess.run([sys.executable, str(SCRIPTS / "check_readme.py"), "demo", str(summary),
                           *args], capture_output=True, text=True)  # fmt: skip
    assert proc.returncode == 1 and "miou: the README says 0.6, the demo gave 0.6500" in proc.stdout
    assert "classifier_val_map" not in proc.stdout


@pytest.mark.slow  # a classifier trained and every fit photo pooled: about a minute
def test_diagnose_recam(voc_root, tmp_path):
    """Each head's figures come out, and the CAM row is CAM's maps (wsss's own
    class_activation_maps, upsampled and normalised here) swept on the tune photos' truth."""
    import numpy as np
    import torch
    import torch.nn.functional as F
    from commands import run

    from wsss.cams.engines import class_activation_maps
    from wsss.cli.config import compose_config
    from wsss.data import load_image
    from wsss.metrics.segmentation import ThresholdSweep
    from wsss.models import load_checkpoint

    sys.path.insert(0, str(SCRIPTS))
    from bench_voc import dataset_overrides, write_lists

    lists = write_lists(voc_root, tmp_path, 24)
    data = dataset_overrides(voc_root, lists)
    run("wsss.train", *data, "train_split=fit", "val_split=null", "model=smallcnn",
        "model.backbone_kwargs.width=8", "train.epochs=1", "train.batch_size=8",
        "train.crop_size=48", f"hydra.run.dir={tmp_path / 'train'}", cwd=tmp_path,
        cache=tmp_path / "cache")  # fmt: skip
    checkpoint = tmp_path / "train" / "checkpoint.pt"
    out = script("diagnose_recam.py", "--checkpoint", str(checkpoint), "--lists",
                 str(tmp_path / "lists"), "--root", str(voc_root), "--json",
                 str(tmp_path / "d.json"), cwd=tmp_path, cache=tmp_path / "cache")  # fmt: skip
    figures = json.loads((tmp_path / "d.json").read_text())["figures"]
    assert set(figures["maps"]) == {"cam", "adamw", "sgd", "sgd_x10"}
    assert set(figures["heads"]) == {"adamw", "sgd", "sgd_x10"}
    assert figures["steps"] == 4 * (figures["fit_photos"] // 16)
    for head in figures["heads"].values():
        assert 0 <= head["accuracy"] <= 1 and 0 <= head["both_negative_share"] <= 1
    model = load_checkpoint(checkpoint).model.eval()
    tune = compose_config("generate_masks", data).dataset.load("tune")
    sweep = ThresholdSweep(len(tune.class_names) + 1)
    for sample in tune.samples:
        image = load_image(sample.image_path)
        x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
        maps = class_activation_maps(model, x, [list(sample.labels)])[0]
        maps = F.interpolate(maps[None], size=image.shape[:2], mode="bilinear")[0]
        maps = maps / (maps.amax(dim=(1, 2), keepdim=True) + 1e-5)
        sweep.update(maps.numpy(), list(sample.labels), tune.ground_truth(sample))
    assert figures["maps"]["cam"]["best_miou"] == pytest.approx(round(sweep.best[1], 4))
    assert f"cam: tune mIoU swept on GT {sweep.best[1]:.4f}" in out
    assert np.isfinite(figures["heads"]["adamw"]["norm"])


def test_diagnose_recam_heads_learn_and_the_sign_share_is_counted():
    import torch

    sys.path.insert(0, str(SCRIPTS))
    from diagnose_recam import negative_share, train_head

    torch.manual_seed(0)
    classes = torch.arange(3).repeat(40)  # three classes, one pair per photo, separable
    pairs = torch.rand(120, 6) * 0.1
    pairs[torch.arange(120), classes] += 1.0
    photos = torch.arange(120)
    for name in ("adamw", "sgd_x10"):
        u, accuracy = train_head(pairs, classes, photos, 3, name, 200, 0.0, lr=3e-2)
        assert accuracy == 1.0 and u.shape == (3, 6), name
    u = torch.tensor([[1.0, -2.0, -1.0, 0.5]])
    w = torch.tensor([[2.0, -1.0, 1.0, -0.5]])
    # positive products 2 and 2 (the second from two negatives); -1 and -0.25 are not mass
    assert negative_share(u * w, u, w) == pytest.approx(0.5)


def test_bench_voc_only_keeps_the_named_runs_and_the_preset():
    from argparse import Namespace

    sys.path.insert(0, str(SCRIPTS))
    from bench_voc import mask_runs

    args = Namespace(par=False, row=["mine=crf=none"], lever=["sp=refine=superpixels"],
                     only=["seed", "sp"])  # fmt: skip
    runs, levers = mask_runs(args)
    assert list(runs) == ["preset", "seed", "lever_sp"] and list(levers) == ["lever_sp"]
    assert runs["lever_sp"] == ["refine=superpixels", "split=tune"]
    with pytest.raises(SystemExit, match="--only nope: no such mask run"):
        mask_runs(Namespace(par=False, row=[], lever=[], only=["nope"]))


def test_bench_voc_merges_a_lever_with_a_row_only_when_its_masks_would_be_the_same():
    """A lever equal to the preset but for the photos it labels is the preset; one that changes
    the classifier (checkpoint=, model=) is a run of its own, whatever its CAM and CRF."""
    sys.path.insert(0, str(SCRIPTS))
    from bench_voc import run_key

    from wsss.cli.config import compose_config

    def key(*overrides):
        return run_key(compose_config("generate_masks", ["preset=photos", *overrides]))

    assert key("split=all") == key("split=tune")
    assert key("split=tune", "checkpoint=other.pt") != key("split=all")
    assert key("split=tune", "model=efficientnet_lite2") != key("split=all")
    assert key("split=tune", "crf.high_threshold=0.35") != key("split=all")
