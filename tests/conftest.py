"""Shared fixtures: a tiny synthetic dataset and an isolated wsss cache per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from wsss.data.synthetic import SyntheticSpec, ensure_synthetic_dataset

REPO = Path(__file__).resolve().parent.parent
TINY_SPEC = SyntheticSpec(num_train=48, num_eval=12, image_size=64, seed=3)


@pytest.fixture(autouse=True)
def _isolate(monkeypatch, tmp_path_factory):
    """Keep every test's caches out of the user's home and make runs deterministic."""
    monkeypatch.setenv("WSSS_CACHE", str(tmp_path_factory.getbasetemp() / "wsss-cache"))
    torch.manual_seed(0)
    torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    return ensure_synthetic_dataset(tmp_path_factory.mktemp("datasets"), TINY_SPEC)


@pytest.fixture(scope="session")
def voc_root(tiny_dataset, tmp_path_factory) -> Path:
    from formats import make_voc

    return make_voc(tiny_dataset, tmp_path_factory.mktemp("voc") / "VOC2012")


@pytest.fixture(scope="session")
def coco_root(tiny_dataset, tmp_path_factory) -> Path:
    from formats import make_coco

    return make_coco(tiny_dataset, tmp_path_factory.mktemp("coco"))
