"""The real-photo benchmark: PASCAL VOC 2012 train, the WSSS protocol, end to end.

Runs the commands a user would, on VOC 2012's 1,464 segmentation train images (read in place):

1. ``wsss.train``: the classifier on the image-level labels of 9 in 10 of the images
   (``fit``), validated on the held-out tenth (``heldout``: every 10th image), which it never
   trains on;
2. ``wsss.generate_masks``: pseudo-masks for all 1,464 images at the defaults (no refinement),
   then with the dense CRF (``crf=dense``), PAR (``refine=par``) and IRN's random walk
   (``refine=irn``, after ``wsss.train_affinity`` on the CRF masks: its seeds), with and
   without the CRF; ``--refine-limit N`` has the refiners label only the first N report images
   and every run is scored on those too, ``--seeds tune`` trains the affinity network on the
   tune images' seeds only;
3. ``wsss.evaluate``: their mIoU against VOC's masks, on the *report* images (two in three;
   the other third, ``tune``, is where defaults are chosen: see scripts/tune_crf.py and
   scripts/tune_threshold.py), with the threshold sweep's best (tuned on the ground truth, an
   upper bound) beside the default rule;
4. with ``--segmentation``, ``wsss.train_segmentation`` on the pseudo-masks of the fit images
   against the same model on their ground truth, both scored on the held-out images.

It prints the classifier's held-out mAP, each stage's time and peak memory (RSS, from the
kernel), the training time per epoch against a bare forward/backward loop of the same model on
the same crops, and the generation time per image against the plain forward passes it needs
(its floor), both measured side by side in this run.

    python scripts/bench_voc.py --refine-limit 150 --seeds tune   # the README's table
    python scripts/bench_voc.py                      # every image through every stage (hours)
    python scripts/bench_voc.py --limit 100 --epochs 2   # a quick look
    python scripts/bench_voc.py --train train.lr=1e-4 --generate cam.max_side=320

Each stage's outputs stay in ``--out``; a rerun reuses finished stages (delete a folder to
redo it). ``--train`` / ``--generate`` pass overrides to those commands.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch
from _timing import interleaved  # scripts/, beside this file

from wsss.cli.config import compose_config
from wsss.data import load_image
from wsss.masks import MaskPredictor
from wsss.masks.predictor import working_size
from wsss.models import create_classifier, load_checkpoint

REPO = Path(__file__).resolve().parent.parent
DEFAULT_ROOT = REPO.parent / "shared" / "voc2012"


def write_lists(
    root: Path, out: Path, limit: int | None, refine_limit: int | None = None
) -> dict[str, Path]:
    """The split lists (ids), written under ``out/lists``; held-out: every 10th image; tune:
    every 3rd, report: the others; with ``refine_limit``, ``refine``: the first N report
    images."""
    ids = (root / "ImageSets/Segmentation/train.txt").read_text().split()
    ids = ids[:limit] if limit else ids
    parts = {
        "all": ids,
        "fit": [x for i, x in enumerate(ids) if i % 10 != 9],
        "heldout": [x for i, x in enumerate(ids) if i % 10 == 9],
        "tune": [x for i, x in enumerate(ids) if i % 3 == 0],
        "report": [x for i, x in enumerate(ids) if i % 3 != 0],
    }
    if refine_limit:
        parts["refine"] = parts["report"][:refine_limit]
    # --seeds tune: the CRF run labels the tune images (the affinity network's seeds) and the
    # images the refiners label
    seeds = set(parts["tune"]) | set(parts.get("refine", parts["report"]))
    parts["seeds"] = [x for x in ids if x in seeds]
    (out / "lists").mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, part in parts.items():
        paths[name] = out / "lists" / f"{name}.txt"
        paths[name].write_text("\n".join(part) + "\n")
    return paths


def dataset_overrides(root: Path, lists: dict[str, Path]) -> list[str]:
    return ["dataset=voc", f"dataset.root={root}"] + [
        f"++dataset.splits.{name}={path}" for name, path in lists.items()
    ]


def run(module: str, args: list[str], log: Path) -> tuple[float, float]:
    """Run ``python -m module args``; return (seconds, peak RSS in MiB, children excluded)."""
    command = [sys.executable, "-m", module, *args]
    print("$", " ".join(command), flush=True)
    start = time.perf_counter()
    with log.open("w") as stream:
        proc = subprocess.Popen(command, stdout=stream, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status):
        raise SystemExit(f"{module} failed; see {log}:\n{log.read_text()[-3000:]}")
    return time.perf_counter() - start, usage.ru_maxrss / 1024


def stage(name: str, out: Path, done: Path, module: str, args: list[str]) -> dict:
    """Run a stage unless its ``done`` file exists; its timing is kept in out/timings.json."""
    timings_path = out / "timings.json"
    timings = json.loads(timings_path.read_text()) if timings_path.is_file() else {}
    if not done.is_file() or name not in timings:
        seconds, rss = run(module, args, out / f"{name}.log")
        timings[name] = {"seconds": round(seconds, 1), "peak_rss_mib": round(rss)}
        timings_path.write_text(json.dumps(timings, indent=2))
    return timings[name]


def rss(timing: dict) -> str:
    return f"{timing['peak_rss_mib']} MiB" if timing.get("peak_rss_mib") else "not recorded"


def bare_training_step_seconds(config, steps: int) -> float:
    """Seconds per image of forward + backward + optimiser step of the configured classifier on
    random crops of the configured size (no data loading, no augmentation)."""
    torch.manual_seed(0)
    model = create_classifier(config.model, 20).train().to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    size, batch = config.train.crop_size, config.train.batch_size
    images = torch.rand(batch, 3, size, size).contiguous(memory_format=torch.channels_last)
    targets = (torch.rand(batch, 20) > 0.9).float()

    def step():
        loss = torch.nn.functional.multilabel_soft_margin_loss(model(images), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - start) / steps / batch


def generation_against_its_floor(config, checkpoint: Path, samples, repeats: int):
    """Seconds per image of the maps (MaskPredictor.maps at the configured working size, scales
    and flip) and of the plain forward passes of the same views, timed in turn."""
    model = load_checkpoint(checkpoint).model
    predictor = MaskPredictor(model, config.cam, config.mask, device="cpu")
    images = [load_image(s.image_path) for s in samples]
    views = []
    for image in images:
        height, width = working_size(image.shape[:2], config.cam.max_side)
        for scale in config.cam.scales:
            size = (max(1, round(height * scale)), max(1, round(width * scale)))
            x = torch.rand(2 if config.cam.flip else 1, 3, *size)
            views.append(x.contiguous(memory_format=torch.channels_last))

    def maps():
        for image, sample in zip(images, samples, strict=True):
            predictor.maps([image], [sample.labels])

    def forwards():
        with torch.inference_mode():
            for view in views:
                predictor.model(view)

    (maps_time, floor_time), _ = interleaved([maps, forwards], repeats)
    return maps_time / len(images), floor_time / len(images)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="the VOC2012 folder")
    parser.add_argument("--out", type=Path, default=Path("outputs/bench_voc"))
    parser.add_argument("--limit", type=int, default=None, help="only the first N images")
    parser.add_argument(
        "--refine-limit",
        type=int,
        default=None,
        help="PAR and IRN label only the first N report images; every run is scored on them too",
    )
    parser.add_argument("--epochs", type=int, default=None, help="override train.epochs")
    parser.add_argument("--train", action="append", default=[], help="a wsss.train override")
    parser.add_argument(
        "--generate", action="append", default=[], help="a wsss.generate_masks override"
    )
    parser.add_argument("--model", default="efficientnet_lite0", help="the model group option")
    parser.add_argument(
        "--affinity", action="append", default=[], help="a wsss.train_affinity override"
    )
    parser.add_argument(
        "--segment", action="append", default=[], help="a wsss.train_segmentation override"
    )
    parser.add_argument("--no-refine", action="store_true", help="skip PAR and IRN")
    parser.add_argument(
        "--seeds",
        choices=["all", "tune"],
        default="all",
        help="the images whose CRF masks train IRN's affinity network; with tune, the CRF run "
        "labels only the tune images and those PAR and IRN label (about half the time)",
    )
    parser.add_argument(
        "--runs", default=None, help="only these pseudo-mask runs, e.g. defaults,crf,par,irn"
    )
    parser.add_argument(
        "--segmentation", action="store_true", help="also train segmentation models (slow)"
    )
    parser.add_argument("--timing-images", type=int, default=8)
    args = parser.parse_args()
    root, out = args.root.resolve(), args.out.resolve()
    if not (root / "ImageSets/Segmentation/train.txt").is_file():
        raise SystemExit(f"{root}: not a VOC2012 folder (see data/README.md)")
    out.mkdir(parents=True, exist_ok=True)
    lists = write_lists(root, out, args.limit, args.refine_limit)
    data = dataset_overrides(root, lists)
    model = [f"model={args.model}", "train=finetune"]
    train_args = model + [f"train.epochs={args.epochs}"] * bool(args.epochs) + args.train
    config = compose_config("train", [*data, *train_args])

    # 1. The classifier, on the fit images; validated on the held-out tenth.
    bare_before = bare_training_step_seconds(config, steps=4)
    train_dir = out / "train"
    checkpoint = train_dir / "checkpoint.pt"
    timing = {"train": stage("train", out, checkpoint, "wsss.train", [
        *data, *train_args, "train_split=fit", "val_split=heldout",
        f"hydra.run.dir={train_dir}",
    ])}  # fmt: skip
    bare_after = bare_training_step_seconds(config, steps=4)
    metrics = json.loads((train_dir / "train_metrics.json").read_text())
    fit_images = len(lists["fit"].read_text().split())
    per_image = metrics["seconds_per_epoch"] / fit_images
    bare = (bare_before + bare_after) / 2

    # 2. Pseudo-masks: the defaults, the CRF (whose label-mode masks are IRN's seeds), PAR, and
    # IRN's random walk with and without the CRF; 3. their scores on the report images.
    seeds = out / "masks_crf"
    affinity = out / "affinity" / "affinity.pt"
    seed_split = "all" if args.seeds == "all" else "seeds"
    runs = {"defaults": ("all", []), "crf": (seed_split, ["crf=dense"])}
    if not args.no_refine:
        refined = "refine" if args.refine_limit else "report"
        runs["par"] = (refined, ["refine=par"])
        irn = ["refine=irn", f"refine.checkpoint={affinity}"]
        # IRN's own parameters: nothing to tune; all images when a segmentation model trains on
        # its masks (the fit images), the report images otherwise
        runs["irn"] = ("all" if args.segmentation else refined, irn)
        runs["irn+crf"] = (refined, [*irn, "crf=dense"])
    if args.runs:
        runs = {name: runs[name] for name in args.runs.split(",")}
    scores = {}
    for name, (split, extra) in runs.items():
        if name.startswith("irn") and "affinity" not in timing:
            timing["affinity"] = stage("affinity", out, affinity, "wsss.train_affinity", [
                *data, *model, f"checkpoint={checkpoint}", f"seeds={seeds}", f"split={args.seeds}",
                *args.affinity, f"hydra.run.dir={affinity.parent}",
            ])  # fmt: skip
        folder = out / f"masks_{name}"
        generate = [*data, *model, f"checkpoint={checkpoint}", f"split={split}",
                    "export.save_cams=true", *extra, *args.generate,
                    f"hydra.run.dir={folder}"]  # fmt: skip
        timing[name] = stage(name, out, folder / "summary.json", "wsss.generate_masks", generate)
        labelled = set(lists[split].read_text().split())
        timing[name]["images"] = len(labelled)
        # scored on every list whose images the run labelled
        parts = [part for part in ("report", "tune", "refine")
                 if part in lists and set(lists[part].read_text().split()) <= labelled]  # fmt: skip
        for part in parts:
            evaluation = out / f"evaluate_{name}_{part}"
            stage(f"evaluate_{name}_{part}", out, evaluation / "metrics.json", "wsss.evaluate", [
                *data, f"split={part}", f"predictions={folder}", f"hydra.run.dir={evaluation}",
            ])  # fmt: skip
            scores[name, part] = json.loads((evaluation / "metrics.json").read_text())

    # 4. Closing the loop: a segmentation model trained on the fit images' pseudo-masks against
    # the same model trained on their ground truth, both scored on the held-out images.
    segmentation = {}
    if args.segmentation:
        best = "irn" if "irn" in runs else "crf" if "crf" in runs else "defaults"
        for name, targets in ((best, [f"pseudo_masks={out / f'masks_{best}'}"]),
                              ("ground_truth", ["targets=ground_truth"])):  # fmt: skip
            folder = out / f"segmentation_{name}"
            stage(f"segmentation_{name}", out, folder / "metrics.json", "wsss.train_segmentation", [
                *data, "segmentation=lite0", *targets, "train_split=fit", "eval_split=heldout",
                *args.segment, f"hydra.run.dir={folder}",
            ])  # fmt: skip
            segmentation[name] = json.loads((folder / "metrics.json").read_text())["eval"]["miou"]

    generation = compose_config("generate_masks", [*data, *model, *args.generate])
    samples = generation.dataset.load("all").samples[: args.timing_images]
    maps_seconds, floor_seconds = generation_against_its_floor(
        generation, checkpoint, samples, repeats=2
    )

    images = len(lists["all"].read_text().split())
    heldout = len(lists["heldout"].read_text().split())
    training_seconds = metrics["seconds_per_epoch"] * config.train.epochs
    cam = generation.cam
    subset = f"mIoU (first {args.refine_limit} report images) | " if args.refine_limit else ""
    lines = [
        f"VOC 2012 train, {images} images; model={args.model}; {torch.get_num_threads()} threads",
        f"classifier: held-out mAP {metrics['val_map']:.4f} ({heldout} images never trained "
        f"on); {config.train.epochs} epochs on {fit_images} images",
        f"training: {metrics['seconds_per_epoch']:.1f} s per epoch ({1000 * per_image:.0f} "
        f"ms/img); a bare forward/backward {1000 * bare:.0f} ms/img; ratio {per_image / bare:.2f}",
        f"validation: {metrics['validation_seconds']:.1f} s in all, "
        f"{100 * metrics['validation_seconds'] / training_seconds:.1f}% of the training time",
        f"maps: {maps_seconds:.3f} s/img; plain forward passes of the same views "
        f"{floor_seconds:.3f} s/img; ratio {maps_seconds / floor_seconds:.2f} (first "
        f"{args.timing_images} images, max_side {cam.max_side}, scales {list(cam.scales)}, "
        f"flip {cam.flip})",
        f"training run: {timing['train']['seconds']:.0f} s, peak RSS {rss(timing['train'])}",
        "",
        f"| pseudo-masks | mIoU (report) | mIoU (tune) | {subset}best threshold (report; tuned "
        "on GT: an upper bound) | uncertain | s/img (whole run) | peak RSS |",
        "| --- | --- | --- | --- | --- | --- | --- |" + " --- |" * bool(subset),
    ]

    def miou(name: str, part: str) -> str:
        score = scores.get((name, part))
        return f"{score['masks_on_disk']['miou']:.4f}" if score else ""

    for name in runs:
        report = scores.get((name, "report")) or scores[name, "refine"]
        sweep = report.get("threshold_sweep", {})
        best = f"{sweep['best_miou']:.4f} ({sweep['best_threshold']:.2f})" if sweep else ""
        masks = report["masks_on_disk"]
        refined = f"{miou(name, 'refine')} | " if subset else ""
        lines.append(
            f"| {name} | {miou(name, 'report')} | {miou(name, 'tune')} | {refined}{best} | "
            f"{100 * masks['uncertain_pixel_fraction']:.1f}% | "
            f"{timing[name]['seconds'] / timing[name]['images']:.3f} | "
            f"{rss(timing[name])} |"
        )
    if "affinity" in timing:
        lines.append(f"\naffinity training: {timing['affinity']['seconds']:.0f} s")
    for name, miou in segmentation.items():
        lines.append(
            f"segmentation trained on {name} masks: mIoU {miou:.4f} on the held-out images"
        )
    if len(segmentation) == 2:
        pseudo, truth = segmentation.values()
        lines.append(f"ratio pseudo-masks / ground truth: {pseudo / truth:.3f}")
    print("\n" + "\n".join(lines))
    summary = {
        "images": images,
        "heldout_map": metrics["val_map"],
        "train_seconds_per_epoch": metrics["seconds_per_epoch"],
        "train_to_bare_ratio": per_image / bare,
        "maps_seconds_per_image": maps_seconds,
        "maps_to_floor_ratio": maps_seconds / floor_seconds,
        "timings": timing,
        "miou": {f"{n}/{p}": s["masks_on_disk"]["miou"] for (n, p), s in scores.items()},
        "segmentation_miou": segmentation,
    }
    (out / "bench_voc.json").write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
