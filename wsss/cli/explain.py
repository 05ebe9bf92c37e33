"""``python -m wsss.explain``: what a classifier looks at, and whether it learned a shortcut.

Explains a wsss checkpoint (default: the demo classifier), any torchvision classifier
(``torchvision_model=resnet50 weights=DEFAULT``) or any timm classifier (``timm_model=...``,
with the ``timm`` extra) on an image, a folder, or a dataset split.
Writes ``figures/``, ``explain.json`` and ``report.html`` into the run folder.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from wsss.cli import common
from wsss.cli.config import ExplainCommand
from wsss.data.image_items import image_files, items_from_files, items_from_split
from wsss.data.screen import BadImages
from wsss.devices import resolve_device
from wsss.engine.explanation import explain
from wsss.errors import ConfigError
from wsss.models import timm_classifier, torchvision_classifier


def run(config: ExplainCommand, out: Path) -> dict:
    device = resolve_device(config.device)
    cam = config.cam
    if config.torchvision_model and config.timm_model:
        raise ConfigError("give torchvision_model= or timm_model=, not both")
    if config.torchvision_model or config.timm_model:
        if config.timm_model:
            model, class_names, layer = timm_classifier(config.timm_model, config.weights)
        else:
            model, class_names, layer = torchvision_classifier(
                config.torchvision_model, config.weights
            )
        layer = cam.target_layer or layer
        if layer is None:
            raise ConfigError("set cam.target_layer= to the feature layer to explain")
        cam = replace(cam, target_layer=f"model.{layer}")  # inside the normalising wrapper
    else:
        classifier, _, _ = common.classifier_for(config, device, BadImages(config.on_bad_image))
        model, class_names = classifier.model, classifier.class_names
    if config.images:
        files = image_files(Path(config.images).expanduser())[: config.limit]
        items = items_from_files(files, config.image_size, cam.max_side)
        total = len(files)
    else:
        split = common.load_split(config, config.split)
        if tuple(split.class_names) != tuple(class_names):
            raise ConfigError("the classifier's classes differ from the dataset's; pass images=")
        split = replace(split, samples=split.samples[: config.limit])
        items = items_from_split(split, config.image_size, cam.max_side)
        total = len(split)
    summary = explain(model, items, class_names, out, cam, config, device, total=total)
    flagged = summary["likely_shortcuts"]
    print(f"\nexplained {summary['images']} images with {cam.method}")
    if summary["shortcut_rule"] != "needs ground-truth masks":
        print("likely shortcut learners: " + (", ".join(flagged) if flagged else "none"))
    print(f"report: {out / 'report.html'}\nmetrics: {out / 'explain.json'}")
    return summary


main = common.command("explain")(run)
