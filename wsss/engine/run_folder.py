"""The layout of a ``generate_masks`` run folder, and the records that make a run resumable.

    <run>/
      masks/<id>.png        label PNG per image (VOC palette; 0 bg, 1..K, 255 uncertain)
      annotations.json      COCO instances file
      overlays/<id>.png     overlay pictures of a sample of images, and contact_sheet.png
      cams/<id>.npz         (export.save_cams) float16 normalised maps and their classes
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
from pathlib import Path

from wsss.errors import ConfigError
from wsss.io import output_path, write_json


class RunFolder:
    """Paths of one run folder; nothing is created until asked (``create=True``)."""

    MASKS, CAMS, OVERLAYS, RECORDS = "masks", "cams", "overlays", "records"

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

    def check_settings(self, fingerprint: dict) -> bool:
        """Write ``run.json``, or check it against ``fingerprint``; True if the folder holds
        records of an earlier run with the same settings (which will be reused)."""
        if self.settings.is_file():
            previous = json.loads(self.settings.read_text())
            if previous != json.loads(json.dumps(fingerprint)):
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
