"""``python -m wsss.train_affinity seeds=<generate_masks run>``: IRN's boundary network.

Trains the boundary heads on the frozen backbone of the classifier (``checkpoint=``, or the one
trained and cached as configured) from the CRF seeds of a ``generate_masks`` run of ``split``
(made with ``crf=dense``, label mode). Writes ``affinity.pt`` (``weights_only=True``) and
``affinity_metrics.json``; generate with ``refine=irn refine.checkpoint=<run>/affinity.pt``.
"""

from __future__ import annotations

from pathlib import Path

from wsss import distributed
from wsss.cli import common
from wsss.cli.config import TrainAffinityCommand
from wsss.data.screen import BadImages
from wsss.engine.boundary_training import train_boundary_net
from wsss.engine.segmentation import MaskTargets, check_mask_targets
from wsss.errors import ConfigError
from wsss.io import write_json
from wsss.models.boundary import save_boundary_net


def run(config: TrainAffinityCommand, out: Path) -> float:
    if not config.seeds:
        raise ConfigError("seeds=<generate_masks run folder of the split, made with crf=dense>")
    device = common.setup_device(config.device, out)
    bad = BadImages(config.on_bad_image)
    classifier, _, _ = common.classifier_for(config, device, bad)
    split = bad.screen(common.load_split(config, config.split))
    seeds = MaskTargets(Path(config.seeds).expanduser())
    check_mask_targets(split, seeds)
    net, metrics = train_boundary_net(
        classifier.model,
        split,
        seeds,
        config.affinity,
        device,
        num_workers=config.num_workers,
        seed=config.seed,
    )
    if distributed.is_main():
        save_boundary_net(
            out / "affinity.pt", net, classifier.spec, classifier.class_names, metrics
        )
        write_json(out / "affinity_metrics.json", metrics)
        print(f"\naffinity checkpoint: {out / 'affinity.pt'} (final loss {metrics['loss']:.4f})")
    distributed.barrier()
    return metrics["loss"]


main = common.command("train_affinity")(run)
