"""Choose the background rule without ground truth at use time: fixed threshold vs per-map rules.

Reads the maps a ``generate_masks`` run saved (``export.save_cams=true``), so nothing is
recomputed, and scores the label maps of each rule of ``mask.rule`` against the ground truth:

- ``fixed``: one threshold for every map, swept over ``--thresholds``;
- ``otsu``: per image and class, Otsu's threshold of the map (no parameter);
- ``mass``: per image and class, the value above which the map keeps a ``mass`` share of its
  total, swept over ``--masses``.

Parameters are chosen on the ``--tune`` split and every rule is reported on the ``--report``
split (the defaults must be chosen on one part and reported on another). For VOC, the splits are
those scripts/bench_voc.py writes::

    python scripts/tune_threshold.py --run outputs/bench_voc/masks_defaults \\
        --override dataset=voc --override dataset.root=../shared/voc2012 \\
        --override ++dataset.splits.tune=outputs/bench_voc/lists/tune.txt \\
        --override ++dataset.splits.report=outputs/bench_voc/lists/report.txt
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from _results import save_result  # scripts/, beside this file
from tqdm import tqdm

from wsss.cli.config import compose_config
from wsss.engine.run_folder import RunFolder
from wsss.masks import ThresholdSettings
from wsss.metrics import ConfusionMatrix


def score(rules: dict[str, ThresholdSettings], split, folder: RunFolder) -> dict[str, float]:
    """mIoU of each rule's label maps over ``split``, from the run's saved maps."""
    matrices = {name: ConfusionMatrix(len(split.class_names) + 1) for name in rules}
    for sample in tqdm(split.samples, desc="score rules", unit="img", leave=False):
        truth = split.ground_truth(sample)
        cams = folder.read_maps(sample.image_id, sample.labels)
        for name, rule in rules.items():
            matrices[name].update(rule.label_map(cams, sample.labels), truth)
    return {name: m.miou for name, m in matrices.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, required=True, help="a run with export.save_cams")
    parser.add_argument("--tune", default="tune")
    parser.add_argument("--report", default="report")
    parser.add_argument("--thresholds", default="0.05,0.1,0.15,0.2,0.25,0.3,0.35,0.4,0.45")
    parser.add_argument("--masses", default="0.5,0.6,0.7,0.8,0.9")
    parser.add_argument("--override", action="append", default=[], help="Hydra override")
    parser.add_argument("--json", type=Path, default=None, help="(default: results/)")
    args = parser.parse_args()

    config = compose_config("evaluate", args.override)
    folder = RunFolder(args.run)
    base = ThresholdSettings()
    rules = {
        f"fixed {t}": replace(base, rule="fixed", bg_threshold=float(t))
        for t in args.thresholds.split(",")
    }
    rules["otsu"] = replace(base, rule="otsu")
    for m in args.masses.split(","):
        rules[f"mass {m}"] = replace(base, rule="mass", mass=float(m))
    tune = score(rules, config.dataset.load(args.tune, cache_dir=Path(config.cache_dir)), folder)
    report = score(
        rules, config.dataset.load(args.report, cache_dir=Path(config.cache_dir)), folder
    )

    print(
        f"\nmaps of {folder.root}; parameters chosen on {args.tune!r}, reported on {args.report!r}"
    )
    print(f"| rule | mIoU ({args.tune}) | mIoU ({args.report}) |")
    print("| --- | --- | --- |")
    for name in rules:
        print(f"| {name} | {tune[name]:.4f} | {report[name]:.4f} |")
    for family in ("fixed", "mass"):
        chosen = max((n for n in rules if n.startswith(family)), key=tune.get)
        print(f"{family}: best on {args.tune} is {chosen!r}, {report[chosen]:.4f} on {args.report}")
    print(f"otsu (no parameter): {report['otsu']:.4f} on {args.report}")
    figures = {
        "run": str(folder.root),
        "tune": args.tune,
        "report": args.report,
        "rules": {name: {"tune": tune[name], "report": report[name]} for name in rules},
    }
    print(f"figures: {save_result('tune_threshold', figures, args.json)}")


if __name__ == "__main__":
    main()
