"""The real-photo benchmark: PASCAL VOC 2012 train, the WSSS protocol, wsss's one command.

On VOC 2012's 1,464 segmentation *train* photos (read in place), as a user with tagged photos
would run it, then scored as the papers score pseudo-masks:

1. ``python -m wsss.generate_masks preset=photos`` end to end, timed: it trains the classifier
   on the image-level labels of 9 in 10 photos (``fit``; validated on the held-out tenth,
   ``heldout``, which it never trains on), fits LPCAM's class prototypes on the fit photos and
   labels all 1,464 photos with LPCAM's maps refined by the dense CRF. Everything it makes is
   cached under ``--out``/cache, so the rows below reuse its classifier;
2. the same classifier's plain CAM (``cam=cam refine=none``: the *seed*), CAM with the dense
   CRF (*seed + CRF*), IRN's walk from the CAM (*walk*), and LPCAM without the CRF (*lpcam*);
3. ``wsss.evaluate`` of each on the *report* photos (two in three; the other third, ``tune``,
   is where defaults are chosen) and the tune photos: mIoU with the GT-free default rule, mIoU
   at the background threshold swept on the ground truth (the papers' protocol for CAM: an
   upper bound, labelled so), foreground precision and recall;
4. with ``--segmentation``, ``wsss.train_segmentation`` on the preset's masks of the fit photos
   against the same model on their ground truth, both scored on the held-out photos.

It also prints the classifier's held-out mAP, a short epoch of its training (``train_classifier``
on 4 batches of fit photos) against a bare forward/backward loop of the same model on crops of
the same size, and the maps' time against their plain forward passes (each pair timed side by
side in this run). Figures go to ``results/bench_voc.json``.

A *lever* (``--lever NAME=OVERRIDES``) is a change tried the way defaults are chosen: its masks
are made and scored on the tune photos alone, with its time per photo, from the record's cached
classifier; one that wins there becomes a ``--row`` and is reported on the report photos.

    python scripts/bench_voc.py                          # about 2 hours on 2 cores
    python scripts/bench_voc.py --segmentation           # + the segmentation models (hours)
    python scripts/bench_voc.py --limit 100 --epochs 2   # a quick look
    python scripts/bench_voc.py --lever "superpixels=refine=superpixels"
    python scripts/bench_voc.py --generate model=efficientnet_lite2 --out outputs/voc_lite2

Each stage's outputs stay in ``--out``; a rerun reuses finished stages (delete a folder to redo
it). ``--generate`` / ``--segment`` pass overrides to those commands.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F
from _results import save_result  # scripts/, beside this file
from _timing import interleaved

from wsss.cams.methods import PrototypeCam
from wsss.cli.config import compose_config
from wsss.data import load_image
from wsss.engine.prototype_stage import prototypes_for
from wsss.engine.training import make_optimizer, train_classifier
from wsss.masks import MaskPredictor
from wsss.masks.predictor import working_size
from wsss.models import create_classifier, load_checkpoint

REPO = Path(__file__).resolve().parent.parent
DEFAULT_ROOT = REPO.parent / "shared" / "voc2012"
PARTS = ("report", "tune")


def write_lists(
    root: Path, out: Path, limit: int | None, *, folder: bool = False
) -> dict[str, Path]:
    """The split lists (ids) under ``out/lists``: held-out every 10th photo, fit the others;
    tune every 3rd, report the others. With ``folder`` (a user's folder of a few hundred
    tagged photos): every 3rd report photo only (325 of VOC's 1,464, none of them a tune photo),
    all of them fit, labelled and scored."""
    ids = (root / "ImageSets/Segmentation/train.txt").read_text().split()
    ids = ids[:limit] if limit else ids
    report = [x for i, x in enumerate(ids) if i % 3 != 0]
    if folder:
        parts = {"all": report[::3], "fit": report[::3]}
    else:
        parts = {
            "all": ids,
            "fit": [x for i, x in enumerate(ids) if i % 10 != 9],
            "heldout": [x for i, x in enumerate(ids) if i % 10 == 9],
            "tune": [x for i, x in enumerate(ids) if i % 3 == 0],
            "report": report,
        }
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
    """Run ``python -m module args``; return (seconds, peak RSS in MiB of the command and the
    processes it waited for)."""
    command = [sys.executable, "-m", module, *args]
    print("$", " ".join(command), flush=True)
    start = time.perf_counter()
    with log.open("w") as stream:
        proc = subprocess.Popen(command, stdout=stream, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status):
        raise SystemExit(f"{module} failed; see {log}:\n{log.read_text()[-3000:]}")
    return time.perf_counter() - start, usage.ru_maxrss / 1024


#: the stages this invocation ran or found finished, in order
STAGES_RUN: list[str] = []


def stage(name: str, out: Path, done: Path, module: str, args: list[str]) -> dict:
    """Run a stage unless its ``done`` file exists; its timing is kept in out/timings.json."""
    STAGES_RUN.append(name)
    timings_path = out / "timings.json"
    timings = json.loads(timings_path.read_text()) if timings_path.is_file() else {}
    if not done.is_file() or name not in timings:
        seconds, rss = run(module, args, out / f"{name}.log")
        timings[name] = {"seconds": round(seconds, 1), "peak_rss_mib": round(rss)}
        timings_path.write_text(json.dumps(timings, indent=2))
    return timings[name]


def training_against_bare(config, split, batches: int, repeats: int) -> tuple[float, float]:
    """Seconds per image of one epoch of wsss's training over ``batches`` batches of ``split``
    (``train_classifier``: loading, augmentation, forward, backward, optimiser step, schedule)
    and of a bare loop of forward + backward + optimiser step on random crops of the same size,
    each from a new model and optimiser, timed in turn (:func:`interleaved`)."""
    size, batch = config.train.crop_size, config.train.batch_size
    photos = replace(split, samples=split.samples[: batches * batch])
    recipe = replace(config.train, epochs=1, warmup_epochs=0)
    classes = len(split.class_names)
    images = torch.rand(batch, 3, size, size).contiguous(memory_format=torch.channels_last)
    targets = (torch.rand(batch, classes) > 0.9).float()

    def wsss_epoch():
        model = create_classifier(config.model, classes)
        train_classifier(model, photos, None, recipe, "cpu", amp=config.amp,
                         num_workers=config.num_workers)  # fmt: skip

    def bare_epoch():
        model = create_classifier(config.model, classes).train()
        model = model.to(memory_format=torch.channels_last)
        optimizer = make_optimizer(model, recipe)
        for _ in range(batches):
            loss = F.multilabel_soft_margin_loss(model(images), targets)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

    torch.manual_seed(0)
    (epoch, bare), _ = interleaved([wsss_epoch, bare_epoch], repeats)
    return epoch / len(photos), bare / len(photos)


def maps_against_their_forwards(config, checkpoint: Path, samples, repeats: int):
    """Seconds per image of the maps (MaskPredictor.maps at the configured working size, scales,
    flip and backend) and of the plain PyTorch forward passes of the same views, timed in turn."""
    classifier = load_checkpoint(checkpoint)
    cam = config.cam
    if isinstance(cam, PrototypeCam) and not cam.prototypes:  # the preset run's, from the cache
        fitted = prototypes_for(classifier, config.dataset, config.train_split, cam,
                                Path(config.cache_dir))  # fmt: skip
        cam = replace(cam, prototypes=str(fitted))
    predictor = MaskPredictor(classifier.model, cam, config.mask, device="cpu")
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


def scores(metrics: dict, swept: bool) -> dict:
    """The figures of one evaluation: GT-free mIoU, swept best, foreground P/R, uncertain.
    ``swept``: whether the GT sweep scores these masks' own maps; a CRF's masks are not a
    threshold of the maps saved beside them (the sweep there would be the seed's, again)."""
    masks = metrics["masks_on_disk"]
    sweep = (metrics.get("threshold_sweep") or {}) if swept else {}
    return {
        "miou": masks["miou"],
        "best_threshold": sweep.get("best_threshold"),
        "best_threshold_miou": sweep.get("best_miou"),
        "foreground_precision": masks["foreground"]["precision"],
        "foreground_recall": masks["foreground"]["recall"],
        "uncertain_pixel_fraction": masks["uncertain_pixel_fraction"],
    }


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="the VOC2012 folder")
    parser.add_argument("--out", type=Path, default=Path("outputs/bench_voc"))
    parser.add_argument("--limit", type=int, default=None, help="only the first N images")
    parser.add_argument("--epochs", type=int, default=None, help="override train.epochs")
    parser.add_argument("--preset", default="photos", help="the generate_masks preset")
    parser.add_argument(
        "--generate", action="append", default=[], help="a wsss.generate_masks override"
    )
    parser.add_argument(
        "--segment", action="append", default=[], help="a wsss.train_segmentation override"
    )
    parser.add_argument("--par", action="store_true", help="also the PAR row")
    parser.add_argument(
        "--segmentation", action="store_true", help="also train segmentation models (slow)"
    )
    parser.add_argument(
        "--folder",
        action="store_true",
        help="a user's folder: 325 report photos, classifier and masks on those alone",
    )
    parser.add_argument(
        "--row",
        action="append",
        default=[],
        metavar="NAME=OVERRIDES",
        help="another mask run from the same classifier, e.g."
        " 'walk+crf=cam=cam refine=irn crf=dense' (overrides separated by spaces)",
    )
    parser.add_argument(
        "--lever",
        action="append",
        default=[],
        metavar="NAME=OVERRIDES",
        help="a change to try on the tune photos only (labelled and scored there, timed per"
        " photo), e.g. 'superpixels=refine=superpixels'; a lever that wins becomes a --row",
    )
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="NAME",
        help="only these mask runs (seed, walk, a --row's name...; the preset always runs), e.g."
        " the segmentation loop alone: --only preset --segmentation",
    )
    parser.add_argument("--timing-images", type=int, default=8)
    parser.add_argument("--json", type=Path, default=None, help="(default: results/)")
    args = parser.parse_args()
    if not (args.root / "ImageSets/Segmentation/train.txt").is_file():
        raise SystemExit(f"{args.root}: not a VOC2012 folder (see data/README.md)")
    if args.folder and args.lever:
        parser.error("--lever tries a change on VOC's tune photos; in a folder use --row")
    return args


def mask_runs(args) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """The mask runs by name (their overrides on top of the preset's), and the levers among them
    (each's own overrides). 1. The one command, end to end; 2. the seed (CAM), seed + CRF, IRN's
    walk and LPCAM without the CRF from its cached classifier; then the --row and --lever runs."""
    runs = {
        "preset": [],
        "seed": ["cam=cam", "refine=none", "crf=none"],
        "seed+crf": ["cam=cam", "refine=none", "crf=dense"],
        "walk": ["cam=cam", "refine=irn", "crf=none"],
        "lpcam": ["cam=lpcam", "refine=none", "crf=none"],
    }
    if args.par:
        runs["seed+par"] = ["refine=par", "crf=none"]
    for row in args.row:
        name, _, overrides = row.partition("=")
        runs[name] = overrides.split()
    levers = {}
    for lever in args.lever:  # split=tune comes after the preset's split=all
        name, _, overrides = lever.partition("=")
        levers[f"lever_{name}"] = overrides.split()
        runs[f"lever_{name}"] = [*overrides.split(), "split=tune"]
    if args.only:
        unknown = [n for n in args.only if n not in runs and f"lever_{n}" not in runs]
        if unknown:
            raise SystemExit(f"--only {', '.join(unknown)}: no such mask run ({', '.join(runs)})")
        kept = {"preset", *args.only, *(f"lever_{n}" for n in args.only)}
        runs = {name: extra for name, extra in runs.items() if name in kept}
        levers = {name: extra for name, extra in levers.items() if name in kept}
    return runs, levers


def run_key(settings) -> str:
    """What makes a mask run's masks: every setting but the photos it labels (a lever equal to
    a full row is that row, scored on the tune photos). The classifier's settings count: a
    lever that changes the checkpoint, the model or its training is a run of its own."""
    return repr(replace(settings, split=""))


def run_masks(runs, levers, out: Path, data, preset, parts, result_name, json_path):
    """Each mask run and its evaluations (3. on the report photos, where no default was chosen,
    and on the tune photos; a lever on the tune photos alone). A run whose settings equal an
    earlier run's is that run, under a second name. Returns (timing, results, same_as)."""
    timing, results, same_as, made = {}, {}, {}, {}
    for name, extra in runs.items():
        settings = compose_config("generate_masks", [*data, *preset, *extra])
        key = run_key(settings)
        if key in made:  # a row that is the preset, say: one run, two rows
            same_as[name] = made[key]
            timing[name] = timing[made[key]]
            for part in parts:
                if (made[key], part) in results:
                    results[name, part] = results[made[key], part]
            continue
        made[key] = name
        folder = out / f"masks_{name}"
        timing[name] = stage(name, out, folder / "summary.json", "wsss.generate_masks",
                             [*data, *preset, *extra, f"hydra.run.dir={folder}"])  # fmt: skip
        for part in ("tune",) if name in levers else parts:
            evaluation = out / f"evaluate_{name}_{part}"
            stage(f"evaluate_{name}_{part}", out, evaluation / "metrics.json", "wsss.evaluate", [
                *data, f"split={part}", f"predictions={folder}", f"hydra.run.dir={evaluation}",
            ])  # fmt: skip
            metrics = json.loads((evaluation / "metrics.json").read_text())
            results[name, part] = scores(metrics, swept=settings.crf is None)
        # the rows so far, in case a later stage is interrupted (a rerun completes the file)
        partial = {"complete": False, "rows": {f"{n}/{p}": r for (n, p), r in results.items()},
                   "same_as": same_as, "timings": timing}  # fmt: skip
        save_result(result_name, partial, json_path)
    return timing, results, same_as


def segmentation_loop(out: Path, data, segment_overrides, timing) -> tuple[dict, dict]:
    """4. Closing the loop: a segmentation model on the fit photos' preset masks against the
    same model on their ground truth, both scored on the held-out photos; and the masks it
    learnt from, scored on the same fit photos. Returns the mIoUs, and each model's foreground
    and per-class scores on the held-out photos."""
    segmentation, heldout = {}, {}
    for name, targets in (("preset", [f"pseudo_masks={out / 'masks_preset'}"]),
                          ("ground_truth", ["targets=ground_truth"])):  # fmt: skip
        folder = out / f"segmentation_{name}"
        timing[f"segmentation_{name}"] = stage(
            f"segmentation_{name}", out, folder / "metrics.json", "wsss.train_segmentation", [
                *data, "segmentation=lite0", *targets, "train_split=fit",
                "eval_split=heldout", "score_train=true", f"cache_dir={out / 'cache'}",
                *segment_overrides, f"hydra.run.dir={folder}",
            ])  # fmt: skip
        metrics = json.loads((folder / "metrics.json").read_text())
        segmentation[name] = metrics["eval"]["miou"]
        segmentation[f"{name}_on_fit"] = metrics["train"]["miou"]
        heldout[name] = {key: metrics["eval"][key] for key in ("foreground", "per_class")}
    evaluation = out / "evaluate_preset_fit"
    stage("evaluate_preset_fit", out, evaluation / "metrics.json", "wsss.evaluate", [
        *data, "split=fit", f"predictions={out / 'masks_preset'}",
        f"hydra.run.dir={evaluation}",
    ])  # fmt: skip
    metrics = json.loads((evaluation / "metrics.json").read_text())
    segmentation["preset_masks_on_fit"] = metrics["masks_on_disk"]["miou"]
    return segmentation, heldout


def main() -> None:
    args = arguments()
    root, out = args.root.resolve(), args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    lists = write_lists(root, out, args.limit, folder=args.folder)
    data = dataset_overrides(root, lists)
    parts = ("all",) if args.folder else PARTS
    validation = "null" if args.folder else "heldout"
    preset = [f"preset={args.preset}", "train_split=fit", f"val_split={validation}", "split=all",
              "export.save_cams=true", f"cache_dir={out / 'cache'}"]  # fmt: skip
    preset += [f"train.epochs={args.epochs}"] * bool(args.epochs) + args.generate
    config = compose_config("generate_masks", [*data, *preset])
    result_name = "bench_voc_folder" if args.folder else "bench_voc"
    runs, levers = mask_runs(args)
    timing, results, same_as = run_masks(
        runs, levers, out, data, preset, parts, result_name, args.json
    )
    segmentation, heldout = (
        segmentation_loop(out, data, args.segment, timing) if args.segmentation else ({}, {})
    )

    summary = json.loads((out / "masks_preset" / "summary.json").read_text())
    checkpoint = Path(summary["checkpoint"])
    classifier = load_checkpoint(checkpoint).metrics
    counts = {name: len(path.read_text().split()) for name, path in lists.items()}
    fit = config.dataset.load("fit", cache_dir=out / "cache")
    per_image, bare = training_against_bare(config, fit, batches=4, repeats=2)
    samples = config.dataset.load("all", cache_dir=out / "cache").samples[: args.timing_images]
    maps_seconds, floor_seconds = maps_against_their_forwards(config, checkpoint, samples, 2)
    timings = json.loads((out / "timings.json").read_text())
    classifier_seconds = round(
        classifier["seconds_per_epoch"] * classifier["epoch"]
        + classifier.get("validation_seconds", 0),
        1,
    )
    figures = {
        "regime": "folder" if args.folder else "voc_train",
        "images": counts["all"],
        "part_images": {part: counts[part] for part in parts},
        "heldout_images": counts.get("heldout", 0),
        "model": config.model.backbone,
        "heldout_map": classifier.get("val_map"),
        "train_seconds_per_epoch": classifier["seconds_per_epoch"],
        "train_seconds_per_image": per_image,
        "train_to_bare_ratio": per_image / bare,
        "maps_seconds_per_image": maps_seconds,
        "maps_to_pytorch_forwards_ratio": maps_seconds / floor_seconds,
        "one_command_seconds": timing["preset"]["seconds"],
        # a classifier given (checkpoint=) or cached by an earlier invocation: the command did not
        # train it, and its training time is the checkpoint's own record
        "classifier_given": not summary["trained_in_this_run"],
        "classifier_train_seconds": classifier_seconds,
        "complete": True,
        "timings": timing,
        "same_as": same_as,
        "rows": {f"{n}/{p}": r for (n, p), r in results.items() if n not in levers},
        "levers": lever_figures(levers, results, timing, same_as, counts.get("tune", 0)),
        "segmentation_miou": segmentation,
        "segmentation_heldout": heldout,
        # every stage of this command (mask runs, evaluations, segmentation models, each timed
        # when it ran), and the classifier's training where no mask run included it
        "record_seconds": round(
            sum(timings[name]["seconds"] for name in STAGES_RUN)
            + (0 if summary["trained_in_this_run"] else classifier_seconds),
            1,
        ),  # fmt: skip
    }
    if segmentation:
        figures["segmentation_ratio"] = segmentation["preset"] / segmentation["ground_truth"]
    print_tables(figures, [name for name in runs if name not in levers])
    path = save_result(result_name, figures, args.json)
    print(f"\nfigures: {path}")


def lever_figures(levers: dict, results: dict, timing: dict, same_as: dict, tune: int) -> dict:
    """Each lever's overrides, its scores on the ``tune`` photos and its time per photo."""
    return {
        name.removeprefix("lever_"): {
            "overrides": extra,
            **results[name, "tune"],
            # a lever that is an earlier full row labelled more photos than the tune ones
            "seconds_per_photo": timing[name]["seconds"] / tune
            if same_as.get(name, "lever_").startswith("lever_")
            else None,
        }
        for name, extra in levers.items()
    }


def seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def print_tables(f: dict, runs) -> None:
    print(f"\nVOC 2012 train, {f['images']} photos; model {f['model']}; "
          f"{torch.get_num_threads()} threads")  # fmt: skip
    held_out = "no held-out photos"
    if f["heldout_map"] is not None:
        held_out = f"held-out mAP {f['heldout_map']:.4f} ({f['heldout_images']} photos never seen)"
    print(f"classifier: {held_out}; {f['train_seconds_per_epoch']:.0f} s per epoch; a short "
          f"epoch {f['train_seconds_per_image']:.3f} s/photo, {f['train_to_bare_ratio']:.2f}x a "
          "bare forward/backward loop timed beside it")  # fmt: skip
    print(f"maps: {f['maps_seconds_per_image']:.3f} s/photo, "
          f"{f['maps_to_pytorch_forwards_ratio']:.2f}x PyTorch's plain forward passes of the "
          "same views")  # fmt: skip
    if f["classifier_given"]:
        print(
            f"the one command with the classifier given or cached ({f['images']} photos "
            f"labelled): {f['one_command_seconds'] / 60:.1f} min; the classifier's training took "
            f"{f['classifier_train_seconds'] / 60:.1f} min (its record)"
        )
    else:
        print(f"the one command (classifier trained, {f['images']} photos labelled): "
              f"{f['one_command_seconds'] / 60:.1f} min")  # fmt: skip
    for part, count in f["part_images"].items():
        print(f"\n{part} photos ({count}):")
        print("| pseudo-masks | mIoU (GT-free default) | mIoU at the threshold swept on GT "
              "(papers' protocol) | fg precision | fg recall | uncertain |")  # fmt: skip
        print("| --- | --- | --- | --- | --- | --- |")
        for name in runs:
            r = f["rows"][f"{name}/{part}"]
            shown = f"{name} (= {f['same_as'][name]})" if name in f["same_as"] else name
            best = (f"{r['best_threshold_miou']:.4f} ({r['best_threshold']:.2f})"
                    if r["best_threshold_miou"] is not None else "-")  # fmt: skip
            print(
                f"| {shown} | {r['miou']:.4f} | {best} | {r['foreground_precision']:.3f} | "
                f"{r['foreground_recall']:.3f} | {100 * r['uncertain_pixel_fraction']:.1f}% |"
            )
    if f["levers"]:
        print(f"\nlevers, each on the {f['part_images']['tune']} tune photos alone (seconds per "
              "photo of its mask run; maps an earlier run cached are not recomputed):")  # fmt: skip
        print("| lever | overrides | mIoU | swept on GT | fg precision | fg recall | s/photo |")
        print("| --- | --- | --- | --- | --- | --- | --- |")
        for name, r in f["levers"].items():
            best = (f"{r['best_threshold_miou']:.4f} ({r['best_threshold']:.2f})"
                    if r["best_threshold_miou"] is not None else "-")  # fmt: skip
            print(f"| {name} | `{' '.join(r['overrides'])}` | {r['miou']:.4f} | {best} | "
                  f"{r['foreground_precision']:.3f} | {r['foreground_recall']:.3f} | "
                  f"{seconds(r['seconds_per_photo'])} |")  # fmt: skip
    seg = f["segmentation_miou"]
    for name in ("preset", "ground_truth"):
        if name in seg:
            on_fit = seg[f"{name}_on_fit"]
            print(f"segmentation trained on {name} masks: mIoU {seg[name]:.4f} on the held-out "
                  f"photos, {on_fit:.4f} on the fit photos it learnt from")  # fmt: skip
    if "preset" in f["segmentation_heldout"]:
        scores = f["segmentation_heldout"]["preset"]["per_class"]
        least = sorted((s["precision"], name) for name, s in scores.items()
                       if name != "background" and s["precision"] is not None)  # fmt: skip
        print("least precise classes of the model on the preset's masks (held-out precision, "
              "recall): " + ", ".join(f"{name} {p:.3f} ({scores[name]['recall']:.3f})"
                                      for p, name in least[:5]))  # fmt: skip
    if "preset_masks_on_fit" in seg:
        print(f"the preset's masks of the fit photos: mIoU {seg['preset_masks_on_fit']:.4f}")
    if "segmentation_ratio" in f:
        print(f"ratio pseudo-masks / ground truth: {f['segmentation_ratio']:.3f}")
    for name in ("preset", "ground_truth"):
        if f"segmentation_{name}" in f["timings"]:
            minutes = f["timings"][f"segmentation_{name}"]["seconds"] / 60
            print(f"segmentation model on {name} masks: {minutes:.1f} min")
    print(f"the whole record (every stage above, the classifier included): "
          f"{f['record_seconds'] / 60:.1f} min")  # fmt: skip


if __name__ == "__main__":
    main()
