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


#: tests that may skip even under WSSS_STRICT_SKIPS=1 (``.ci/run`` sets it), each with why.
#: Empty: on CI every optional piece is installed (pydensecrf2 builds on its Python, .[dev] brings
#: timm, the Lite0 weights, OpenVINO, ONNX Runtime and Playwright, and .ci/run installs Debian's
#: chromium), so any skip there means a test silently stopped testing.
ALLOWED_SKIPS: dict[str, str] = {}
_skipped: list[str] = []


def pytest_runtest_logreport(report):
    if report.skipped and not hasattr(report, "wasxfail"):
        _skipped.append(report.nodeid)


def pytest_sessionfinish(session, exitstatus):
    """With WSSS_STRICT_SKIPS=1, a skip that is not on ALLOWED_SKIPS fails the run."""
    unexpected = [n for n in _skipped if n not in ALLOWED_SKIPS]
    if os.environ.get("WSSS_STRICT_SKIPS") == "1" and unexpected and exitstatus == 0:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(
                f"WSSS_STRICT_SKIPS: {len(unexpected)} tests skipped that are not on "
                f"tests/conftest.py's ALLOWED_SKIPS: {', '.join(unexpected)}", red=True
            )  # fmt: skip
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
