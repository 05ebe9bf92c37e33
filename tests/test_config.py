"""Every config group composes and validates against its schema; typos fail naming the key."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from wsss.config import config_dir, register_configs

CONF = Path(config_dir())
GROUPS = sorted(p.name for p in CONF.iterdir() if p.is_dir())


@pytest.fixture(autouse=True)
def hydra_dir():
    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        yield
    GlobalHydra.instance().clear()


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.mark.parametrize(("group", "option"), [(g, o) for g in GROUPS for o in _options(g)])
def test_every_group_option_composes(group, option):
    overrides = [f"{group}={option}"]
    if group == "dataset" and option in ("folder", "voc", "voc_aug"):
        overrides.append("dataset.root=/data/somewhere")
    primary = "train_segmentation" if group == "segmentation" else "generate_masks"
    cfg = compose(config_name=primary, overrides=overrides)
    OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    assert cfg[group] is not None


@pytest.mark.parametrize(
    "name", ["generate_masks", "train", "evaluate", "explain", "train_segmentation"]
)
def test_primary_configs_compose(name):
    cfg = compose(config_name=name)
    assert cfg.dataset.name == "synthetic"


def test_typo_in_a_key_fails_naming_it():
    with pytest.raises(Exception, match="bg_treshold"):
        compose(config_name="generate_masks", overrides=["mask.bg_treshold=0.2"])


def test_wrong_type_fails_naming_the_key():
    with pytest.raises(Exception, match="bg_threshold"):
        compose(config_name="generate_masks", overrides=["mask.bg_threshold=high"])


def test_folder_dataset_requires_a_root():
    cfg = compose(config_name="generate_masks", overrides=["dataset=folder"])
    with pytest.raises(Exception, match="root"):
        OmegaConf.to_container(cfg.dataset, throw_on_missing=True)
