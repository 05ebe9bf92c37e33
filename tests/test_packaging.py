"""wsss installs like a package: a wheel holds every module and config, and a wheel installed in
a fresh virtual environment runs the commands from any folder, by ``python -m`` and by console
script, without the checkout anywhere on the path."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
from commands import GENERATE_TINY
from conftest import REPO


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel built from a copy of the checkout (so the build leaves nothing in it)."""
    source = tmp_path_factory.mktemp("source")
    for name in ("wsss", "conf"):
        shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(REPO / name, source / name)
    dist = tmp_path_factory.mktemp("dist")
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-v",
         "-w", str(dist), str(source)],
        check=True, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    (found,) = dist.glob("wsss-*.whl")
    warnings = [line for line in (build.stdout + build.stderr).splitlines() if "_Warning" in line
                or "Warning:" in line]  # fmt: skip
    assert not warnings, "the build warns:\n" + "\n".join(warnings[:5])
    return found


def test_the_wheel_holds_every_module_and_config(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = {p.relative_to(REPO).as_posix() for p in (REPO / "wsss").rglob("*.py")}
    configs = {"wsss/" + p.relative_to(REPO).as_posix() for p in (REPO / "conf").rglob("*.yaml")}
    assert modules - names == set(), "modules missing from the wheel"
    assert configs - names == set(), "configs missing from the wheel"
    assert "wsss/py.typed" in names and any(n.endswith("licenses/LICENSE") for n in names)
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    scripts = zipfile.ZipFile(wheel).read(entry_points).decode()
    for command in ("train", "generate-masks", "evaluate", "explain", "train-segmentation"):
        assert f"wsss-{command} = " in scripts


def test_a_wheel_in_a_fresh_venv_runs_the_demo_from_another_folder(wheel, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    # The heavy dependencies (torch, ...) come from this environment's site-packages, added as
    # a plain path: its .pth files (the editable install of the checkout) are not processed.
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    Path(purelib, "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
         "--no-index", "-q", str(wheel)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "WSSS_CONFIG_DIR")}
    env["WSSS_CACHE"] = str(tmp_path / "cache")

    def run(*command: str) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            command, cwd=elsewhere, env=env, capture_output=True, text=True, timeout=600
        )
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
        return proc

    where = run(str(python), "-c", "import wsss.cli.config as c; print(c.__file__, c.config_dir())")
    module, configs = where.stdout.split()
    assert module.startswith(str(venv)) and configs.startswith(str(venv)), "all from the wheel"
    run(str(python), "-m", "wsss.generate_masks", *GENERATE_TINY, "hydra.run.dir=by_module")
    run(str(venv / "bin" / "wsss-generate-masks"), *GENERATE_TINY, "hydra.run.dir=by_script")
    for folder in ("by_module", "by_script"):
        summary = json.loads((elsewhere / folder / "summary.json").read_text())
        assert summary["images"] == 6 and 0 <= summary["miou"] <= 1
