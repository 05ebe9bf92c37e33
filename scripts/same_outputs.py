"""Do two versions of wsss write the same files? Runs every command with both and compares.

A refactoring must not change what users get. This script checks out ``--baseline`` (a git
revision) as a worktree beside the current tree, runs the same commands with each (the same
virtual environment and wsss cache, ``PYTHONPATH`` pointing at each tree), and compares every
file the commands wrote:

* PNG, JPEG, JS, HTML, YAML and everything else byte for byte (HTML without its "total time"
  row);
* JSON after removing what a run cannot repeat (wall-clock seconds, and its own folder's path);
* ``.npz`` maps array by array (the zip container stamps the write time), ``.pt`` checkpoints
  tensor by tensor (torch names the archive after the temporary file it wrote);
* logs and Hydra's runtime file (times, process ids) are not compared.

The commands: on the synthetic demo (its eval split, 200 images, the cached demo classifier):
the demo itself, the CRF with saved maps, PAR, IRN (boundary network trained on the CRF run's
seeds, one epoch), ``evaluate``, ``export`` after a review, ``explain``; on a tiny synthetic set
``train`` and ``train_segmentation``; and, with ``--voc-checkpoint``, the first 20 photos of
VOC 2012 train through the defaults, the CRF, PAR and IRN.

    python scripts/same_outputs.py --baseline 19d8324
    python scripts/same_outputs.py --baseline 19d8324 --voc-checkpoint runs/voc/train/checkpoint.pt

Prints one line per file that differs and exits 1 if any does; ``--tiny`` shrinks the synthetic
runs for the test suite.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
from _results import save_result  # scripts/, beside this file

REPO = Path(__file__).resolve().parent.parent
DEFAULT_VOC = REPO.parent / "shared" / "voc2012"
#: JSON keys whose values are wall-clock times or machine facts: never compared
VOLATILE_KEYS = {
    "seconds",
    "seconds_per_epoch",
    "validation_seconds",
    "started",
    "timings",
    "trained_in_this_run",
}  # the last: whether the shared cache had the classifier
#: files a run writes that hold times or process ids
SKIPPED_NAMES = {"hydra.yaml"}
SKIPPED_SUFFIXES = {".log"}
TINY = [
    "dataset.num_train=24",
    "dataset.num_eval=6",
    "dataset.image_size=48",
    "model.backbone_kwargs.width=8",
    "train.batch_size=8",
]


def synthetic_commands(tiny: bool) -> list[tuple[str, str, list[str]]]:
    """(name, module, arguments) in order; ``{side}`` is the side's output folder."""
    size = [*TINY, "train.epochs=1"] if tiny else []
    demo = [*size, "cam.scales=[1.0,0.5]"] if tiny else []
    return [
        ("demo", "wsss.generate_masks", [*demo]),
        ("crf", "wsss.generate_masks", [*demo, "crf=dense", "crf.workers=2",
                                        "export.save_cams=true"]),
        ("par", "wsss.generate_masks", [*demo, "refine=par"]),
        ("affinity", "wsss.train_affinity", [*size, "seeds={side}/crf", "split=eval",
                                             "affinity.epochs=1", "affinity.crop_size=64"]),
        ("irn", "wsss.generate_masks", [*demo, "refine=irn",
                                        "refine.checkpoint={side}/affinity/affinity.pt"]),
        ("evaluate", "wsss.evaluate", [*size[:3], "predictions={side}/demo"]),
        ("evaluate_crf", "wsss.evaluate", [*size[:3], "predictions={side}/crf"]),
        ("export", "wsss.export", ["predictions={side}/demo", "rejected={side}/rejected.json"]),
        ("explain", "wsss.explain", [*size, "limit=6"]),
        ("train", "wsss.train", [*TINY, "train.epochs=1"]),
        ("pseudo", "wsss.generate_masks", [*TINY, "split=train", "checkpoint={side}/train/"
                                           "checkpoint.pt"]),
        ("segmentation", "wsss.train_segmentation", [*TINY[:3], "pseudo_masks={side}/pseudo",
                                                     "segmentation.epochs=1",
                                                     "segmentation.crop_size=48"]),
    ]  # fmt: skip


def voc_commands(root: Path, checkpoint: Path, images: int) -> list[tuple[str, str, list[str]]]:
    data = ["dataset=voc", f"dataset.root={root}", "++dataset.splits.first={side}/first.txt",
            "model=efficientnet_lite0", f"checkpoint={checkpoint}", "split=first"]  # fmt: skip
    return [
        ("voc_defaults", "wsss.generate_masks", [*data]),
        ("voc_crf", "wsss.generate_masks", [*data, "crf=dense", "crf.workers=2"]),
        ("voc_par", "wsss.generate_masks", [*data, "refine=par"]),
        ("voc_affinity", "wsss.train_affinity", [*data, "seeds={side}/voc_crf",
                                                 "affinity.epochs=1"]),
        ("voc_irn", "wsss.generate_masks", [*data, "refine=irn",
                                            "refine.checkpoint={side}/voc_affinity/affinity.pt"]),
    ]  # fmt: skip


def run_side(source: Path, side: Path, commands, cache: Path, prepare) -> None:
    """Run ``commands`` with the wsss of ``source``, each into ``side/<name>``."""
    side.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(source), "WSSS_CACHE": str(cache)}
    env.pop("WSSS_CONFIG_DIR", None)
    for name, module, args in commands:
        out = side / name
        if (out / ".done").is_file():
            continue
        prepare(name, side)
        args = [a.replace("{side}", str(side)) for a in args]
        command = [sys.executable, "-m", module, *args, f"hydra.run.dir={out}"]
        print(f"[{side.name}] {name}: python -m {module} {' '.join(args)}", flush=True)
        proc = subprocess.run(command, cwd=side, env=env, capture_output=True, text=True)
        if proc.returncode:
            raise SystemExit(f"{name} failed with {source}:\n{proc.stderr[-3000:]}")
        (out / ".done").write_text("")


def prepare_inputs(voc: Path | None, images: int):
    """Files some commands read: the review's rejections, the VOC photo list."""

    def prepare(name: str, side: Path) -> None:
        if name == "export":  # one image rejected, and one mask of another image
            records = sorted((side / "demo" / "records").glob("*.json"))
            annotated = next(r for r in records if json.loads(r.read_text())["annotations"])
            other = next(r for r in records if r != annotated)
            first = json.loads(annotated.read_text())
            rejected = {"format": "wsss-rejections", "images": [other.stem],
                        "annotations": [{"image": annotated.stem,
                                         "class": _first_class(side / "demo", first)}]}  # fmt: skip
            (side / "rejected.json").write_text(json.dumps(rejected))
        if name.startswith("voc_") and voc is not None:
            ids = (voc / "ImageSets/Segmentation/train.txt").read_text().split()[:images]
            (side / "first.txt").write_text("\n".join(ids) + "\n")

    return prepare


def _first_class(run: Path, record: dict) -> str:
    categories = json.loads((run / "annotations.json").read_text())["categories"]
    names = {c["id"]: c["name"] for c in categories}
    return names[record["annotations"][0]["category_id"]]


def _strip(value, roots: tuple[str, ...]):
    """A JSON value without volatile keys, with the sides' folders replaced by one name."""
    if isinstance(value, dict):
        return {k: _strip(v, roots) for k, v in value.items() if k not in VOLATILE_KEYS}
    if isinstance(value, list):
        return [_strip(v, roots) for v in value]
    if isinstance(value, str):
        for root in roots:
            value = value.replace(root, "<side>")
    return value


def _npz(data: bytes) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(data)) as arrays:
        return {k: arrays[k] for k in arrays.files}


def _without_timing(html: str) -> str:
    html = re.sub(r"<tr><th>total time</th><td>[0-9.]+ s</td></tr>", "", html)
    return html.replace(" (trained in this run)", "")


def _load_pt(data: bytes):
    import torch

    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def _same_tensors(a, b) -> bool:
    import torch

    if isinstance(a, dict) and isinstance(b, dict):
        keys = a.keys() - VOLATILE_KEYS
        return keys == b.keys() - VOLATILE_KEYS and all(_same_tensors(a[k], b[k]) for k in keys)
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, dict | list | tuple):
        return (
            type(a) is type(b)
            and len(a) == len(b)
            and all(_same_tensors(x, y) for x, y in zip(a, b, strict=True))
        )
    return a == b


def same(a: Path, b: Path, roots: tuple[str, ...]) -> bool:
    data_a, data_b = a.read_bytes(), b.read_bytes()
    if a.suffix == ".json":
        return _strip(json.loads(data_a), roots) == _strip(json.loads(data_b), roots)
    if a.suffix == ".npz":
        arrays_a, arrays_b = _npz(data_a), _npz(data_b)
        return arrays_a.keys() == arrays_b.keys() and all(
            np.array_equal(arrays_a[k], arrays_b[k]) for k in arrays_a
        )
    if a.suffix == ".pt":
        return _same_tensors(_load_pt(data_a), _load_pt(data_b))
    if a.suffix in (".yaml", ".html", ".js", ".txt"):
        text_a, text_b = data_a.decode(), data_b.decode()
        if a.suffix == ".html":
            text_a, text_b = (_without_timing(t) for t in (text_a, text_b))
        for root in roots:
            text_a, text_b = text_a.replace(root, "<side>"), text_b.replace(root, "<side>")
        return text_a == text_b
    return data_a == data_b


def compare(baseline: Path, current: Path) -> list[str]:
    """Every difference between the two sides' files, as lines."""
    roots = (str(baseline), str(current))

    def files(side: Path) -> set[str]:
        return {
            p.relative_to(side).as_posix()
            for p in side.rglob("*")
            if p.is_file()
            and p.name not in SKIPPED_NAMES
            and p.suffix not in SKIPPED_SUFFIXES
            and p.name != ".done"
        }

    found_a, found_b = files(baseline), files(current)
    problems = [f"only in the baseline: {p}" for p in sorted(found_a - found_b)]
    problems += [f"only in the current tree: {p}" for p in sorted(found_b - found_a)]
    for path in sorted(found_a & found_b):
        try:
            if not same(baseline / path, current / path, roots):
                problems.append(f"differs: {path}")
        except (ValueError, zipfile.BadZipFile, UnicodeDecodeError) as exc:
            problems.append(f"cannot compare {path}: {exc}")
    return problems


def _worktree(path: Path, revision: str) -> Path:
    """A checkout of ``revision`` at ``path`` (a git worktree; made once)."""
    if not path.is_dir():
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(path),
                        revision], check=True, capture_output=True)  # fmt: skip
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", required=True, help="a git revision of this repository")
    parser.add_argument(
        "--current", default=None, help="a git revision to compare (default: this working tree)"
    )
    parser.add_argument("--out", type=Path, default=Path("outputs/same_outputs"))
    parser.add_argument("--voc-checkpoint", type=Path, default=None)
    parser.add_argument("--voc-root", type=Path, default=DEFAULT_VOC)
    parser.add_argument("--voc-images", type=int, default=20)
    parser.add_argument("--tiny", action="store_true", help="tiny synthetic runs (tests)")
    parser.add_argument("--json", type=Path, default=None, help="(default: results/)")
    parser.add_argument("--no-synthetic", action="store_true")
    parser.add_argument("--only", default=None, help="only these commands, e.g. demo,evaluate")
    parser.add_argument(
        "--baseline-only", action="store_true", help="run the baseline's commands, compare later"
    )
    args = parser.parse_args()
    out = args.out.resolve()
    source = _worktree(out / "baseline_src", args.baseline)
    current = _worktree(out / "current_src", args.current) if args.current else REPO
    commands = [] if args.no_synthetic else synthetic_commands(args.tiny)
    voc = None
    if args.voc_checkpoint:
        voc = args.voc_root.resolve()
        commands += voc_commands(voc, args.voc_checkpoint.resolve(), args.voc_images)
    if args.only:
        commands = [c for c in commands if c[0] in args.only.split(",")]
    prepare = prepare_inputs(voc, args.voc_images)
    cache = out / "cache"
    try:
        run_side(source, out / "baseline", commands, cache, prepare)
        if args.baseline_only:
            return
        run_side(current, out / "current", commands, cache, prepare)
    finally:
        for tree in {source, current} - {REPO}:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(tree)],
                           capture_output=True)  # fmt: skip
    problems = compare(out / "baseline", out / "current")
    compared = sum(1 for p in (out / "current").rglob("*") if p.is_file())
    for line in problems:
        print(line)
    masks = mask_differences(out / "baseline", out / "current", problems)
    for run, (pixels, total) in masks.items():
        print(f"{run}: masks differ on {pixels} of {total} pixels ({pixels / total:.1e})")
    print(f"{len(problems)} differences in {compared} files ({len(commands)} commands)")
    figures = {
        "baseline": args.baseline,
        "current": args.current or "working tree",
        "files": compared,
        "commands": [c[0] for c in commands],
        "differences": len(problems),
        "runs_with_differences": sorted({p.split(": ")[1].split("/")[0] for p in problems}),
        "mask_pixels_differing": {r: {"pixels": d, "of": t} for r, (d, t) in masks.items()},
    }
    figures["tiny"] = args.tiny
    if args.json or not args.tiny:  # a tiny run (the tests') writes only where it is told
        print(f"figures: {save_result('same_outputs', figures, args.json)}")
    sys.exit(1 if problems else 0)


def mask_differences(baseline: Path, current: Path, problems: list[str]) -> dict:
    """Per run folder: pixels of its label PNGs that differ, of all its mask pixels."""
    from PIL import Image

    runs = {p.split(": ")[1].split("/")[0] for p in problems if "/masks/" in p}
    found = {}
    for run in sorted(runs):
        pixels = total = 0
        for path in sorted((baseline / run / "masks").glob("*.png")):
            a = np.asarray(Image.open(path))
            b = np.asarray(Image.open(current / run / "masks" / path.name))
            pixels, total = pixels + int((a != b).sum()), total + a.size
        found[run] = (pixels, total)
    return found


if __name__ == "__main__":
    main()
