"""``python -m wsss.train``: train the CAM classifier on image-level labels.

Writes ``checkpoint.pt`` (loadable with ``torch.load(..., weights_only=True)``) and
``train_metrics.json`` into the Hydra run folder.
"""

from __future__ import annotations

from pathlib import Path

from wsss import distributed
from wsss.cli import common
from wsss.cli.config import TrainCommand
from wsss.data.screen import BadImages
from wsss.io import write_json
from wsss.models import load_checkpoint


def run(config: TrainCommand, out: Path) -> float:
    device = common.setup_device(config.device, out)
    bad = BadImages(config.on_bad_image)
    if (out / "checkpoint.pt").is_file():  # a finished run with these settings (checked)
        print(f"{out / 'checkpoint.pt'}: already trained with these settings")
        classifier = load_checkpoint(out / "checkpoint.pt")
    else:
        classifier = common.train(config, out / "checkpoint.pt", device, bad)
    val_map = classifier.metrics.get("val_map", float("nan"))
    if not distributed.is_main():
        return val_map
    write_json(out / "train_metrics.json", classifier.metrics)
    if bad.write(out):
        print(f"{len(bad.skipped)} unusable images skipped: {out / 'skipped.json'}")
    print(f"\ncheckpoint: {out / 'checkpoint.pt'}\nvalidation mAP: {val_map:.4f}")
    return val_map


main = common.command("train", finished="checkpoint.pt")(run)
