"""The layout of a ``generate_masks`` run folder, and the records that make a run resumable.

    <run>/
      masks/<id>.png        label PNG per image (VOC palette; 0 bg, 1..K, 255 uncertain)
      annotations.json      COCO instances file
      overlays/<id>.png     overlay pictures of a sample of images, and contact_sheet.png
      cams/<id>.npz         (export.save_cams) float16 normalised maps and their classes
      thumbs/<id>.jpg       (export.quality) the review page's thumbnails
      report.html           (export.quality) the review page, and report_data.js its data
      records/<id>.json     one small record per finished image (below)
      run.json              what determines the outputs (settings, classifier digest, split)
      metrics.json, threshold_sweep.png, summary.json, skipped.json, crf_failures.json

``generate_pseudo_masks`` writes an image's record (atomically) after its mask: its COCO image
entry and annotations, its score contributions (sparse confusion counts), and any skip or CRF
failure. A rerun skips images that have a record; ranks under ``torchrun`` write records for
their own images. The run's files are then built from the records in split order, so a resumed
or sharded run writes exactly what one uninterrupted process would. ``run.json`` holds the
settings the records were made with; a rerun with other settings is refused instead of mixing
two runs. Every id-derived path is checked to stay inside its folder.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import time
import zipfile
from pathlib import Path

from PIL import Image

from wsss.errors import ConfigError
from wsss.io import create_temporary_file, output_path, write_json

log = logging.getLogger(__name__)


class RunFolder:
    """Paths of one run folder; nothing is created until asked (``create=True``)."""

    MASKS, CAMS, OVERLAYS, RECORDS, THUMBS = "masks", "cams", "overlays", "records", "thumbs"

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"RunFolder({str(self.root)!r})"

    # Per-image files, under their folder whatever the image id.
    def mask(self, image_id: str, create: bool = False) -> Path:
        return output_path(self.root, self.MASKS, image_id, ".png", create)

    def cams(self, image_id: str, create: bool = False) -> Path:
        return output_path(self.root, self.CAMS, image_id, ".npz", create)

    def overlay(self, image_id: str, create: bool = False) -> Path:
        return output_path(self.root, self.OVERLAYS, image_id, ".png", create)

    def record(self, image_id: str, create: bool = False) -> Path:
        return output_path(self.root, self.RECORDS, image_id, ".json", create)

    def thumb(self, image_id: str, create: bool = False) -> Path:
        return output_path(self.root, self.THUMBS, image_id, ".jpg", create)

    # Run-level files.
    @property
    def masks_dir(self) -> Path:
        return self.root / self.MASKS

    @property
    def cams_dir(self) -> Path:
        return self.root / self.CAMS

    @property
    def annotations(self) -> Path:
        return self.root / "annotations.json"

    @property
    def contact_sheet(self) -> Path:
        return self.root / self.OVERLAYS / "contact_sheet.png"

    @property
    def report(self) -> Path:
        return self.root / "report.html"

    @property
    def report_data(self) -> Path:
        return self.root / "report_data.js"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.json"

    @property
    def sweep_plot(self) -> Path:
        return self.root / "threshold_sweep.png"

    @property
    def summary(self) -> Path:
        return self.root / "summary.json"

    @property
    def skipped(self) -> Path:
        return self.root / "skipped.json"

    @property
    def crf_failures(self) -> Path:
        return self.root / "crf_failures.json"

    @property
    def settings(self) -> Path:
        return self.root / "run.json"

    # Records.
    def has_record(self, image_id: str) -> bool:
        return self.record(image_id).is_file()

    def write_record(self, image_id: str, record: dict) -> None:
        write_json(self.record(image_id, create=True), record)

    def read_record(self, image_id: str) -> dict:
        return json.loads(self.record(image_id).read_text())

    def finished_images(self) -> int:
        """How many images have a record of finished work (skipped images do not count)."""
        records = self.root / self.RECORDS
        count = 0
        for path in records.rglob("*.json") if records.is_dir() else ():
            try:
                count += "skipped" not in json.loads(path.read_text())
            except (OSError, ValueError):
                continue  # a damaged record is no finished work
        return count

    def check_record(self, image_id: str, with_cams: bool = False) -> str | None:
        """What is wrong with an image's record and the files it vouches for (its mask, and its
        maps when ``with_cams``), or None when they are sound."""
        try:
            record = self.read_record(image_id)
        except (OSError, ValueError) as exc:
            return f"unreadable record ({exc})"
        if not isinstance(record, dict) or not ({"image", "skipped"} & set(record)):
            return "record without an image entry"
        if "skipped" in record:
            return None
        paths = [self.mask(image_id)] + ([self.cams(image_id)] if with_cams else [])
        for path in paths:
            try:
                if path.suffix == ".npz":
                    with zipfile.ZipFile(path) as archive:
                        broken = archive.testzip()
                    if broken is not None:
                        return f"damaged maps {path} ({broken})"
                else:
                    with Image.open(path) as img:
                        img.load()
            except (OSError, ValueError, zipfile.BadZipFile, SyntaxError) as exc:
                return f"missing or damaged {path} ({exc})"
        return None

    def check_settings(self, fingerprint: dict) -> bool:
        """Write ``run.json``, or check it against ``fingerprint``; True if the folder holds
        records of an earlier run with the same settings (which will be reused).

        A folder whose earlier run finished no image (it stopped on bad input, say) does not
        hold it against new settings: its records of skips are dropped and the run starts
        afresh."""
        if self.settings.is_file():
            previous = json.loads(self.settings.read_text())
            if previous != json.loads(json.dumps(fingerprint)):
                if self.finished_images() == 0:
                    log.info("%s: the earlier run finished no image; starting afresh", self.root)
                    shutil.rmtree(self.root / self.RECORDS, ignore_errors=True)
                    write_json(self.settings, fingerprint)
                    return False
                changed = sorted(k for k in fingerprint if previous.get(k) != fingerprint[k])
                raise ConfigError(
                    f"{self.root} holds an earlier run made with other settings ({changed}); "
                    "resume it with the same ones, or write to a new folder"
                )
            return (self.root / self.RECORDS).is_dir()
        write_json(self.settings, fingerprint)
        return False

    def remove_partial_files(self) -> int:
        """Delete temporary files a killed run left behind (complete files are never temporary:
        see :func:`wsss.io.atomic_path`); returns how many."""
        partial = [p for p in self.root.rglob(".*.tmp") if p.is_file()]
        for path in partial:
            path.unlink(missing_ok=True)
        return len(partial)


def _process_start(pid: int) -> str | None:
    """When process ``pid`` started (clock ticks since boot; Linux), to tell it from a later
    process that reused its pid; None where unknown."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


class RunLock:
    """One run at a time in a run folder: ``<run>/.lock`` names its owner (host, pid, process
    start). A second run refuses to start; a lock left by a run that died is taken over.

    A lock is stale when its owner is on this host and no longer runs (or its pid now belongs to
    another process), or, for an owner on another host, when it has not been refreshed for
    ``stale_after`` seconds: a live run refreshes it with every image it finishes.
    """

    def __init__(self, root: str | Path, stale_after: float = 900.0):
        self.path = Path(root) / ".lock"
        self.stale_after = stale_after
        self.owner = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "process_start": _process_start(os.getpid()),
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
        self.held = False

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            tmp = create_temporary_file(self.path)
            tmp.write_text(json.dumps(self.owner))
            try:
                os.link(tmp, self.path)  # atomic, and fails if a lock exists
                self.held = True
                return
            except FileExistsError:
                pass
            finally:
                tmp.unlink(missing_ok=True)
            holder = self._holder()
            if not self._stale(holder):
                who = f"pid {holder.get('pid')} on {holder.get('host')}" if holder else "?"
                raise ConfigError(
                    f"{self.path.parent} is in use by another run ({who}, started "
                    f"{holder.get('started', '?')}); wait for it to finish or write to another "
                    f"hydra.run.dir. If that run is gone, delete {self.path}"
                )
            log.warning("%s: taking over the lock of a run that is gone (%s)", self.path, holder)
            self.path.unlink(missing_ok=True)
        raise ConfigError(f"{self.path}: could not take the run folder's lock")

    def _holder(self) -> dict:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}

    def _stale(self, holder: dict) -> bool:
        try:
            age = time.time() - self.path.stat().st_mtime
        except FileNotFoundError:
            return True
        if holder.get("host") != self.owner["host"] or "pid" not in holder:
            return age > self.stale_after
        pid = int(holder["pid"])
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:  # alive, another user's
            return False
        started = holder.get("process_start")
        return started is not None and _process_start(pid) not in (None, started)

    def refresh(self) -> None:
        """Tell waiting runs on other hosts that this one is alive."""
        if self.held:
            os.utime(self.path)

    def release(self) -> None:
        if self.held and self._holder() == self.owner:
            self.path.unlink(missing_ok=True)
        self.held = False

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
