"""Reading images and label masks the way users see them, with errors that name the file."""

from __future__ import annotations

import functools
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from wsss.errors import DataError

#: images (and masks) with more pixels than this are refused from their header, before anything
#: is decoded: Pillow's own warning limit (about 89 megapixels). A 50-megapixel phone photo
#: passes; a decompression bomb (a small file claiming a huge size) does not.
MAX_IMAGE_PIXELS = 89_478_485


def check_size(path: Path, width: int, height: int, what: str = "image") -> None:
    """Refuse a ``width`` x ``height`` file with more than :data:`MAX_IMAGE_PIXELS` pixels."""
    if width * height > MAX_IMAGE_PIXELS:
        raise DataError(
            f"{path}: the {what} is {width}x{height} pixels ({width * height / 1e6:.0f} "
            f"megapixels), more than wsss decodes ({MAX_IMAGE_PIXELS / 1e6:.0f} megapixels: "
            "larger files are refused as possible decompression bombs); shrink it first"
        )


@contextmanager
def open_image(path: Path, what: str = "image") -> Iterator[Image.Image]:
    """``Image.open(path)``, its size checked against :data:`MAX_IMAGE_PIXELS` before any
    pixel is decoded; unreadable files raise a DataError naming ``path``."""
    try:
        with warnings.catch_warnings():  # the size is checked here, not by Pillow's warning
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                check_size(path, *img.size, what=what)
                yield img
    except Image.DecompressionBombError as exc:  # past twice Pillow's limit: refused on open
        raise DataError(f"{path}: the {what} is too large to decode safely ({exc})") from exc
    except UnidentifiedImageError as exc:
        raise DataError(f"{path}: not a readable {what} ({exc})") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"{path}: corrupt {what}, truncated or damaged ({exc})") from exc


# VOC's colour map: class i gets the bits of i spread over the three channels; 255 is the
# "unsure / ignore" colour. Label PNGs stay readable as class indices (mode "P").
@functools.cache
def voc_palette() -> tuple[int, ...]:
    """The PASCAL VOC colour palette as 768 ints (256 RGB triples), computed once."""
    palette = []
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        palette += [r, g, b]
    palette[255 * 3 : 256 * 3] = [224, 224, 192]
    return tuple(palette)


def _to_rgb_uint8(img: Image.Image) -> np.ndarray:
    """Convert any PIL mode to an (H, W, 3) uint8 array without clipping high-bit-depth data."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        # 16-bit data: scale the full 0..65535 range to 0..255 (PIL's convert("L") would clip).
        arr = np.clip(arr / 257.0, 0, 255).round().astype(np.uint8)
        return np.repeat(arr[..., None], 3, axis=2)
    if img.mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        arr = (arr - lo) / (hi - lo) * 255 if hi > lo else np.zeros_like(arr)
        return np.repeat(arr.round().astype(np.uint8)[..., None], 3, axis=2)
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        # Composite transparent pixels on white, as image viewers show them.
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(background, rgba).convert("RGB"))
    return np.asarray(img.convert("RGB"))


def as_rgb_uint8(image: object) -> np.ndarray:
    """An in-memory image as the (H, W, 3) uint8 RGB array the pipeline takes: a PIL image (any
    mode, as :func:`load_image` converts files), a uint8 array (H, W, 3) or (H, W), a float
    array in [0, 1], or a torch tensor in either layout ((3, H, W) or (H, W, 3)). Anything else
    is refused with a ValueError that says what was given."""
    if isinstance(image, Image.Image):
        return np.array(_to_rgb_uint8(image), dtype=np.uint8, order="C")
    if hasattr(image, "detach") and hasattr(image, "cpu"):  # a torch tensor
        image = image.detach().cpu().numpy()
        if image.ndim == 3 and image.shape[0] in (1, 3) and image.shape[-1] not in (1, 3):
            image = image.transpose(1, 2, 0)
    if not isinstance(image, np.ndarray):
        raise ValueError(
            f"expected an image array, PIL image or tensor, got {type(image).__name__}"
        )
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"expected an (H, W, 3) RGB image, got shape {image.shape}")
    if image.dtype == np.uint8:
        return np.ascontiguousarray(image)
    if np.issubdtype(image.dtype, np.floating) or image.dtype == bool:
        values = image.astype(np.float64)
        if values.size and (values.min() < 0 or values.max() > 1):
            raise ValueError(
                f"a float image must hold values in [0, 1], got [{values.min():.3g}, "
                f"{values.max():.3g}]; pass uint8 for 0..255"
            )
        return np.ascontiguousarray((values * 255).round().astype(np.uint8))
    raise ValueError(f"expected a uint8 or float image, got {image.dtype}")


def load_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image as an (H, W, 3) uint8 RGB array, upright as viewers show it (EXIF applied).

    Grayscale, palette, RGBA, CMYK and 16-bit files are converted. Raises ``DataError`` naming the
    file for a missing, empty, truncated or unreadable file.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: image file not found")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: image file is empty (0 bytes)")
    with open_image(path) as img:
        img.load()
        img = ImageOps.exif_transpose(img)
        return np.array(_to_rgb_uint8(img), dtype=np.uint8, order="C")  # writable copy


def load_label_map(path: str | os.PathLike, size: tuple[int, int] | None = None) -> np.ndarray:
    """Read a label PNG as an (H, W) uint8 array of class indices (0 background, 255 ignore).

    ``size`` is the (height, width) of the image the mask belongs to; a mismatch is an error,
    because a resized mask would no longer line up with the image's pixels.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: mask file not found")
    with open_image(path, "mask") as img:
        img.load()
        if img.mode not in ("P", "L", "I", "I;16"):
            raise DataError(
                f"{path}: mask must be a single-channel label image (mode P or L), "
                f"got mode {img.mode}"
            )
        arr = np.asarray(img)
    if arr.max(initial=0) > 255:
        raise DataError(f"{path}: mask values above 255 are not class indices")
    arr = arr.astype(np.uint8)
    if size is not None and arr.shape != tuple(size):
        raise DataError(
            f"{path}: mask is {arr.shape[1]}x{arr.shape[0]} (WxH) but its image is "
            f"{size[1]}x{size[0]}"
        )
    return arr


def label_map_image(label_map: np.ndarray) -> Image.Image:
    """An (H, W) uint8 label map as a palette ("P") image: raw values are the class indices."""
    if label_map.dtype != np.uint8 or label_map.ndim != 2:
        raise ValueError(f"label map must be 2-D uint8, got {label_map.dtype} {label_map.shape}")
    # Build the "P" image from raw bytes: converting an "L" image to "P" would quantise colours.
    img = Image.new("P", (label_map.shape[1], label_map.shape[0]))
    img.frombytes(np.ascontiguousarray(label_map).tobytes())
    img.putpalette(voc_palette())
    return img


def save_label_map(path: str | os.PathLike, label_map: np.ndarray) -> None:
    """Write an (H, W) uint8 label map as a VOC-palette PNG."""
    label_map_image(label_map).save(path, format="PNG")
