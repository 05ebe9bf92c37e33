"""``python -m wsss.evaluate predictions=<generate_masks run folder>``: score masks on disk.

Compares ``<predictions>/masks/<id>.png`` with the dataset's ground truth (255 ignored) and, when
the run saved its maps (``export.save_cams=true``), sweeps the background threshold over them.
Writes ``metrics.json`` (and ``threshold_sweep.png``) into its own run folder.
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
import numpy as np
from omegaconf import DictConfig
from tqdm import tqdm

from wsss import _cli
from wsss.config import config_dir, register_configs
from wsss.data import load_label_map
from wsss.errors import ConfigError, DataError
from wsss.evaluation import ConfusionMatrix, ThresholdSweep
from wsss.io import write_json
from wsss.pipeline import output_path

log = logging.getLogger("wsss.evaluate")
register_configs()


def _load_cams(path: Path, classes: tuple[int, ...]) -> np.ndarray:
    try:
        with np.load(path) as data:
            cams, stored = data["cams"].astype(np.float32), tuple(data["classes"].tolist())
    except (OSError, KeyError, ValueError) as exc:
        raise DataError(f"{path}: unreadable CAM cache file ({exc})") from exc
    if stored != tuple(classes):
        raise DataError(f"{path}: maps are for classes {stored}, the labels say {classes}")
    return cams


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="evaluate")
@_cli.user_errors_exit
def main(cfg: DictConfig) -> float:
    if not cfg.predictions:
        raise ConfigError("predictions=<folder of a generate_masks run> is required")
    pred_dir = Path(cfg.predictions).expanduser()
    if not (pred_dir / "masks").is_dir():
        raise DataError(f"{pred_dir}: no masks/ folder (is this a generate_masks run folder?)")
    split = _cli.load_split(cfg, cfg.split)
    if not split.has_masks:
        raise DataError(f"{split.root}: split {cfg.split!r} has no ground-truth masks")
    num_labels = len(split.class_names) + 1
    confusion = ConfusionMatrix(num_labels)
    has_cams = (pred_dir / "cams").is_dir()
    sweep = ThresholdSweep(num_labels) if has_cams else None
    for sample in tqdm(split.samples, desc="evaluate", unit="img"):
        gt = split.ground_truth(sample)
        pred = load_label_map(output_path(pred_dir, "masks", sample.image_id, ".png"), gt.shape)
        confusion.update(pred, gt)
        if sweep is not None:
            cams = _load_cams(output_path(pred_dir, "cams", sample.image_id, ".npz"), sample.labels)
            sweep.update(cams, sample.labels, gt)

    out = _cli.run_dir()
    metrics = {"predictions": str(pred_dir), "masks_on_disk": confusion.summary(split.class_names)}
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


if __name__ == "__main__":
    main()
