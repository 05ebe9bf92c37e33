"""Datasets: the folder format, VOC 2012 (+SBD), COCO, the built-in synthetic dataset, and image
reading."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from wsss.data.coco import load_coco_split
from wsss.data.folder import LabelledSplit, Sample, load_split
from wsss.data.images import load_image, load_label_map, save_label_map
from wsss.data.synthetic import SyntheticSpec, ensure_synthetic_dataset
from wsss.data.voc import VOC_CLASSES, load_voc_split
from wsss.errors import ConfigError

__all__ = [
    "LabelledSplit",
    "Sample",
    "SyntheticSpec",
    "VOC_CLASSES",
    "dataset_root",
    "ensure_synthetic_dataset",
    "load_dataset_split",
    "load_image",
    "load_label_map",
    "load_coco_split",
    "load_split",
    "load_voc_split",
    "save_label_map",
]


def dataset_root(dataset: Any, cache_dir: Path) -> Path:
    """The folder of the configured dataset, generating the synthetic one first if needed."""
    if dataset.name == "synthetic":
        spec = SyntheticSpec(
            num_train=dataset.num_train,
            num_eval=dataset.num_eval,
            image_size=dataset.image_size,
            seed=dataset.seed,
        )
        base = Path(dataset.root).expanduser() if dataset.root else cache_dir / "datasets"
        return ensure_synthetic_dataset(base, spec)
    if dataset.name in ("folder", "voc", "coco"):
        return Path(dataset.root or ".").expanduser()
    raise ConfigError(f"unknown dataset type {dataset.name!r}")


def _coco_paths(dataset: Any, split: str) -> tuple[Path, Path]:
    if dataset.images or dataset.annotations:
        if not (dataset.images and dataset.annotations):
            raise ConfigError("dataset.images and dataset.annotations must be given together")
        return Path(dataset.images), Path(dataset.annotations)
    if not dataset.root:
        raise ConfigError(
            "dataset=coco needs dataset.root=<COCO folder> or dataset.images=<folder> "
            "dataset.annotations=<instances json>"
        )
    root = Path(dataset.root).expanduser()
    paths = dataset.splits[split]
    return root / paths.images, root / paths.annotations


def load_dataset_split(
    dataset: Any, split: str, cache_dir: Path, allow_unlabelled: bool = False
) -> LabelledSplit:
    """Load split ``split`` of the dataset described by a ``dataset`` config node.

    ``allow_unlabelled`` lets a folder dataset list images without labels (for
    ``predict_labels``); other formats always have labels.
    """
    if dataset.name == "coco" and dataset.images:
        return load_coco_split(*_coco_paths(dataset, split))
    if split not in dataset.splits:
        raise ConfigError(
            f"dataset {dataset.name!r} has no split {split!r}; splits: {sorted(dataset.splits)}"
        )
    if dataset.name == "coco":
        return load_coco_split(*_coco_paths(dataset, split))
    root = dataset_root(dataset, cache_dir)
    if dataset.name == "voc":
        return load_voc_split(root, dataset.splits[split], masks_dirs=tuple(dataset.masks_dirs))
    classes = tuple(dataset.classes) if getattr(dataset, "classes", None) else None
    return load_split(
        root,
        dataset.splits[split],
        class_names=classes,
        images_dir=getattr(dataset, "images_dir", "images"),
        masks_dir=getattr(dataset, "masks_dir", "masks"),
        allow_unlabelled=allow_unlabelled,
    )
