"""Inputs and faults that are well formed but hostile: each ends in a clear message or a recorded
skip, never a crash after the work, a machine out of memory, or half-written results."""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import socket
import stat
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from commands import run
from PIL import Image

from wsss.cams import ClassifierCam
from wsss.data import load_split
from wsss.data.screen import BadImages
from wsss.engine.generation import generate_pseudo_masks
from wsss.engine.run_folder import RunFolder
from wsss.engine.run_lock import RunLock
from wsss.errors import ConfigError, DataError, DiskFullError
from wsss.export import ExportSettings
from wsss.masks import MaskPredictor
from wsss.models import ModelSpec, create_classifier, save_checkpoint


@pytest.fixture
def model():
    torch.manual_seed(0)
    return create_classifier(ModelSpec("smallcnn", None, {"width": 4}), 6).eval()


@pytest.fixture
def data(tiny_dataset, tmp_path) -> Path:
    """A writable copy of the tiny dataset, eval split cut to 6 images."""
    root = tmp_path / "data"
    shutil.copytree(tiny_dataset, root)
    lines = (root / "eval.csv").read_text().splitlines()
    (root / "eval.csv").write_text("\n".join(lines[:7]) + "\n")
    return root


def _generate(model, root: Path, out: Path, policy: str = "error", **export):
    split = load_split(root, "eval.csv")
    predictor = MaskPredictor(model, ClassifierCam(scales=[1.0]))
    return generate_pseudo_masks(
        predictor, split, out, ExportSettings(overlays=2, **export), bad=BadImages(policy)
    )


def _files(folder: Path) -> dict[str, bytes]:
    """Every output file's bytes (timings dropped, and the folder's own name, which the review
    page shows, replaced), by path relative to the run folder."""
    files = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.name != ".lock":
            data = path.read_bytes()
            if path.name in ("metrics.json", "summary.json"):
                metrics = json.loads(data)
                metrics.pop("seconds")
                data = json.dumps(metrics).encode()
            data = data.replace(str(folder).encode(), b"<run folder>")
            if path.name == "report_data.js":
                name = b'"run": ' + json.dumps(folder.name).encode()
                data = data.replace(name, b'"run": "<run>"', 1)
            if path.name == "report.html":
                for context in (b"review: %s<", b"Pseudo-masks of %s<"):
                    data = data.replace(context % folder.name.encode(), context % b"<run>")
                data = re.sub(rb"<th>total time</th><td>[0-9.]+ s</td>", b"", data)
            files[path.relative_to(folder).as_posix()] = data
    return files


# --------------------------------------------------------------------------------------------
# Outputs others can read


@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_outputs_get_the_permissions_the_umask_gives(model, data, tmp_path, umask):
    previous = os.umask(umask)
    try:
        out = tmp_path / "run"
        _generate(model, data, out, save_cams=True)
        save_checkpoint(out / "checkpoint.pt", model, ModelSpec(), ["a"] * 6)
    finally:
        os.umask(previous)
    written = [p for p in out.rglob("*") if p.name != ".lock"]
    assert any(p.suffix == ".npz" for p in written) and (out / "checkpoint.pt") in written
    for path in written:
        expected = (0o777 if path.is_dir() else 0o666) & ~umask
        assert stat.S_IMODE(path.stat().st_mode) == expected, path


# --------------------------------------------------------------------------------------------
# Decompression bombs and absurd sizes


def _png_header(path: Path, width: int, height: int) -> None:
    """A tiny PNG file whose header claims ``width`` x ``height`` pixels."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        body = kind + payload
        return struct.pack(">I", len(payload)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 16)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize(
    ("size", "message"),
    [
        ((100_000, 100_000), "too large to decode safely"),  # past Pillow's error limit
        ((10_000, 10_000), "100 megapixels"),  # between Pillow's warning and error limits
    ],
)
def test_a_decompression_bomb_is_refused_or_skipped_before_decoding(
    model, data, tmp_path, size, message
):
    victim = data / "images" / "eval_00002.png"
    _png_header(victim, *size)
    with pytest.raises(DataError, match=message) as info:
        _generate(model, data, tmp_path / "error")
    assert str(victim) in str(info.value)
    result = _generate(model, data, tmp_path / "skip", policy="skip")
    assert len(result.skipped) == 1 and result.num_images == 5
    skipped = json.loads((tmp_path / "skip" / "skipped.json").read_text())
    assert skipped[0]["file"] == str(victim)


def test_the_cli_names_the_bomb_even_when_skipping(data, tmp_path):
    _png_header(data / "images" / "eval_00001.png", 100_000, 100_000)
    args = ["dataset=folder", f"dataset.root={data}", "model.backbone_kwargs.width=4",
            "train.epochs=1", "train.crop_size=64", "cam.scales=[1.0]"]  # fmt: skip
    proc = run("wsss.generate_masks", *args, f"hydra.run.dir={tmp_path / 'e'}", cwd=tmp_path,
               cache=tmp_path / "cache", expect=2)  # fmt: skip
    assert "eval_00001.png: the image is too large" in proc.stderr
    assert "Traceback" not in proc.stderr


# --------------------------------------------------------------------------------------------
# A full disk


def test_a_full_disk_stops_cleanly_and_a_rerun_resumes(model, data, tmp_path, monkeypatch):
    clean = tmp_path / "clean"
    _generate(model, data, clean)
    save = Image.Image.save
    calls = []

    def full_disk(self, fp, *args, **kwargs):  # the 4th PNG fails half written
        calls.append(fp)
        if len(calls) == 4:
            Path(fp).write_bytes(b"\x89PNG half")
            raise OSError(errno.ENOSPC, "No space left on device")
        return save(self, fp, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", full_disk)
    out = tmp_path / "run"
    with pytest.raises(DiskFullError, match="No space left.*rerun the same command"):
        _generate(model, data, out)
    assert not list(out.rglob("*.tmp")), "the partial file is removed"
    for png in (out / "masks").glob("*.png"):
        Image.open(png).load()  # every file under a final name is complete
    monkeypatch.setattr(Image.Image, "save", save)
    _generate(model, data, out)
    assert _files(out) == _files(clean)


# --------------------------------------------------------------------------------------------
# Two runs in one folder


def test_a_live_run_holds_its_folder(model, data, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        owner = {"host": socket.gethostname(), "pid": sleeper.pid, "started": "now"}
        (out / ".lock").write_text(json.dumps(owner))
        with pytest.raises(ConfigError, match=rf"in use by another run \(pid {sleeper.pid}"):
            _generate(model, data, out)
        assert not (out / "run.json").exists(), "the refused run wrote nothing"
    finally:
        sleeper.kill()
        sleeper.wait()
    # Its owner gone, the lock is stale and the next run takes the folder over.
    result = _generate(model, data, out)
    assert result.num_images == 6 and not (out / ".lock").exists()


def test_locks_of_other_hosts_go_stale_when_not_refreshed(tmp_path):
    lock_path = tmp_path / ".lock"
    lock_path.write_text(json.dumps({"host": "elsewhere", "pid": 1, "started": "then"}))
    with pytest.raises(ConfigError, match="in use by another run"):
        RunLock(tmp_path, stale_after=60).acquire()
    old = lock_path.stat().st_mtime - 120
    os.utime(lock_path, (old, old))
    with RunLock(tmp_path, stale_after=60) as lock:
        assert json.loads(lock_path.read_text())["pid"] == os.getpid() and lock.held
    assert not lock_path.exists()


def test_two_runs_started_together_cannot_both_write(tiny_dataset, tmp_path):
    """Two processes race for one folder with different settings: one runs, one is refused."""
    checkpoint = tmp_path / "model.pt"
    torch.manual_seed(0)
    model = create_classifier(ModelSpec("smallcnn", None, {"width": 4}), 6)
    save_checkpoint(checkpoint, model, ModelSpec("smallcnn", None, {"width": 4}),
                    load_split(tiny_dataset, "eval.csv").class_names)  # fmt: skip
    env = {**os.environ, "WSSS_CACHE": str(tmp_path / "cache")}
    command = [sys.executable, "-m", "wsss.generate_masks", "dataset=folder",
               f"dataset.root={tiny_dataset}", f"checkpoint={checkpoint}", "batch_size=1",
               f"hydra.run.dir={tmp_path / 'shared'}"]  # fmt: skip
    procs = [
        subprocess.Popen([*command, f"mask.bg_threshold={t}"], env=env, cwd=tmp_path,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for t in (0.1, 0.3)
    ]  # fmt: skip
    outcomes = [(p.wait(timeout=600), p.stderr.read()) for p in procs]
    assert sorted(code for code, _ in outcomes) == [0, 2]
    refused = next(err for code, err in outcomes if code == 2)
    assert "in use by another run" in refused or "other settings" in refused


# --------------------------------------------------------------------------------------------
# A corrupt record or cached map left by an old crash


def test_damaged_records_and_maps_are_redone_not_trusted(model, data, tmp_path, caplog):
    clean, out = tmp_path / "clean", tmp_path / "run"
    _generate(model, data, clean, save_cams=True)
    _generate(model, data, out, save_cams=True)
    (out / "records" / "eval_00000.json").write_text('{"image": {"id"')  # truncated JSON
    cams = out / "cams" / "eval_00001.npz"
    cams.write_bytes(cams.read_bytes()[:40])  # truncated archive
    (out / "masks" / "eval_00002.png").unlink()  # a record vouching for a missing mask
    (out / "annotations.json").unlink()
    with caplog.at_level("WARNING"):
        _generate(model, data, out, save_cams=True)
    assert "3 damaged records found and redone" in caplog.text
    assert _files(out) == _files(clean)


# --------------------------------------------------------------------------------------------
# A run that stopped on bad input does not block its own fix


def test_a_run_with_no_finished_image_does_not_hold_its_folder(model, data, tmp_path):
    (data / "images" / "eval_00000.png").write_bytes(b"")
    out = tmp_path / "run"
    with pytest.raises(DataError, match="empty"):
        _generate(model, data, out)
    # The fix: other settings (skip the image), same folder.
    result = _generate(model, data, out, policy="skip", polygons=True)
    assert result.num_images == 5 and len(result.skipped) == 1


# --------------------------------------------------------------------------------------------
# Degenerate images, symlinks, names


def test_degenerate_images_are_counted_not_silently_empty(model, tmp_path, caplog):
    root = tmp_path / "data"
    (root / "images").mkdir(parents=True)
    Image.new("RGB", (1, 1), (200, 10, 10)).save(root / "images" / "dot.png")
    Image.new("RGB", (10000, 10), (10, 200, 10)).save(root / "images" / "line.png")
    (root / "classes.txt").write_text("\n".join(f"c{i}" for i in range(6)) + "\n")
    (root / "eval.csv").write_text("file,labels\ndot.png,c1\nline.png,c2\n")
    with torch.no_grad():  # no evidence for c1 or c2 anywhere (features >= 0): empty maps
        model.get_classifier().weight[1:3] = -1.0
    with caplog.at_level("WARNING"):
        result = _generate(model, root, tmp_path / "run")
    assert result.num_images == 2 and result.empty_masks == 2
    assert "dot.png (1x1): labelled ['c1'], but its mask holds none of them" in caplog.text
    record = RunFolder(tmp_path / "run").read_record("line")
    assert record.empty_mask is True and record.image["width"] == 10000


def test_symlinked_images_are_followed_and_named_by_the_link(model, data, tmp_path):
    """Curating a subset by links is what dataset users do: a link inside images/ (to a file or
    a folder anywhere) is read as the file it points to, and its outputs take the link's name."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.move(data / "images" / "eval_00003.png", elsewhere / "photo.png")
    (data / "images" / "eval_00003.png").symlink_to(elsewhere / "photo.png")
    (data / "images" / "linked").symlink_to(elsewhere, target_is_directory=True)
    (data / "masks" / "linked").mkdir()
    shutil.copy(data / "masks" / "eval_00003.png", data / "masks" / "linked" / "photo.png")
    row = next(r for r in (data / "eval.csv").read_text().splitlines() if "eval_00003" in r)
    with (data / "eval.csv").open("a") as f:
        f.write(row.replace("eval_00003.png", "linked/photo.png") + "\n")
    out = tmp_path / "run"
    result = _generate(model, data, out)
    assert result.num_images == 7
    first = np.asarray(Image.open(out / "masks" / "eval_00003.png"))
    assert np.array_equal(first, np.asarray(Image.open(out / "masks" / "linked" / "photo.png")))
    assert not (out / "masks" / "photo.png").exists() and not (elsewhere / "masks").exists()


def test_names_with_spaces_and_non_ascii_letters_work(model, data, tmp_path):
    for old, new in (("eval_00000.png", "ma photo été.png"), ("eval_00001.png", "写真 1.png")):
        (data / "images" / old).rename(data / "images" / new)
        (data / "masks" / old).rename(data / "masks" / new)
        text = (data / "eval.csv").read_text(encoding="utf-8").replace(old, f'"{new}"')
        (data / "eval.csv").write_text(text, encoding="utf-8")
    out = tmp_path / "run"
    _generate(model, data, out)
    assert (out / "masks" / "ma photo été.png").is_file() and (
        out / "masks" / "写真 1.png"
    ).is_file()
    coco = json.loads((out / "annotations.json").read_text(encoding="utf-8"))
    assert coco["images"][1]["file_name"] == "写真 1.png"


# --------------------------------------------------------------------------------------------
# Labels files as spreadsheets save them


def test_labels_files_with_a_byte_order_mark_crlf_and_quotes(data):
    text = (data / "eval.csv").read_text()
    rows = text.splitlines()
    rows[1] = rows[1].replace(",", ',"', 1) + '"'  # a quoted labels field
    (data / "eval.csv").write_bytes(("\r\n".join(rows) + "\r\n").encode("utf-8-sig"))
    classes = (data / "classes.txt").read_text()
    (data / "classes.txt").write_bytes(classes.encode("utf-8-sig"))
    split = load_split(data, "eval.csv")
    assert split.class_names[0] == "disc" and len(split) == 6
    assert split.samples[0].labels


def test_labels_are_read_as_utf8_whatever_the_locale(data, tmp_path):
    (data / "images" / "eval_00000.png").rename(data / "images" / "café.png")
    (data / "masks" / "eval_00000.png").rename(data / "masks" / "café.png")
    text = (data / "eval.csv").read_text(encoding="utf-8").replace("eval_00000", "café")
    (data / "eval.csv").write_bytes(text.encode("utf-8-sig"))
    script = (
        "import locale, sys; from wsss.data import load_split; "
        f"s = load_split({str(data)!r}, 'eval.csv'); "
        "print(locale.getpreferredencoding(False), s.samples[0].file_name.encode())"
    )
    env = {**os.environ, "LC_ALL": "C", "LANG": "C"}
    proc = subprocess.run([sys.executable, "-X", "utf8=0", "-c", script], env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    encoding, name = proc.stdout.split(" ", 1)
    assert encoding.lower() in ("ansi_x3.4-1968", "ascii", "us-ascii"), "a non-UTF-8 locale"
    assert name.strip() == repr("café.png".encode())


def test_a_file_size_limit_is_a_clear_error_leaving_nothing_half_written(tmp_path):
    """``ulimit -f``: the write that hits it fails with an error naming the file (torch's own
    writer would raise an opaque RuntimeError), and nothing half written stays behind."""
    import resource
    import subprocess
    import sys

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (30_000, 30_000))

    env = {**os.environ, "WSSS_CACHE": str(tmp_path / "cache")}
    args = [sys.executable, "-m", "wsss.generate_masks", "dataset.num_train=24",
            "dataset.num_eval=6", "dataset.image_size=48", "model.backbone_kwargs.width=8",
            "train.epochs=1", f"hydra.run.dir={tmp_path / 'run'}"]  # fmt: skip
    proc = subprocess.run(args, preexec_fn=limit, capture_output=True, text=True, env=env)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "checkpoint.pt: file too large for this system's limit on file size" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not list((tmp_path / "cache").rglob("checkpoint.pt"))
    assert not list(tmp_path.rglob(".*.tmp"))
