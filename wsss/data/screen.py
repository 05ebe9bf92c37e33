"""Bad input: find unusable images before work starts, and record or refuse them.

``on_bad_image="error"`` stops with one message naming every bad file; ``"skip"`` leaves them out
and records each in ``skipped.json`` (file and reason). Only headers are read up front, so the
check is cheap; a file that is corrupt further in (a truncated JPEG) is found when it is decoded,
and the same policy applies there (see :class:`BadImages`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from tqdm import tqdm

from wsss.data.images import open_image
from wsss.data.split import LabelledSplit, Sample
from wsss.errors import ConfigError, DataError
from wsss.io import write_json

log = logging.getLogger(__name__)

POLICIES = ("error", "skip")
_SWAPS_AXES = {5, 6, 7, 8}  # EXIF orientations that rotate by 90 degrees


def _header_size(path: Path, what: str) -> tuple[int, int]:
    """(height, width) as viewers show the file (EXIF rotation applied), from its header only."""
    if not path.is_file():
        raise DataError(f"{path}: {what} file not found")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: {what} file is empty (0 bytes)")
    with open_image(path, what) as img:
        width, height = img.size
        orientation = img.getexif().get(0x0112, 1) if what == "image" else 1
    return (width, height) if orientation in _SWAPS_AXES else (height, width)


def sample_problem(sample: Sample, split: LabelledSplit | None = None) -> str | None:
    """Why ``sample`` cannot be used (missing, empty or unreadable image or mask, a mask or
    annotation size that differs from the image's, or, given its ``split``, a mask value that is
    none of the split's classes), or None."""
    try:
        size = _header_size(sample.image_path, "image")
        expected = [("annotations", sample.size)] if sample.size else []
        if sample.mask_path is not None:
            expected.append(("mask", _header_size(sample.mask_path, "mask")))
        for what, (h, w) in expected:
            if (h, w) != size:
                return (
                    f"{sample.image_path}: its {what} are {w}x{h} (WxH) but the image is "
                    f"{size[1]}x{size[0]} as viewed (EXIF orientation applied)"
                )
        if split is not None and sample.mask_path is not None:
            split.ground_truth(sample)  # decodes the mask: its values must be classes
    except DataError as exc:
        return str(exc)
    return None


@dataclass
class BadImages:
    """The run's policy for bad images and the record of those it skipped."""

    policy: str = "error"
    skipped: list[dict] = field(default_factory=list)
    #: called with (path, reason) for every skip, e.g. to persist it for a resumed run
    on_skip: Callable[[Path | str, str], None] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise ConfigError(f"on_bad_image must be one of {POLICIES}, got {self.policy!r}")

    @property
    def skip(self) -> bool:
        return self.policy == "skip"

    def record(self, path: Path | str, reason: str) -> None:
        """Note a bad file found during the run (once per file); with policy "error", raise."""
        if not self.skip:
            raise DataError(f"{reason} (use on_bad_image=skip to leave such images out)")
        if any(entry["file"] == str(path) for entry in self.skipped):
            return
        log.warning("skipping %s: %s", path, reason)
        self.skipped.append({"file": str(path), "reason": reason})
        if self.on_skip is not None:
            self.on_skip(path, reason)

    def screen(self, split: LabelledSplit) -> LabelledSplit:
        """Check every sample's headers and its mask's values; return the usable ones or raise
        (policy "error")."""
        usable, bad = [], []
        for sample in tqdm(split.samples, desc="check images", unit="img", leave=False):
            problem = sample_problem(sample, split)
            (bad if problem else usable).append((sample, problem))
        if bad and not self.skip:
            shown = "\n  ".join(p for _, p in bad[:10])
            more = f"\n  ... and {len(bad) - 10} more" if len(bad) > 10 else ""
            raise DataError(
                f"{len(bad)} of {len(split)} images cannot be used:\n  {shown}{more}\n"
                "Fix them, or pass on_bad_image=skip to leave them out (listed in skipped.json)."
            )
        for sample, problem in bad:
            self.record(sample.image_path, problem)
        if bad:
            log.warning("%d of %d images skipped (see skipped.json)", len(bad), len(split))
        return replace(split, samples=tuple(s for s, _ in usable))

    def write(self, out_dir: Path) -> Path | None:
        """Write ``skipped.json`` if anything was skipped."""
        if not self.skipped:
            return None
        write_json(out_dir / "skipped.json", self.skipped)
        return out_dir / "skipped.json"
