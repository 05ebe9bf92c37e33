"""What a generation run writes besides the label PNGs (the ``export`` config group)."""

from __future__ import annotations

from dataclasses import dataclass

from wsss.errors import ConfigError

INSTANCE_MODES = ("class", "component")


@dataclass
class ExportSettings:
    """``overlays``: how many images (evenly spread over the split) get an overlay picture.
    ``save_cams``: also write each image's maps (float16), so ``evaluate`` can sweep thresholds
    later. ``polygons``: COCO polygons (holes filled) instead of compressed RLE. ``instances``:
    one COCO annotation per ``class`` present in an image, or per connected ``component``.
    ``quality``: a quality estimate per annotation and image (:mod:`wsss.masks.quality`),
    thumbnails and the review page ``report.html``."""

    overlays: int = 16
    save_cams: bool = False
    polygons: bool = False
    instances: str = "class"
    #: estimate each mask's quality without ground truth (a few small forward passes per
    #: image) and write report.html, the review page sorted worst-first
    quality: bool = True

    def validate(self) -> None:
        if self.instances not in INSTANCE_MODES:
            raise ConfigError(
                f"export.instances must be one of {INSTANCE_MODES}, got {self.instances!r}"
            )
        if self.overlays < 0:
            raise ConfigError(f"export.overlays must be >= 0, got {self.overlays}")
