"""Why IRN's walk gains little here: one change at a time from the earlier ``refine=irn``.

On VOC 2012 train's *tune* photos (every 3rd), in a folder ``--run`` (made as needed: the split
lists of ``scripts/bench_voc.py``, the classifier ``train/checkpoint.pt`` trained on the fit
photos with ``train=finetune``, the maps of every photo saved in ``masks_defaults``), it makes
the CRF seeds of every photo once (label mode, 0.30 and 0.05, as IRN's), then trains the boundary
network in each variant and scores the walk on the tune photos with ``scripts/tune_walk.py``:
mIoU at the walk's background score (GT-free) and at the threshold swept on the ground truth (an
upper bound), and the time of each. The variants:

* ``earlier``: the earlier default: seeds of the 488 tune photos, 3 epochs of 8 crops of 256;
* ``seeds: fit photos``: the seeds of the 1,318 fit photos instead;
* ``training: 10 epochs``: the tune seeds, 10 epochs;
* the walk of ``earlier``'s network with beta 5 / 15, exp_times 6 / 7 / 9, radius 3 / 8.

Figures go to ``results/irn_ablation.json``; finished stages in ``--run`` are reused.

    python scripts/irn_ablation.py --run outputs/bench_voc_lite0
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from _results import save_result  # scripts/, beside this file

REPO = Path(__file__).resolve().parent.parent
DEFAULT_ROOT = REPO.parent / "shared" / "voc2012"

#: name -> (seed split, train_affinity overrides)
NETWORKS = {
    "earlier": ("tune", []),
    "seeds: fit photos": ("fit", []),
    "training: 10 epochs": ("tune", ["affinity.epochs=10"]),
}
FOLDERS = {"earlier": "aff_tune_e3", "seeds: fit photos": "aff_fit_e3",
           "training: 10 epochs": "aff_tune_e10"}  # fmt: skip
#: file -> (network, tune_walk --set arguments); the earlier network's walk at beta 10, exp_times
#: 8, radius 5 is the "earlier" row, each other setting a "walk: <key>" row
WALKS = {
    "walk_today": ("earlier", ["beta=5,10,15"]),
    "walk_fit_e3": ("seeds: fit photos", []),
    "walk_tune_e10": ("training: 10 epochs", []),
    "walk_today_exp": ("earlier", ["exp_times=6,7,9"]),
    "walk_today_radius": ("earlier", ["radius=3,8"]),
}
EARLIER_WALK = {"beta": 10.0, "exp_times": 8, "radius": 5}
#: the walk's background score in every row: IRN's (the default became 0.40 after this study)
ABLATION_BG = 0.25


def variant(network: str, row: dict) -> str:
    changed = [k for k, v in EARLIER_WALK.items() if k in row and row[k] != v]
    return f"walk: {changed[0]}" if changed else network


def command(args: list[str], log: Path) -> float:
    start = time.perf_counter()
    with log.open("w") as stream:
        status = subprocess.run(args, stdout=stream, stderr=subprocess.STDOUT).returncode
    if status:
        raise SystemExit(f"{args[:4]} failed; see {log}")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, required=True, help="a bench_voc-style folder")
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT)
    parser.add_argument("--json", type=Path, default=None, help="(default: results/)")
    parser.add_argument("--model", action="append", default=[], help="a model override (all)")
    parser.add_argument("--train", action="append", default=[], help="a wsss.train override")
    parser.add_argument("--affinity", action="append", default=[], help="a train_affinity one")
    args = parser.parse_args()
    run = args.run.resolve()
    run.mkdir(parents=True, exist_ok=True)
    from bench_voc import write_lists

    lists = write_lists(args.root.resolve(), run, None)
    data = ["dataset=voc", f"dataset.root={args.root.resolve()}"]
    data += [f"++dataset.splits.{name}={path}" for name, path in lists.items()]
    checkpoint = run / "train" / "checkpoint.pt"
    python = [sys.executable, "-m"]
    if not checkpoint.is_file():
        command([*python, "wsss.train", *data, "model=efficientnet_lite0", "train=finetune",
                 *args.model, *args.train, "train_split=fit", "val_split=heldout",
                 f"hydra.run.dir={checkpoint.parent}"], run / "train.log")  # fmt: skip
    model = ["model=efficientnet_lite0", "train=finetune", *args.model, f"checkpoint={checkpoint}"]
    if not (run / "masks_defaults" / "summary.json").is_file():
        command([*python, "wsss.generate_masks", *data, *model, "split=all", "cache_maps=true",
                 "export.save_cams=true", f"hydra.run.dir={run / 'masks_defaults'}"],
                run / "defaults.log")  # fmt: skip
    seeds = run / "masks_crf_all"
    if not (seeds / "summary.json").is_file():
        command([*python, "wsss.generate_masks", *data, *model, "split=all", "crf=dense",
                 "cache_maps=true", f"hydra.run.dir={seeds}"],
                run / "masks_crf_all.log")  # fmt: skip
    trained = {}
    for name, (split, extra) in NETWORKS.items():
        folder = run / FOLDERS[name]
        if not (folder / "affinity.pt").is_file():
            command([*python, "wsss.train_affinity", *data, *model, f"seeds={seeds}",
                     f"split={split}", *extra, *args.affinity, f"hydra.run.dir={folder}"],
                    run / f"{folder.name}.log")  # fmt: skip
        metrics = json.loads((folder / "affinity_metrics.json").read_text())
        images = len(lists[split].read_text().split())
        trained[name] = {"seed_photos": images, "seconds": metrics["seconds"],
                         "final_loss": metrics["loss"], "overrides": extra}  # fmt: skip
    overrides = [a for o in data for a in ("--override", o)]
    rows = []
    for file, (network, sets) in WALKS.items():
        path = run / f"{file}.json"
        if not path.is_file():
            affinity = run / FOLDERS[network] / "affinity.pt"
            command([sys.executable, str(REPO / "scripts/tune_walk.py"), "--run",
                     str(run / "masks_defaults"), "--affinity", str(affinity), "--split", "tune",
                     "--bg", str(ABLATION_BG), *[a for s in sets for a in ("--set", s)],
                     "--json", str(path), *overrides],
                    path.with_suffix(".log"))  # fmt: skip
        walked = json.loads(path.read_text())
        for row in walked["rows"]:
            rows.append({"variant": variant(network, row), "network": network, **row})
    figures = {"tune_photos": walked["images"], "networks": trained, "walks": rows}
    print(f"\n{walked['images']} tune photos")
    print(f"| variant | setting | mIoU (bg {ABLATION_BG}, GT-free) | best threshold (on GT) "
          "| walk s/img |")  # fmt: skip
    print("| --- | --- | --- | --- | --- |")
    for row in rows:
        setting = ", ".join(f"{k} {row[k]}" for k in ("beta", "exp_times", "radius") if k in row)
        print(f"| {row['variant']} | {setting} | {row['miou']:.4f} | "
              f"{row['best_threshold_miou']:.4f} ({row['best_threshold']:.2f}) | "
              f"{row['walk_seconds_per_image']:.3f} |")  # fmt: skip
    for name, t in trained.items():
        print(f"network {name}: {t['seed_photos']} seed photos, {t['seconds']:.0f} s, "
              f"final loss {t['final_loss']:.4f}")  # fmt: skip
    print(f"\nfigures: {save_result('irn_ablation', figures, args.json)}")


if __name__ == "__main__":
    main()
