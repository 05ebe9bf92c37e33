"""``python -m wsss.export predictions=<run> rejected=rejected.json``: a run's masks after review.

Writes ``annotations.json`` and ``masks/`` into its own run folder without the images and masks
rejected on the run's review page (``report.html``), or estimated below ``min_quality``.
"""

from __future__ import annotations

from pathlib import Path

from wsss.cli import common
from wsss.cli.config import ExportCommand
from wsss.engine.review import apply_review
from wsss.errors import ConfigError
from wsss.export.report import read_rejections


def run(config: ExportCommand, out: Path) -> int:
    if not config.predictions:
        raise ConfigError("predictions=<folder of a generate_masks run> is required")
    rejections = read_rejections(config.rejected) if config.rejected else None
    result = apply_review(Path(config.predictions).expanduser(), out, rejections,
                          config.min_quality)  # fmt: skip
    print(
        f"\n{result.images} images and {result.annotations} annotations kept "
        f"({result.rejected_images} images and {result.rejected_annotations} masks left out)"
        f"\nannotations: {out / 'annotations.json'}\nmasks: {out / 'masks'}"
    )
    return result.annotations


main = common.command("export_review")(run)
