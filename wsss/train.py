"""``python -m wsss.train``: train the CAM classifier on image-level labels.

Writes ``checkpoint.pt`` (loadable with ``torch.load(..., weights_only=True)``) and
``train_metrics.json`` into the Hydra run folder.
"""

from __future__ import annotations

import logging

import hydra
from omegaconf import DictConfig

from wsss import _cli, distributed
from wsss.config import config_dir, register_configs
from wsss.data.screen import BadImages
from wsss.io import write_json

log = logging.getLogger("wsss.train")
register_configs()


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="train")
@_cli.user_errors_exit
def main(cfg: DictConfig) -> float:
    out = _cli.run_dir()
    device = _cli.setup_device(cfg)
    bad = BadImages(cfg.on_bad_image)
    classifier = _cli.train_and_save(cfg, out / "checkpoint.pt", device, bad)
    val_map = classifier.metrics.get("val_map", float("nan"))
    if not distributed.is_main():
        return val_map
    write_json(out / "train_metrics.json", classifier.metrics)
    if bad.write(out):
        print(f"{len(bad.skipped)} unusable images skipped: {out / 'skipped.json'}")
    print(f"\ncheckpoint: {out / 'checkpoint.pt'}\nvalidation mAP: {val_map:.4f}")
    return val_map


if __name__ == "__main__":
    main()
