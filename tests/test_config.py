"""Settings are defined once: every config group's schema is the library's settings class, every
key set on the command line reaches the stage that uses it, and typos fail naming the key."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from wsss.cli import common
from wsss.cli.config import config_dir, register_configs, schemas
from wsss.errors import ConfigError
from wsss.masks.crf import CRFSettings
from wsss.models import LoadedClassifier, ModelSpec, create_classifier

CONF = Path(config_dir())
#: config groups that are settings objects (a preset is a bundle of other groups' options)
GROUPS = sorted(p.name for p in CONF.iterdir() if p.is_dir() and p.name != "preset")
COMMANDS = [
    "generate_masks", "train", "evaluate", "explain", "train_segmentation", "train_affinity",
    "export_review",
]  # fmt: skip
TINY_DATA = ["dataset.num_train=24", "dataset.num_eval=6", "dataset.image_size=48"]


@pytest.fixture(autouse=True)
def hydra_dir():
    register_configs()  # as every command and compose_config do; importing wsss does not
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        yield
    GlobalHydra.instance().clear()


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def _primary(group: str) -> str:
    return {"segmentation": "train_segmentation", "affinity": "train_affinity"}.get(
        group, "generate_masks"
    )


def _needs(group: str, option: str) -> list[str]:
    """Overrides an option needs to be complete (a dataset root, a checkpoint)."""
    if option in ("folder", "voc", "voc_aug"):
        return ["dataset.root=/data/somewhere"]
    return ["refine.checkpoint=/models/affinity.pt"] if (group, option) == ("refine", "irn") else []


def config(name: str, *overrides: str) -> Any:
    return common.to_config(compose(config_name=name, overrides=list(overrides)))


@pytest.mark.parametrize(("group", "option"), [(g, o) for g in GROUPS for o in _options(g)])
def test_every_group_option_becomes_its_settings_object(group, option):
    cfg = config(_primary(group), f"{group}={option}", *_needs(group, option))
    settings = getattr(cfg, group)
    if option == "none":  # crf=none, refine=none
        assert settings is None
        return
    assert dataclasses.is_dataclass(settings), f"{group}={option} gave {type(settings)}"
    assert type(settings).__module__.startswith("wsss."), "the schema is the library's class"


def _field_default(f: dataclasses.Field) -> Any:
    if f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
        return dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value
    return f.default


@pytest.mark.parametrize(("group", "option"), [(g, o) for g in GROUPS for o in _options(g)])
def test_group_files_set_only_what_their_option_changes(group, option):
    """A default lives in its dataclass only: a group file that repeated it would keep the old
    value for the CLI when the dataclass (the Python API's default) changes."""
    data = yaml.safe_load((CONF / group / f"{option}.yaml").read_text()) or {}
    schema = [d for d in data.get("defaults", []) if isinstance(d, str) and d.endswith("@_here_")]
    if not schema:  # crf=none, refine=none
        return
    cls = next(c for c in schemas() if c.__name__ == schema[0][1 : -len("@_here_")])
    fields = {f.name: f for f in dataclasses.fields(cls)}
    repeated = [
        key
        for key, value in data.items()
        if key in fields and key not in ("name", "method") and _field_default(fields[key]) == value
    ]
    assert not repeated, f"conf/{group}/{option}.yaml repeats {cls.__name__}'s defaults {repeated}"


def test_the_preset_keeps_every_group_overridable():
    """The preset picks group options, it does not set keys over them: `crf=none` or `cam=cam
    crf=dense` on top of it are what they say (a key set in the preset would survive both)."""
    preset = config("generate_masks", "preset=photos")
    assert (preset.cam.method, preset.cam.max_side) == ("lpcam", 512)  # cam=lpcam512
    assert config("generate_masks", "preset=photos", "cam=lpcam").cam.max_side == 448
    assert preset.crf.high_threshold == 0.4  # crf=dense_lpcam: LPCAM's maps sit higher
    assert config("generate_masks", "preset=photos", "crf=none").crf is None
    plain = config("generate_masks", "preset=photos", "cam=cam", "crf=dense")
    assert plain.crf.high_threshold == CRFSettings().high_threshold == 0.3


@pytest.mark.parametrize("name", COMMANDS)
def test_primary_configs_compose_into_their_command_schema(name):
    cfg = config(name)
    assert type(cfg).__name__.endswith("Command")
    assert getattr(cfg, "dataset", None) is None or cfg.dataset.name == "synthetic"


def _changed(value: Any, name: str, field_type: str) -> Any:
    """A different value of the same kind, that still passes validation."""
    choices = {
        "optimizer": ["sgd", "adamw"],
        "schedule": ["poly", "cosine"],
        "mode": ["label", "soft"],
        "instances": ["class", "component"],
        "probability": ["auto", "sigmoid", "softmax"],
        "model": ["lraspp_mobilenet_v3_large", "deeplabv3_resnet50"],
        "backbone": ["smallcnn", "resnet18"],
        "crop": ["rescale", "resized"],
        "rule": ["fixed", "otsu", "mass"],
        "backend": ["auto", "torch", "openvino", "onnxruntime"],
    }
    if name in choices:
        return next(c for c in choices[name] if c != value)
    if name == "high_threshold":
        return 0.9  # stays above low_threshold
    if name in ("crop_size", "width") and value % 4 == 0:
        return value + 4  # the affinity crop and head width stay multiples of 4
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return round(value * 0.5, 4) if value else 0.25
    if isinstance(value, list):
        return [_changed(v, name, field_type) for v in value] if value else ["boat"]
    if isinstance(value, dict):
        return {k: _changed(v, k, "") for k, v in value.items()}
    if value is None:
        kinds = {"int": 32, "float": 0.5, "list": ["boat"], "str": "backbone", "": 16}
        return next(v for k, v in kinds.items() if k in field_type)  # "": a kwargs entry
    return value + "x"


def _overrides(prefix: str, value: Any) -> list[str]:
    """Command-line overrides setting ``prefix`` to ``value`` (a dict key by key)."""
    if isinstance(value, dict):
        return [o for k, v in value.items() for o in _overrides(f"{prefix}.{k}", v)]
    if isinstance(value, bool):
        text = str(value).lower()
    elif isinstance(value, list):
        text = "[" + ",".join(map(str, value)) + "]"
    else:
        text = str(value)
    return [f"{prefix}={text}"]


#: keys that pick what a settings object is, or where data lives
FIXED = {"name", "method", "root", "splits", "masks_dirs", "images", "annotations", "checkpoint"}


@pytest.mark.parametrize(("group", "option"), [(g, o) for g in GROUPS for o in _options(g)])
def test_every_key_set_on_the_command_line_reaches_the_settings(group, option):
    base = getattr(config(_primary(group), f"{group}={option}", *_needs(group, option)), group)
    if base is None:
        return
    wanted = {
        f.name: _changed(getattr(base, f.name), f.name, str(f.type))
        for f in dataclasses.fields(base)
        if f.name not in FIXED and not dataclasses.is_dataclass(getattr(base, f.name))
    }
    overrides = [o for key, value in wanted.items() for o in _overrides(f"{group}.{key}", value)]
    settings = getattr(
        config(_primary(group), f"{group}={option}", *_needs(group, option), *overrides), group
    )
    assert {key: getattr(settings, key) for key in wanted} == wanted


@pytest.mark.parametrize("name", COMMANDS)
def test_commands_share_each_group_schema(name):
    """A group is the same settings class in every command that has it (checked key by key
    above on one command)."""
    reference = {g: type(getattr(config(_primary(g)), g, None)) for g in GROUPS}
    cfg = config(name)
    for group in GROUPS:
        if hasattr(cfg, group) and getattr(cfg, group) is not None:
            assert type(getattr(cfg, group)) is reference[group] or group == "cam"


class _Reached(Exception):
    """Raised by a patched stage once it has recorded what it was given."""


def _tiny_classifier(*_, **__):
    model = create_classifier(ModelSpec("smallcnn", None, {"width": 4}), 6)
    names = ("disc", "block", "triangle", "star", "cross", "boat")
    return LoadedClassifier(model.eval(), ModelSpec(), names, {}), Path("tiny.pt"), False


def _capture(monkeypatch, module, name: str) -> dict:
    seen: dict = {}

    def stage(*args, **kwargs):
        seen["args"], seen["kwargs"] = args, kwargs
        raise _Reached

    monkeypatch.setattr(module, name, stage)
    return seen


def test_generate_masks_hands_its_groups_to_the_stages_as_they_are(monkeypatch, tmp_path):
    from wsss.cli import generate_masks

    monkeypatch.setattr(common, "classifier_for", _tiny_classifier)
    seen = _capture(monkeypatch, generate_masks, "generate_pseudo_masks")
    cfg = config(
        "generate_masks", *TINY_DATA, "cam=scorecam", "cam.top_channels=8", "crf=dense",
        "mask.fg_threshold=0.4", "export.polygons=true", "batch_size=3", "num_workers=1",
        "predict_labels=0.7", f"cache_dir={tmp_path}",
    )  # fmt: skip
    with pytest.raises(_Reached):
        generate_masks.run(cfg, tmp_path / "out")
    predictor, _, _, export = seen["args"]
    assert predictor.cam is cfg.cam and predictor.cam.top_channels == 8
    assert predictor.threshold is cfg.mask and predictor.crf is cfg.crf and export is cfg.export
    assert predictor.predict_labels == 0.7 and predictor.amp == cfg.amp
    assert seen["kwargs"]["batch_size"] == 3 and seen["kwargs"]["num_workers"] == 1


def test_explain_hands_cam_and_its_settings_to_the_stage(monkeypatch, tmp_path):
    """`explain cam=scorecam cam.top_channels=8` uses 8 channels (its settings used to be
    copied field by field, and top_channels was lost)."""
    from wsss.cli import explain

    monkeypatch.setattr(common, "classifier_for", _tiny_classifier)
    seen = _capture(monkeypatch, explain, "explain")
    cfg = config(
        "explain", *TINY_DATA, "cam=scorecam", "cam.top_channels=8", "cam.score_batch_size=4",
        "top_k=2", "near_margin=0.1", f"cache_dir={tmp_path}",
    )  # fmt: skip
    with pytest.raises(_Reached):
        explain.run(cfg, tmp_path / "out")
    _, _, _, _, cam, settings, _ = seen["args"]
    assert cam is cfg.cam and cam.top_channels == 8 and cam.score_batch_size == 4
    assert settings is cfg and settings.top_k == 2 and settings.near_margin == 0.1


def test_train_hands_its_groups_to_training(monkeypatch, tmp_path):
    from wsss.cli import train

    seen = _capture(monkeypatch, common, "train_and_save")
    cfg = config("train", "train=finetune", "train.lr=0.003", "amp=true", "seed=5")
    with pytest.raises(_Reached):
        train.run(cfg, tmp_path)
    dataset, spec, settings, _ = seen["args"]
    assert dataset is cfg.dataset and spec is cfg.model and settings is cfg.train
    assert settings.lr == 0.003 and seen["kwargs"]["amp"] and seen["kwargs"]["seed"] == 5


def test_train_segmentation_hands_its_group_to_training(monkeypatch, tmp_path):
    from wsss.cli import train_segmentation

    seen = _capture(monkeypatch, train_segmentation, "train_segmentation")
    cfg = config(
        "train_segmentation", *TINY_DATA, "targets=ground_truth", "segmentation.lr=0.5",
        f"cache_dir={tmp_path}",
    )  # fmt: skip
    with pytest.raises(_Reached):
        train_segmentation.run(cfg, tmp_path)
    assert seen["args"][3] is cfg.segmentation and cfg.segmentation.lr == 0.5


def test_a_cam_method_option_reaches_the_maps():
    """The settings object itself computes the maps: its options are used, not copied."""
    from wsss.cams import method_settings

    model = create_classifier(ModelSpec("smallcnn", None, {"width": 4}), 3).eval()
    images = torch.rand(1, 3, 32, 32)
    calls = []
    forward = model.forward

    def counting(x):
        calls.append(len(x))
        return forward(x)

    model.forward = counting
    method_settings("scorecam", top_channels=8, score_batch_size=3).compute(model, images, [[0]])
    assert sum(calls[2:]) <= 8, "at most 8 masked images scored"  # (image, baseline, masked)


def test_typo_in_a_key_fails_naming_it():
    with pytest.raises(Exception, match="bg_treshold"):
        compose(config_name="generate_masks", overrides=["mask.bg_treshold=0.2"])


def test_wrong_type_fails_naming_the_key():
    with pytest.raises(Exception, match="bg_threshold"):
        compose(config_name="generate_masks", overrides=["mask.bg_threshold=high"])
    with pytest.raises(Exception, match="top_channels"):
        compose(config_name="explain", overrides=["cam=scorecam", "cam.top_channels=many"])


def test_an_option_of_another_method_fails():
    with pytest.raises(Exception, match="top_channels"):
        compose(config_name="generate_masks", overrides=["cam=gradcam", "cam.top_channels=8"])


def test_invalid_values_and_missing_roots_are_clear_errors():
    with pytest.raises(ConfigError, match=r"dataset\.root is required"):
        config("generate_masks", "dataset=folder")
    with pytest.raises(ConfigError, match="mask.fg_threshold"):
        config("generate_masks", "mask.fg_threshold=0.05")
    with pytest.raises(ConfigError, match="does not go with"):
        config("generate_masks", "cam=gradcam", "cam.method=scorecam")


def test_help_lists_only_the_options_users_pick():
    proc = subprocess.run(
        [sys.executable, "-m", "wsss.generate_masks", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    groups = proc.stdout.split("== Configuration groups ==")[1].split("== Config ==")[0]
    methods = (
        "cam, gradcam, gradcampp, hirescam, layercam, lpcam, lpcam512, recam, scorecam, xgradcam"
    )
    assert f"cam: {methods}" in groups
    assert "schema" not in groups.lower() and "Settings" not in groups


def test_a_key_added_with_plus_that_no_schema_has_is_refused():
    """Hydra's own hint for a misspelt key is +key=value, which would add a key nothing reads."""
    with pytest.raises(ConfigError, match=r"unknown config key\(s\) \['mask.threshold'\]"):
        config("generate_masks", "+mask.threshold=0.3")
    with pytest.raises(ConfigError, match=r"\['refine.beat'\]"):
        config("generate_masks", "refine=irn", "++refine.beat=5")
    added = config("generate_masks", "dataset=voc", "dataset.root=/x", "++dataset.splits.fit=f")
    assert added.dataset.splits["fit"] == "f", "dict-valued settings take new keys"
