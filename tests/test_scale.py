"""Scale: a run killed with SIGKILL resumes to the same outputs, and torchrun with 2 CPU
processes (gloo) gives what one process gives, for generation and for training."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from commands import TINY, run
from PIL import Image

from wsss.data import load_split
from wsss.engine.training import TrainSettings, predict_scores
from wsss.metrics import average_precision
from wsss.models import load_checkpoint

# A bigger eval split than the other CLI tests, so a run lasts long enough to be killed midway.
DATA = [o.replace("num_eval=6", "num_eval=60") for o in TINY if o.startswith("dataset.")]
GENERATE = [*DATA, "cam.scales=[1.0,0.5,1.5]", "batch_size=1", "export.overlays=4"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("scale")
    cache = root / "cache"
    run("wsss.train", *TINY, f"hydra.run.dir={root / 'train'}", cwd=root, cache=cache)
    return root / "train" / "checkpoint.pt", cache


def _outputs(folder: Path) -> dict:
    """Everything a run produced, minus timings."""
    masks = {p.name: np.asarray(Image.open(p)).tobytes() for p in (folder / "masks").glob("*.png")}
    metrics = json.loads((folder / "metrics.json").read_text())
    metrics.pop("seconds")
    return {
        "masks": masks,
        "annotations": json.loads((folder / "annotations.json").read_text()),
        "metrics": metrics,
        "overlays": sorted(p.name for p in (folder / "overlays").glob("*.png")),
    }


def _torchrun(module: str, *args: str, cwd: Path, cache: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "WSSS_CACHE": str(cache), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
               "--standalone", "-m", module, *args]  # fmt: skip
    proc = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def test_a_killed_run_resumes_to_the_outputs_of_an_uninterrupted_one(checkpoint, tmp_path):
    path, cache = checkpoint
    args = [*GENERATE, f"checkpoint={path}"]
    clean = tmp_path / "clean"
    run("wsss.generate_masks", *args, f"hydra.run.dir={clean}", cwd=tmp_path, cache=cache)

    resumed = tmp_path / "resumed"
    command = [sys.executable, "-m", "wsss.generate_masks", *args, f"hydra.run.dir={resumed}"]
    env = {**os.environ, "WSSS_CACHE": str(cache)}
    proc = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    records = resumed / "records"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list(records.glob("*.json"))) < 10:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len(list(records.glob("*.json")))
    assert 10 <= done < 60, f"the kill must land midway ({done} of 60 images done)"
    assert not (resumed / "annotations.json").exists()

    out = run("wsss.generate_masks", *args, f"hydra.run.dir={resumed}", cwd=tmp_path, cache=cache)
    assert f"resuming: {done} of 60 images already done" in out.stdout + out.stderr
    assert not list(resumed.rglob(".*.tmp")), "partial files of the killed run are removed"
    assert _outputs(resumed) == _outputs(clean)


def test_killed_anywhere_then_resumed_gives_the_outputs_of_an_uninterrupted_run(
    checkpoint, tmp_path
):
    """SIGKILL to the whole job (CRF workers included) at seeded random points across the run,
    and once more while the records are merged; the final rerun reproduces the clean run."""
    path, cache = checkpoint
    args = [*GENERATE, f"checkpoint={path}", "crf=dense", "crf.workers=2"]
    start = time.monotonic()
    clean = tmp_path / "clean"
    run("wsss.generate_masks", *args, f"hydra.run.dir={clean}", cwd=tmp_path, cache=cache)
    duration = time.monotonic() - start
    folder = tmp_path / "killed"
    command = [sys.executable, "-m", "wsss.generate_masks", *args, f"hydra.run.dir={folder}"]
    env = {**os.environ, "WSSS_CACHE": str(cache)}

    def start_job() -> subprocess.Popen:
        return subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip

    def kill(job: subprocess.Popen) -> None:
        with contextlib.suppress(ProcessLookupError):  # it may have finished already
            os.killpg(job.pid, signal.SIGKILL)
        job.wait()

    rng = np.random.default_rng(7)
    for fraction in sorted(rng.uniform(0.15, 0.85, 3)):
        job = start_job()
        time.sleep(fraction * duration)
        kill(job)
    job = start_job()  # this one is killed once every image has its record: in the merge
    while job.poll() is None and len(list((folder / "records").glob("*.json"))) < 60:
        time.sleep(0.005)
    kill(job)
    run("wsss.generate_masks", *args, f"hydra.run.dir={folder}", cwd=tmp_path, cache=cache)
    assert not list(folder.rglob(".*.tmp"))
    assert _outputs(folder) == _outputs(clean)


def test_resuming_with_other_settings_is_refused(checkpoint, tmp_path):
    path, cache = checkpoint
    args = [*GENERATE, f"checkpoint={path}", f"hydra.run.dir={tmp_path / 'run'}"]
    run("wsss.generate_masks", *args, cwd=tmp_path, cache=cache)
    record = (tmp_path / "run" / ".hydra" / "config.yaml").read_text()
    assert "bg_threshold: 0.15" in record
    proc = run("wsss.generate_masks", *args, "mask.bg_threshold=0.3", cwd=tmp_path, cache=cache,
               expect=2)  # fmt: skip
    assert "other settings (settings.mask.bg_threshold: 0.15 -> 0.3)" in proc.stderr
    assert (tmp_path / "run" / ".hydra" / "config.yaml").read_text() == record, "left alone"
    overrides = (tmp_path / "run" / ".hydra" / "overrides.yaml").read_text()
    assert "bg_threshold" not in overrides


def test_torchrun_generation_equals_one_process(checkpoint, tmp_path):
    path, cache = checkpoint
    args = [*GENERATE, f"checkpoint={path}"]
    single = tmp_path / "single"
    run("wsss.generate_masks", *args, f"hydra.run.dir={single}", cwd=tmp_path, cache=cache)
    sharded = tmp_path / "sharded"
    proc = _torchrun("wsss.generate_masks", *args, f"hydra.run.dir={sharded}", cwd=tmp_path,
                     cache=cache)  # fmt: skip
    assert proc.stdout.count("wsss generate_masks summary") == 1, "rank 0 reports, once"
    one, two = _outputs(single), _outputs(sharded)
    # What README's "Determinism" promises: the same masks, COCO geometry and metrics; the
    # annotation scores (means of float maps) to 1e-5, as the ranks run on 1 thread each and
    # float32 sums depend on the thread count.
    assert two["masks"] == one["masks"] and two["metrics"] == one["metrics"]
    assert _without_scores(two["annotations"]) == _without_scores(one["annotations"])
    assert _scores(two["annotations"]) == pytest.approx(_scores(one["annotations"]), abs=1e-5)


def _without_scores(coco: dict) -> dict:
    return {**coco, "annotations": [{**a, "score": None} for a in coco["annotations"]]}


def _scores(coco: dict) -> list[float]:
    return [a["score"] for a in coco["annotations"]]


def test_maps_and_masks_across_thread_counts(checkpoint, tiny_dataset):
    """One process, 1 thread against 2: masks identical, maps to 1e-5 (README, Determinism)."""
    from wsss.cams import ClassifierCam
    from wsss.data import load_image
    from wsss.masks import MaskPredictor

    path, _ = checkpoint
    predictor = MaskPredictor(load_checkpoint(path).model, ClassifierCam(scales=[1.0, 0.5, 1.5]))
    samples = load_split(tiny_dataset, "eval.csv").samples
    images = [load_image(s.image_path) for s in samples]
    found = {}
    threads = torch.get_num_threads()
    try:
        for count in (1, 2):
            torch.set_num_threads(count)
            found[count] = predictor.predict_batch(images, [s.labels for s in samples])
    finally:
        torch.set_num_threads(threads)
    for one, two in zip(found[1], found[2], strict=True):
        assert np.array_equal(one.label_map, two.label_map)
        assert np.abs(one.maps - two.maps).max() < 1e-5


def test_torchrun_needs_one_run_folder(checkpoint, tmp_path):
    path, cache = checkpoint
    env = {**os.environ, "WSSS_CACHE": str(cache), "OMP_NUM_THREADS": "1"}
    # each rank gets its own folder: the ranks must refuse to write to different places
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
               "--standalone", "-m", "wsss.generate_masks", *GENERATE, f"checkpoint={path}",
               "hydra.run.dir=out_${oc.env:RANK}"]  # fmt: skip
    proc = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)  # fmt: skip
    assert proc.returncode != 0
    assert "pass hydra.run.dir=<folder>" in proc.stderr


def test_torchrun_training_is_data_parallel_and_saves_once(checkpoint, tmp_path):
    _, cache = checkpoint
    out = tmp_path / "ddp"
    proc = _torchrun("wsss.train", *TINY, f"hydra.run.dir={out}", cwd=tmp_path, cache=cache)
    assert proc.stdout.count("validation mAP") == 1
    metrics = json.loads((out / "train_metrics.json").read_text())
    # The reported mAP is over the whole val split, gathered from both ranks: recompute it.
    classifier = load_checkpoint(out / "checkpoint.pt")
    dataset = next((cache / "datasets").glob("synthetic-v1-24-6-48-*"))
    val = load_split(dataset, "eval.csv")
    scores, targets = predict_scores(classifier.model, val, TrainSettings(crop_size=48), "cpu")
    assert average_precision(scores, targets).mean == pytest.approx(metrics["val_map"], abs=1e-6)


def test_mixed_precision_trains_and_maps_agree_with_float32(tiny_dataset):
    """amp=true on the CPU (bfloat16 autocast): training runs, and the maps stay close to the
    float32 ones (CUDA float16 takes the same code path with a loss scaler)."""
    from wsss.cams import ClassifierCam
    from wsss.data import load_image
    from wsss.engine.training import train_classifier
    from wsss.masks import MaskPredictor
    from wsss.models import ModelSpec, create_classifier

    split = load_split(tiny_dataset, "train.csv")
    model = create_classifier(ModelSpec("smallcnn", backbone_kwargs={"width": 8}), 6)
    settings = TrainSettings(epochs=1, batch_size=8, crop_size=64)
    metrics = train_classifier(model, split, None, settings, amp=True)
    assert np.isfinite(metrics["train_loss"])
    samples = load_split(tiny_dataset, "eval.csv").samples[:4]
    maps = {}
    for amp in (False, True):
        predictor = MaskPredictor(model, ClassifierCam(scales=[1.0], flip=False), amp=amp)
        images = [load_image(s.image_path) for s in samples]
        maps[amp] = [p.maps for p in predictor.predict_batch(images, [s.labels for s in samples])]
    for exact, mixed in zip(maps[False], maps[True], strict=True):
        assert np.abs(exact - mixed).max() < 0.05


def test_an_interrupted_training_resumes_to_the_weights_of_an_uninterrupted_one(
    tiny_dataset, tmp_path, monkeypatch
):
    """Each finished epoch is saved; a training stopped in its third epoch (Ctrl-C) and run
    again continues after the second, to the very weights of three epochs in one go."""
    import wsss.engine.training as training
    from wsss.models import ModelSpec, create_classifier

    split = load_split(tiny_dataset, "train.csv")
    settings = TrainSettings(epochs=3, batch_size=8, crop_size=48)

    def trained(state=None, stop_in=None):
        torch.manual_seed(0)
        model = create_classifier(ModelSpec("smallcnn", backbone_kwargs={"width": 8}), 6)
        real, calls = training._train_epoch, []

        def epoch(*args):
            calls.append(1)
            if len(calls) == stop_in:
                raise KeyboardInterrupt
            return real(*args)

        monkeypatch.setattr(training, "_train_epoch", epoch)
        metrics = training.train_classifier(
            model, split, None, settings, seed=3, state_path=state, state_key="k"
        )
        return model, metrics, len(calls)

    straight, straight_metrics, _ = trained()
    state = tmp_path / "training_state.pt"
    with pytest.raises(KeyboardInterrupt):
        trained(state, stop_in=3)
    assert torch.load(state, weights_only=True)["epoch"] == 2
    resumed, metrics, epochs_run = trained(state)
    assert epochs_run == 1, "only the third epoch ran again"
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values(),
                            strict=True):  # fmt: skip
        assert torch.equal(a, b), name
    assert metrics["train_loss"] == straight_metrics["train_loss"]
    monkeypatch.undo()
    torch.save({"key": "other"}, state)
    assert training.train_classifier(
        create_classifier(ModelSpec("smallcnn", backbone_kwargs={"width": 8}), 6), split, None,
        TrainSettings(epochs=1, batch_size=8, crop_size=48), state_path=state, state_key="k",
    )["epoch"] == 1  # fmt: skip


def test_an_interrupted_segmentation_training_resumes_to_the_weights_of_an_uninterrupted_one(
    tiny_dataset, tmp_path
):
    """The segmentation model's training saves each finished epoch too: stopped in its third
    epoch and run again, it continues after the second, to the weights of one straight run."""
    from wsss.engine.segmentation import SegmentationSettings, train_segmentation
    from wsss.models.segmentation import build_segmentation_model

    split = load_split(tiny_dataset, "eval.csv")
    samples = list(split.samples)
    settings = SegmentationSettings(epochs=3, batch_size=4, crop_size=32)
    per_epoch = len(samples) // 4 * 4  # drop_last: the images one epoch reads

    def trained(state=None, stop_after=None):
        torch.manual_seed(0)
        model = build_segmentation_model(settings.model, len(split.class_names) + 1, None)
        read = []

        def targets(sample, size):
            read.append(sample.image_id)
            if stop_after is not None and len(read) > stop_after:
                raise KeyboardInterrupt
            return split.ground_truth(sample, size)

        history = train_segmentation(model, samples, targets, settings, seed=3,
                                     state_path=state, state_key="k")  # fmt: skip
        return model, history, len(read)

    straight, history, _ = trained()
    state = tmp_path / "training_state.pt"
    with pytest.raises(KeyboardInterrupt):
        trained(state, stop_after=2 * per_epoch + 1)
    assert torch.load(state, weights_only=True)["epoch"] == 2
    resumed, resumed_history, reads = trained(state)
    assert reads == per_epoch, "only the third epoch ran again"
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values(),
                            strict=True):  # fmt: skip
        assert torch.equal(a, b), name
    assert resumed_history["train_loss"] == history["train_loss"]


def test_ctrl_c_during_training_says_how_to_resume_without_a_traceback(tmp_path):
    cache = tmp_path / "cache"
    out = tmp_path / "run"
    args = [sys.executable, "-m", "wsss.train", *TINY, "train.epochs=40", f"hydra.run.dir={out}"]
    env = {**os.environ, "WSSS_CACHE": str(cache)}
    proc = subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.time() + 300
    while not (out / "training_state.pt").is_file() and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr[-2000:]
    assert "interrupted; finished work is kept" in stderr and "Traceback" not in stderr
    saved = torch.load(out / "training_state.pt", weights_only=True)["epoch"]
    again = run("wsss.train", *TINY, "train.epochs=40", f"hydra.run.dir={out}", cwd=tmp_path,
                cache=cache)  # fmt: skip
    assert f"resuming training after epoch {saved} of 40" in again.stdout + again.stderr
    assert not (out / "training_state.pt").exists() and (out / "checkpoint.pt").is_file()


def test_a_command_leaves_the_process_group_even_when_it_fails(tmp_path, monkeypatch):
    """A process that exits with gloo's group still up aborts now and then at interpreter
    teardown; every command destroys the group on its way out, an error included."""
    import torch.distributed as dist

    from wsss.cli.train import main

    store = dist.FileStore(str(tmp_path / "store"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["wsss.train", "train.epochs=0", "hydra.run.dir=run"])
    with pytest.raises(SystemExit) as exit_:
        main()
    assert exit_.value.code == 2
    assert not dist.is_initialized()
