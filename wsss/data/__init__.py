"""Datasets: the folder format, the built-in synthetic dataset, and image reading."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from wsss.data.folder import LabelledSplit, Sample, load_split
from wsss.data.images import load_image, load_label_map, save_label_map
from wsss.data.synthetic import SyntheticSpec, ensure_synthetic_dataset
from wsss.errors import ConfigError

__all__ = [
    "LabelledSplit",
    "Sample",
    "SyntheticSpec",
    "dataset_root",
    "ensure_synthetic_dataset",
    "load_dataset_split",
    "load_image",
    "load_label_map",
    "load_split",
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
    if dataset.name == "folder":
        return Path(dataset.root).expanduser()
    raise ConfigError(f"unknown dataset type {dataset.name!r}")


def load_dataset_split(dataset: Any, split: str, cache_dir: Path) -> LabelledSplit:
    """Load split ``split`` of the dataset described by a ``dataset`` config node."""
    if split not in dataset.splits:
        raise ConfigError(
            f"dataset {dataset.name!r} has no split {split!r}; splits: {sorted(dataset.splits)}"
        )
    root = dataset_root(dataset, cache_dir)
    classes = tuple(dataset.classes) if getattr(dataset, "classes", None) else None
    return load_split(
        root,
        dataset.splits[split],
        class_names=classes,
        images_dir=getattr(dataset, "images_dir", "images"),
        masks_dir=getattr(dataset, "masks_dir", "masks"),
    )
