"""Config schemas: dataclasses that Hydra validates the YAML files and overrides against.

Each YAML file in ``conf/<group>/`` starts from the schema registered here as
``<group>/schema_<name>``, so an unknown key or a value of the wrong type fails at the command
line, naming the key. :func:`register_configs` is called by the entry points (never on
``import wsss``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from wsss.crf import CRFSettings
from wsss.errors import ConfigError
from wsss.segmentation import SegmentationSettings


@dataclass
class SyntheticDatasetConfig:
    name: str = "synthetic"
    #: where the generated dataset lives; null: a folder under ``cache_dir``
    root: str | None = None
    num_train: int = 1600
    num_eval: int = 200
    image_size: int = 128
    seed: int = 0
    splits: dict[str, str] = field(
        default_factory=lambda: {"train": "train.csv", "eval": "eval.csv"}
    )


@dataclass
class FolderDatasetConfig:
    name: str = "folder"
    root: str = MISSING
    #: split name -> labels file (CSV or JSON) relative to ``root``
    splits: dict[str, str] = field(
        default_factory=lambda: {"train": "train.csv", "eval": "eval.csv"}
    )
    #: class names in id order; null: ``root/classes.txt``, else sorted names in the labels file
    classes: list[str] | None = None
    images_dir: str = "images"
    masks_dir: str = "masks"


@dataclass
class VocDatasetConfig:
    name: str = "voc"
    #: the VOC2012 folder (VOCdevkit/VOC2012), see data/README.md
    root: str = MISSING
    #: split name -> split list relative to ``root`` (ids, or DeepLab "image mask" lines)
    splits: dict[str, str] = field(
        default_factory=lambda: {
            "train": "ImageSets/Segmentation/train.txt",
            "eval": "ImageSets/Segmentation/val.txt",
        }
    )
    #: folders searched in order for an image's mask (labels come from it, else from the XML)
    masks_dirs: list[str] = field(default_factory=lambda: ["SegmentationClass"])


@dataclass
class CocoSplitConfig:
    #: both relative to the dataset's ``root`` (or absolute)
    images: str = MISSING
    annotations: str = MISSING


@dataclass
class CocoDatasetConfig:
    name: str = "coco"
    #: the COCO folder; split paths are relative to it
    root: str | None = None
    #: one images folder + instances file used for every split (overrides ``splits``)
    images: str | None = None
    annotations: str | None = None
    splits: dict[str, CocoSplitConfig] = field(
        default_factory=lambda: {
            "train": CocoSplitConfig("train2017", "annotations/instances_train2017.json"),
            "eval": CocoSplitConfig("val2017", "annotations/instances_val2017.json"),
        }
    )


@dataclass
class ModelConfig:
    backbone: str = "smallcnn"
    #: null, a torchvision weight name ("DEFAULT", "IMAGENET1K_V2", ...) or a state-dict path
    pretrained: str | None = None
    backbone_kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainConfig:
    epochs: int = 12
    batch_size: int = 32
    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    schedule: str = "poly"
    poly_power: float = 0.9
    head_lr_mult: float = 1.0
    crop_size: int = 128
    scale_range: list[float] = field(default_factory=lambda: [0.7, 1.3])
    hflip: bool = True
    color_jitter: float = 0.3


@dataclass
class CamConfig:
    #: cam | gradcam | gradcampp | xgradcam | layercam | hirescam | scorecam
    method: str = "cam"
    scales: list[float] = field(default_factory=lambda: [1.0, 0.5, 1.5, 2.0])
    flip: bool = True
    #: dotted name of the feature layer; null: the classifier's backbone output
    target_layer: str | None = None
    #: Score-CAM: masked images per forward pass; keep only the N most active channels
    score_batch_size: int = 16
    top_channels: int | None = None


@dataclass
class MaskConfig:
    #: pixels whose strongest normalised map is below this are background
    bg_threshold: float = 0.15
    #: with a value, pixels between bg_threshold and this are uncertain (255)
    fg_threshold: float | None = None


@dataclass
class CRFConfig(CRFSettings):
    """Dense CRF refinement (every field of :class:`wsss.crf.CRFSettings`), plus the switch and
    the number of worker processes."""

    name: str = "none"  # none | dense
    #: worker processes; 0: all cores
    workers: int = 0


@dataclass
class ExportConfig:
    #: how many images get an overlay picture (evenly spread over the split)
    overlays: int = 16
    #: also write cams/<id>.npz (float16 maps) so evaluate can sweep thresholds later
    save_cams: bool = False
    #: annotations.json: polygons (holes filled) instead of compressed RLE
    polygons: bool = False
    #: one annotation per "class" present in an image, or per connected "component"
    instances: str = "class"


@dataclass
class SegmentationConfig(SegmentationSettings):
    """:class:`wsss.segmentation.SegmentationSettings` as the ``segmentation`` group (its
    ``num_workers`` and ``seed`` come from the command's top-level keys)."""


def register_configs() -> None:
    """Register the schemas with Hydra's ConfigStore (idempotent)."""
    cs = ConfigStore.instance()
    cs.store(group="dataset", name="schema_synthetic", node=SyntheticDatasetConfig)
    cs.store(group="dataset", name="schema_folder", node=FolderDatasetConfig)
    cs.store(group="dataset", name="schema_voc", node=VocDatasetConfig)
    cs.store(group="dataset", name="schema_coco", node=CocoDatasetConfig)
    cs.store(group="model", name="schema", node=ModelConfig)
    cs.store(group="train", name="schema", node=TrainConfig)
    cs.store(group="cam", name="schema", node=CamConfig)
    cs.store(group="mask", name="schema", node=MaskConfig)
    cs.store(group="export", name="schema", node=ExportConfig)
    cs.store(group="crf", name="schema", node=CRFConfig)
    cs.store(group="segmentation", name="schema", node=SegmentationConfig)


def config_dir() -> str:
    """Absolute path of the ``conf/`` folder, however wsss was started.

    ``WSSS_CONFIG_DIR`` overrides it; otherwise it is the ``conf/`` folder beside the package (an
    editable install or a checkout). An absolute path keeps ``python -m wsss.x`` and console
    scripts working from any working directory.
    """
    env = os.environ.get("WSSS_CONFIG_DIR")
    path = Path(env) if env else Path(__file__).resolve().parent.parent / "conf"
    if not (path / "generate_masks.yaml").is_file():
        raise ConfigError(
            f"wsss config folder not found at {path}. Install wsss from its checkout with "
            f"'pip install -e .' or set WSSS_CONFIG_DIR to the repository's conf/ folder."
        )
    return str(path)


def default_cache_dir() -> Path:
    """Where generated datasets and demo classifiers are cached (``WSSS_CACHE`` overrides)."""
    return Path(os.environ.get("WSSS_CACHE", Path.home() / ".cache" / "wsss")).expanduser()
