"""The configuration schema of every command, and where the YAML files are.

Each config group's schema is the library's own settings class (``cam`` -> a
:class:`~wsss.cams.CamSettings` subclass, ``crf`` -> :class:`~wsss.masks.CRFSettings`, ...);
every YAML file in ``conf/<group>/`` names its class in its defaults list
(``- /ScoreCam@_here_``), and each command's primary config starts from its schema below. So
Hydra checks every key and type at the command line, and ``OmegaConf.to_object`` turns the
composed config into these objects, which the commands hand to the library as they are.

The schemas are registered under their class names, outside any config group, so that
``--help`` lists only the options users pick.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue

from wsss.cams import CAM_METHODS, CamSettings
from wsss.data import DATASETS, DatasetSettings
from wsss.engine.boundary_training import AffinitySettings
from wsss.engine.explanation import ExplainSettings
from wsss.engine.segmentation import SegmentationSettings
from wsss.engine.training import TrainSettings
from wsss.errors import ConfigError
from wsss.export import ExportSettings
from wsss.masks import REFINERS, CRFSettings, RefineSettings, ThresholdSettings
from wsss.models import ModelSpec


@dataclass
class Runtime:
    """Keys every command has: how it runs, not what it computes."""

    device: str = "cpu"  # cpu | cuda | cuda:N | auto
    num_workers: int = 0  # DataLoader workers reading images
    seed: int = 0
    #: generated datasets and demo classifiers are cached here
    cache_dir: str = MISSING


@dataclass
class TrainCommand(Runtime):
    """``python -m wsss.train``."""

    dataset: DatasetSettings = MISSING
    model: ModelSpec = MISSING
    train: TrainSettings = MISSING
    train_split: str = "train"
    val_split: str | None = "eval"  # null: no validation
    amp: bool = False  # mixed precision: float16 on CUDA, bfloat16 on the CPU
    on_bad_image: str = "error"  # error | skip (listed in skipped.json)


@dataclass
class ClassifierCommand(TrainCommand):
    """A command that uses a classifier: ``checkpoint``, or one trained as configured (and
    cached) when it is null."""

    checkpoint: str | None = None


@dataclass
class GenerateMasksCommand(ClassifierCommand):
    """``python -m wsss.generate_masks``."""

    cam: CamSettings = MISSING
    mask: ThresholdSettings = MISSING
    refine: RefineSettings | None = None
    crf: CRFSettings | None = None
    export: ExportSettings = MISSING
    split: str = "eval"  # the split to label; its masks, when present, score the result
    batch_size: int = 8  # images per forward pass (images of equal size are batched)
    #: images listed without labels get the classes the classifier predicts with at least this
    #: probability (null: an image without labels is an error)
    predict_labels: float | None = None
    #: keep each image's maps in cache_dir/maps, so a rerun that changes only the rule, the
    #: background score, the CRF or the export does not recompute them
    cache_maps: bool = False
    #: refine=irn without a checkpoint: the CRF that makes the seeds of the train split, and how
    #: the boundary network trains on them
    irn_seeds: CRFSettings = MISSING
    affinity: AffinitySettings = MISSING


@dataclass
class ExplainCommand(ExplainSettings, ClassifierCommand):
    """``python -m wsss.explain``: the :class:`ExplainSettings` keys, plus what to explain and
    what on."""

    cam: CamSettings = MISSING
    #: a torchvision or timm classifier by name instead of a wsss checkpoint
    torchvision_model: str | None = None
    timm_model: str | None = None
    #: their weights: a weight name (DEFAULT: the library's pretrained ones), a .pth, or null
    weights: str | None = "DEFAULT"
    images: str | None = None  # an image file or a folder (null: the dataset's split)
    split: str = "eval"
    limit: int | None = None  # explain only the first N images
    image_size: int | None = None  # resize so the long side is this many pixels


@dataclass
class TrainAffinityCommand(ClassifierCommand):
    """``python -m wsss.train_affinity``."""

    affinity: AffinitySettings = MISSING
    seeds: str | None = None  # a generate_masks run folder (crf=dense, label mode) of `split`
    split: str = "train"


@dataclass
class ExportCommand:
    """``python -m wsss.export``: a run's masks and COCO file after review."""

    predictions: str | None = None  # a generate_masks run folder
    rejected: str | None = None  # rejected.json saved by its report.html
    min_quality: float | None = None  # also leave out annotations estimated below this


@dataclass
class EvaluateCommand:
    """``python -m wsss.evaluate``."""

    dataset: DatasetSettings = MISSING
    predictions: str | None = None  # a generate_masks run folder
    split: str = "eval"
    cache_dir: str = MISSING


@dataclass
class TrainSegmentationCommand(Runtime):
    """``python -m wsss.train_segmentation``."""

    dataset: DatasetSettings = MISSING
    segmentation: SegmentationSettings = MISSING
    pseudo_masks: str | None = None  # a generate_masks run folder
    targets: str = "masks"  # masks | coco | ground_truth
    rejected: str | None = None  # rejected.json of the run's review page: left out
    train_split: str = "train"
    eval_split: str = "eval"
    # also score the model on train_split against its ground truth: does training on the masks
    # clean them? (compare with wsss.evaluate of the masks on the same split)
    score_train: bool = False


COMMANDS = (
    TrainCommand,
    GenerateMasksCommand,
    ExplainCommand,
    EvaluateCommand,
    TrainSegmentationCommand,
    TrainAffinityCommand,
    ExportCommand,
)
GROUP_SCHEMAS = (
    ModelSpec,
    TrainSettings,
    ThresholdSettings,
    CRFSettings,
    ExportSettings,
    SegmentationSettings,
    AffinitySettings,
)


def schemas() -> list[type]:
    """Every class registered with Hydra: commands, groups, and the registries' entries."""
    classes = [*COMMANDS, *GROUP_SCHEMAS]
    for registry in (DATASETS, CAM_METHODS, REFINERS):
        classes += [cls for _, cls in registry.items()]
    return list(dict.fromkeys(classes))


def register_configs() -> None:
    """Register the schemas with Hydra's ConfigStore under their class names (idempotent)."""
    store = ConfigStore.instance()
    for cls in schemas():
        store.store(name=cls.__name__, node=cls)


def config_dir() -> str:
    """Absolute path of the YAML configs, however wsss was installed.

    ``WSSS_CONFIG_DIR`` overrides it; otherwise ``wsss/conf/`` inside an installed wheel, or the
    checkout's top-level ``conf/`` (a source tree or an editable install). An absolute path
    keeps ``python -m wsss.<command>`` and the console scripts working from any folder.
    """
    package = Path(__file__).resolve().parent.parent
    candidates = [package / "conf", package.parent / "conf"]
    if os.environ.get("WSSS_CONFIG_DIR"):
        candidates = [Path(os.environ["WSSS_CONFIG_DIR"])]
    for path in candidates:
        if (path / "generate_masks.yaml").is_file():
            return str(path)
    raise ConfigError(
        f"wsss config folder not found (looked in {[str(p) for p in candidates]}); reinstall "
        "wsss, or set WSSS_CONFIG_DIR to a copy of the repository's conf/ folder"
    )


def compose_config(name: str, overrides: list[str] | tuple[str, ...] = ()) -> Any:
    """Command ``name``'s config with ``overrides`` (``key=value`` strings), as its schema's
    objects: the config a command would run with, for scripts and notebooks."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return to_config(compose(config_name=name, overrides=list(overrides)))


def to_config(cfg: DictConfig) -> Any:
    """The composed config as its schema's objects (``OmegaConf.to_object``), every settings
    object in it validated; a missing mandatory value is reported as the key to set, and a key
    that no schema has (``+mask.threshold=0.3``: Hydra adds it, and nothing would read it) is
    refused."""
    unknown = _unknown_keys(cfg)
    if unknown:
        raise ConfigError(
            f"unknown config key(s) {unknown}: no setting has that name, so it would be ignored "
            "(see --help, or --cfg job for every key)"
        )
    try:
        config = OmegaConf.to_object(cfg)
    except MissingMandatoryValue as exc:
        raise ConfigError(f"{exc.full_key} is required: pass {exc.full_key}=...") from None
    validate(config)
    return config


def _unknown_keys(node: Any, prefix: str = "") -> list[str]:
    """Keys of ``node`` (and its children) that the schema they belong to does not have."""
    if not isinstance(node, DictConfig):
        return []
    schema = OmegaConf.get_type(node)
    fields = (
        {f.name for f in dataclasses.fields(schema)} if dataclasses.is_dataclass(schema) else None
    )
    unknown = []
    for key in node:
        path = f"{prefix}{key}"
        if fields is not None and key not in fields and key != "hydra":
            unknown.append(path)
            continue
        unknown += _unknown_keys(node._get_node(key), f"{path}.")
    return unknown


def validate(settings: Any) -> None:
    """Call ``validate()`` on ``settings`` and on every dataclass nested in it that has one."""
    if not dataclasses.is_dataclass(settings):
        return
    if hasattr(settings, "validate"):
        settings.validate()
    for f in dataclasses.fields(settings):
        validate(getattr(settings, f.name))
