"""Pictures for people: label maps in VOC colours, maps as heat maps, overlays and contact
sheets."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from wsss.data.images import voc_palette
from wsss.io import atomic_path


def _palette_rgb() -> np.ndarray:
    return np.array(voc_palette(), dtype=np.uint8).reshape(256, 3)


def colorize_label_map(label_map: np.ndarray) -> np.ndarray:
    """(H, W) label ids -> (H, W, 3) uint8 VOC colours."""
    return _palette_rgb()[label_map]


def heatmap(values: np.ndarray) -> np.ndarray:
    """(H, W) values in [0, 1] -> (H, W, 3) uint8 with matplotlib's 'jet' colour map."""
    import matplotlib

    rgba = matplotlib.colormaps["jet"](np.clip(values, 0, 1))
    return (rgba[..., :3] * 255).round().astype(np.uint8)


def map_over_image(image: np.ndarray, values: np.ndarray) -> np.ndarray:
    """An (H, W) map in [0, 1] blended half and half over an (H, W, 3) uint8 image."""
    return (0.5 * image + 0.5 * heatmap(values)).astype(np.uint8)


def thumbnail(image: np.ndarray, max_side: int, resample: int = Image.BILINEAR) -> np.ndarray:
    """``image`` (uint8 RGB, a label map with ``Image.NEAREST``, or float32 values) shrunk so its
    long side is at most ``max_side``."""
    height, width = image.shape[:2]
    if max(height, width) <= max_side:
        return image
    scale = max_side / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return np.asarray(Image.fromarray(image).resize(size, resample))


def overlay_panel(
    image: np.ndarray,
    label_map: np.ndarray,
    cams: np.ndarray,
    title: str = "",
    max_side: int = 512,
) -> np.ndarray:
    """Side by side: the image, the mask over it, and the strongest class map over it, each at
    most ``max_side`` pixels on its long side (a 50-megapixel photo makes a small picture)."""
    strongest = cams.max(axis=0) if len(cams) else np.zeros(label_map.shape, np.float32)
    image = thumbnail(image, max_side)
    label_map = thumbnail(label_map, max_side, Image.NEAREST)
    strongest = thumbnail(strongest.astype(np.float32), max_side)
    mask_rgb = colorize_label_map(label_map)
    shown = (label_map > 0)[..., None]
    with_mask = np.where(shown, 0.45 * image + 0.55 * mask_rgb, image).astype(np.uint8)
    with_map = map_over_image(image, strongest)
    gap = np.full((image.shape[0], 4, 3), 255, np.uint8)
    panel = np.concatenate([image, gap, with_mask, gap, with_map], axis=1)
    if not title:
        return panel
    header = Image.new("RGB", (panel.shape[1], 14), (255, 255, 255))
    ImageDraw.Draw(header).text((2, 1), title, fill=(0, 0, 0))
    return np.concatenate([np.asarray(header), panel], axis=0)


def contact_sheet(panels: list[np.ndarray], columns: int = 2) -> np.ndarray:
    """Tile panels (padded to a common size) into one picture."""
    if not panels:
        raise ValueError("no panels to tile")
    h = max(p.shape[0] for p in panels)
    w = max(p.shape[1] for p in panels)
    rows = -(-len(panels) // columns)
    sheet = np.full((rows * (h + 6), columns * (w + 6), 3), 255, np.uint8)
    for i, p in enumerate(panels):
        r, c = divmod(i, columns)
        sheet[r * (h + 6) : r * (h + 6) + p.shape[0], c * (w + 6) : c * (w + 6) + p.shape[1]] = p
    return sheet


def save_rgb(path: str | Path, array: np.ndarray) -> None:
    """Write an (H, W, 3) uint8 array as a PNG, atomically."""
    with atomic_path(path) as tmp:
        Image.fromarray(array).save(tmp, format="PNG")


def review_thumbnail(image: np.ndarray, label_map: np.ndarray, max_side: int = 256) -> np.ndarray:
    """The image with its mask over it (VOC colours, uncertain pixels grey), at most
    ``max_side`` pixels on its long side: the review page's picture of an image."""
    small = thumbnail(image, max_side)
    labels = thumbnail(label_map, max_side, Image.NEAREST)
    shown = (labels > 0)[..., None]
    return np.where(shown, 0.5 * small + 0.5 * colorize_label_map(labels), small).astype(np.uint8)


def save_jpeg(path: str | Path, array: np.ndarray, quality: int = 82) -> None:
    """Write an (H, W, 3) uint8 array as a JPEG, atomically."""
    with atomic_path(path) as tmp:
        Image.fromarray(array).save(tmp, format="JPEG", quality=quality)


def class_figure(
    image: np.ndarray,
    maps: np.ndarray,
    titles: Sequence[str],
) -> np.ndarray:
    """The image, then each map over it, side by side, each with its title above."""
    panels = [image] + [map_over_image(image, m) for m in maps]
    titles = ["input", *titles]
    height, width = image.shape[:2]
    scale = max(1, 160 // max(height, width))  # small images are hard to read
    tiles = []
    for panel, title in zip(panels, titles, strict=True):
        tile = Image.fromarray(panel).resize((width * scale, height * scale), Image.NEAREST)
        canvas = Image.new("RGB", (tile.width, tile.height + 16), (255, 255, 255))
        canvas.paste(tile, (0, 16))
        ImageDraw.Draw(canvas).text((2, 2), title[:28], fill=(0, 0, 0))
        tiles.append(np.asarray(canvas))
    gap = np.full((tiles[0].shape[0], 4, 3), 255, np.uint8)
    parts = []
    for tile in tiles:
        parts += [tile, gap]
    return np.concatenate(parts[:-1], axis=1)
