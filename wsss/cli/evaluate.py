"""``python -m wsss.evaluate predictions=<generate_masks run folder>``: score masks on disk.

Compares the run's label PNGs with the dataset's ground truth (255 ignored) and, when the run
saved its maps (``export.save_cams=true``), sweeps the background threshold over them. Writes
``metrics.json`` (and ``threshold_sweep.png``) into its own run folder.
"""

from __future__ import annotations

from pathlib import Path

from wsss.cli import common
from wsss.cli.config import EvaluateCommand
from wsss.engine.evaluation import evaluate_run
from wsss.errors import ConfigError
from wsss.io import write_json


def run(config: EvaluateCommand, out: Path) -> float:
    if not config.predictions:
        raise ConfigError("predictions=<folder of a generate_masks run> is required")
    split = common.load_split(config, config.split)
    confusion, sweep = evaluate_run(Path(config.predictions).expanduser(), split)
    metrics = {
        "predictions": config.predictions,
        "masks_on_disk": confusion.summary(split.class_names),
    }
    lines = [
        f"mIoU of the masks on disk:         {confusion.miou:.4f}",
        f"uncertain (255) pixels:            {int(confusion.uncertain_by_gt.sum())} "
        f"({100 * confusion.uncertain_fraction:.2f}%), scored as background above",
        f"mIoU on confident pixels only:     {confusion.miou_confident:.4f}",
    ]
    if sweep is not None:
        best_t, best_m = sweep.best
        metrics["threshold_sweep"] = sweep.summary()
        sweep.save_plot(out / "threshold_sweep.png")
        lines.append(
            f"mIoU at the best swept threshold:  {best_m:.4f} at {best_t:.2f} "
            "(tuned on ground truth)"
        )
    else:
        lines.append("no cams/ in the predictions (generate with export.save_cams=true to sweep)")
    write_json(out / "metrics.json", metrics)
    print("\n".join(["", *lines, f"metrics: {out / 'metrics.json'}"]))
    return confusion.miou


main = common.command("evaluate")(run)
