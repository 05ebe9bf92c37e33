"""Exports: COCO annotations (RLE or polygons) and pictures (overlays, contact sheets). Label
PNGs are written by :func:`wsss.data.save_label_map`."""

from wsss.export.coco import (
    coco_annotations,
    coco_categories,
    mask_to_polygons,
    mask_to_rle,
    write_coco,
)
from wsss.export.pictures import (
    colorize_label_map,
    contact_sheet,
    heatmap,
    map_over_image,
    overlay_panel,
    review_thumbnail,
    save_jpeg,
    save_rgb,
)
from wsss.export.settings import INSTANCE_MODES, ExportSettings

__all__ = [
    "INSTANCE_MODES",
    "ExportSettings",
    "coco_annotations",
    "coco_categories",
    "colorize_label_map",
    "contact_sheet",
    "heatmap",
    "map_over_image",
    "mask_to_polygons",
    "mask_to_rle",
    "overlay_panel",
    "review_thumbnail",
    "save_jpeg",
    "save_rgb",
    "write_coco",
]
