"""``python -m wsss.explain``: what a classifier looks at, and whether it learned a shortcut.

Explains a wsss checkpoint (default: the demo classifier), any torchvision classifier
(``torchvision_model=resnet50 weights=DEFAULT``) or any timm classifier (``timm_model=...``,
with the ``timm`` extra) on an image, a folder, or a dataset split.
Writes ``figures/``, ``explain.json`` and ``report.html`` into the run folder.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import hydra
import numpy as np
import torch
import torchvision
from omegaconf import DictConfig
from PIL import Image
from torch import nn

from wsss import _cli
from wsss.config import config_dir, register_configs
from wsss.data import load_image
from wsss.data.screen import BadImages
from wsss.errors import ConfigError, DataError, MissingDependencyError
from wsss.explanation import ExplainItem, ExplainSettings, explain
from wsss.models.backbones import load_state_dict_file

log = logging.getLogger("wsss.explain")
register_configs()

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


class Normalized(nn.Module):
    """A torchvision classifier that takes RGB in [0, 1], like wsss classifiers."""

    def __init__(self, model: nn.Module, mean, std):
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model((x - self.mean) / self.std)


def torchvision_classifier(name: str, weights: str | None) -> tuple[nn.Module, list[str]]:
    """A torchvision classifier and its class names (from the weight enum, known offline)."""
    try:
        enum = torchvision.models.get_model_weights(name)
    except (ValueError, KeyError):
        raise ConfigError(f"unknown torchvision model {name!r}") from None
    names = list(enum.DEFAULT.meta["categories"])
    if weights and Path(weights).suffix in (".pt", ".pth"):
        model = torchvision.models.get_model(name)
        model.load_state_dict(load_state_dict_file(weights))
    elif weights:
        member = enum.DEFAULT if weights == "DEFAULT" else enum[weights]
        names = list(member.meta["categories"])
        try:
            model = torchvision.models.get_model(name, weights=member)
        except (OSError, RuntimeError) as exc:
            raise ConfigError(
                f"could not download {name} weights {member} ({exc}); pass weights=/path/to.pth"
            ) from exc
    else:
        model = torchvision.models.get_model(name)  # random weights: for tests
    return Normalized(model, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)), names


def timm_classifier(name: str, weights: str | None) -> tuple[nn.Module, list[str], str]:
    """A timm classifier, its class names, and its last feature layer (from ``feature_info``).

    ``weights``: "DEFAULT" (timm's pretrained weights, downloaded once), a local checkpoint
    file, or null (random weights).
    """
    try:
        import timm
        from timm.data import ImageNetInfo
    except ImportError as exc:
        raise MissingDependencyError("timm models need timm: pip install -e '.[timm]'") from exc
    checkpoint = weights if weights and Path(weights).suffix in (".pt", ".pth") else ""
    try:
        model = timm.create_model(name, pretrained=weights == "DEFAULT", checkpoint_path=checkpoint)
    except RuntimeError as exc:  # unknown model name, unreachable hub, bad checkpoint
        raise ConfigError(f"timm model {name!r}: {exc}") from exc
    if model.num_classes == 1000:
        info = ImageNetInfo()
        names = [info.index_to_description(i).split(",")[0] for i in range(1000)]
    else:
        names = [f"class_{i}" for i in range(model.num_classes)]
    layer = model.feature_info[-1]["module"]
    config = model.pretrained_cfg
    return Normalized(model, config["mean"], config["std"]), names, layer


def _resized(image: np.ndarray, long_side: int | None) -> np.ndarray:
    if not long_side:
        return image
    h, w = image.shape[:2]
    scale = long_side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR))


def image_items(path: Path) -> list[tuple[str, Path]]:
    """(image id, file) for an image file, or for every image under a folder."""
    if path.is_file():
        return [(path.stem, path)]
    if not path.is_dir():
        raise DataError(f"{path}: no such image or folder")
    files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataError(f"{path}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) found")
    return [(p.relative_to(path).with_suffix("").as_posix(), p) for p in files]


def _items(cfg: DictConfig, class_names) -> tuple[Iterator[ExplainItem], int]:
    limit = cfg.limit
    if cfg.images:
        files = image_items(Path(cfg.images).expanduser())[:limit]
        items = (
            ExplainItem(image_id, _resized(load_image(p), cfg.image_size)) for image_id, p in files
        )
        return items, len(files)
    split = _cli.load_split(cfg, cfg.split)
    if tuple(split.class_names) != tuple(class_names):
        raise ConfigError("the classifier's classes differ from the dataset's; pass images=")
    samples = split.samples[:limit]

    def read(sample):
        image = load_image(sample.image_path)
        mask = split.ground_truth(sample, image.shape[:2]) if split.has_masks else None
        if cfg.image_size:  # masks follow the image, by nearest neighbour
            image = _resized(image, cfg.image_size)
            if mask is not None:
                mask = np.asarray(Image.fromarray(mask).resize(image.shape[1::-1], Image.NEAREST))
        return ExplainItem(sample.image_id, image, sample.labels, mask)

    return (read(s) for s in samples), len(samples)


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="explain")
@_cli.user_errors_exit
def main(cfg: DictConfig) -> dict:
    device = _cli.resolve_device(cfg.device)
    target_layer = cfg.cam.target_layer
    if cfg.torchvision_model and cfg.timm_model:
        raise ConfigError("give torchvision_model= or timm_model=, not both")
    if cfg.torchvision_model or cfg.timm_model:
        if cfg.timm_model:
            model, class_names, default_layer = timm_classifier(cfg.timm_model, cfg.weights)
        else:
            model, class_names = torchvision_classifier(cfg.torchvision_model, cfg.weights)
            default_layer = "layer4" if hasattr(model.model, "layer4") else None
        probability = "softmax"
        inner = target_layer or default_layer
        if inner is None:
            raise ConfigError("set cam.target_layer= to the feature layer to explain")
        target_layer = f"model.{inner}"
    else:
        classifier, _, _ = _cli.classifier_for(cfg, device, BadImages(cfg.on_bad_image))
        model, class_names, probability = classifier.model, classifier.class_names, "sigmoid"
    if cfg.probability != "auto":
        probability = cfg.probability
    unknown = [c for c in cfg.classes if c not in class_names]
    if unknown:
        raise ConfigError(f"unknown class name(s) {unknown} in classes=")
    settings = ExplainSettings(
        method=cfg.cam.method,
        target_layer=target_layer,
        scales=tuple(cfg.cam.scales),
        flip=cfg.cam.flip,
        top_k=cfg.top_k,
        extra_classes=tuple(class_names.index(c) for c in cfg.classes),
        probability=probability,
        pointing_tolerance=cfg.pointing_tolerance,
        iou_threshold=cfg.iou_threshold,
        near_margin=cfg.near_margin,
        shortcut_energy=cfg.shortcut_energy,
        context_reliance=cfg.context_reliance,
        figures=cfg.figures,
    )
    items, total = _items(cfg, class_names)
    out = _cli.run_dir()
    summary = explain(model, items, class_names, out, settings, device, total=total)
    flagged = summary["likely_shortcuts"]
    print(f"\nexplained {summary['images']} images with {settings.method}")
    if summary["shortcut_rule"] != "needs ground-truth masks":
        print("likely shortcut learners: " + (", ".join(flagged) if flagged else "none"))
    print(f"report: {out / 'report.html'}\nmetrics: {out / 'explain.json'}")
    return summary


if __name__ == "__main__":
    main()
