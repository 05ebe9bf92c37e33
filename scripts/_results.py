"""Where benchmark figures go: one JSON file per benchmark under ``results/``, holding the
figures with the command line, git commit, machine and date that made them, so that every
figure in the README can be traced to a file (and checked against it by tests/test_readme.py)."""

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "results"


def _commit() -> str:
    try:
        out = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--", "wsss"],
                               capture_output=True, text=True).stdout.strip()  # fmt: skip
        return out + ("+uncommitted" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpu": cpu, "cores": cores, "python": platform.python_version()}


def save_result(name: str, figures: dict, out: Path | None = None) -> Path:
    """Write ``results/<name>.json`` (or ``out``): the figures and how they were made."""
    path = out or RESULTS / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "benchmark": name,
        "command": " ".join(
            ["python", *[Path(sys.argv[0]).as_posix().split("/wsss/")[-1]], *sys.argv[1:]]
        ),  # fmt: skip
        "commit": _commit(),
        "machine": machine(),
        "date": datetime.date.today().isoformat(),
        "figures": figures,
    }
    path.write_text(json.dumps(record, indent=2) + "\n")
    return path
