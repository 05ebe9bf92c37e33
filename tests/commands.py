"""Running the commands as a user does, in subprocesses, at a tiny size: shared by the tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

#: a synthetic dataset, model and training small enough for a test
TINY = [
    "dataset.num_train=24",
    "dataset.num_eval=6",
    "dataset.image_size=48",
    "model.backbone_kwargs.width=8",
    "train.epochs=1",
    "train.batch_size=8",
    "train.crop_size=48",
]
GENERATE_TINY = [*TINY, "cam.scales=[1.0,0.5]", "export.overlays=2"]


def run(
    module: str, *args: str, cwd: Path, cache: Path, expect: int = 0, timeout: int = 600
) -> subprocess.CompletedProcess:
    """``python -m module args`` in ``cwd`` with its own wsss cache; checks the exit status."""
    env = {**os.environ, "WSSS_CACHE": str(cache), "HYDRA_FULL_ERROR": "0"}
    proc = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == expect, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc
