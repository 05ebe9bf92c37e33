"""A procedurally generated multi-label dataset with exact masks: a fair, fast test of WSSS.

Six object classes, each defined by a shape *and* a surface pattern, with random scale,
rotation, aspect, colour and pattern frequency. Objects stand on cluttered, textured
backgrounds with distractor blobs and lines (some crossing the objects), and may occlude each
other. ``boat`` nearly always sits on water, and water rarely appears without a boat, so a
classifier can use the water as evidence for boats and its maps spill onto the water, as CAMs
do on PASCAL VOC.

Everything is drawn from one seeded generator per image, so the dataset is identical on every
machine. It is written once in the folder format (:mod:`wsss.data.folder`) and reused.
Its length (about 400 lines) is the drawing code of six shapes and six patterns, each short.
"""

from __future__ import annotations

import colorsys
import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage
from skimage.draw import polygon as draw_polygon
from tqdm import tqdm

from wsss.data.datasets import DATASETS, DatasetSettings
from wsss.data.folder import load_split, write_labels_csv
from wsss.data.images import save_label_map
from wsss.data.split import LabelledSplit
from wsss.io import create_temporary_dir

CLASS_NAMES = ("disc", "block", "triangle", "star", "cross", "boat")
GENERATOR_VERSION = 1


@dataclass(frozen=True)
class SyntheticSpec:
    """What to generate. Changing any field produces a different dataset folder."""

    num_train: int = 1600
    num_eval: int = 200
    image_size: int = 128
    seed: int = 0
    #: probability that a boat image has water (the rest show a boat on ordinary clutter)
    boat_on_water: float = 0.95
    #: probability that an image without boats still shows water
    water_without_boat: float = 0.06

    def fingerprint(self) -> str:
        fields = "-".join(f"{v}" for v in asdict(self).values())
        return f"synthetic-v{GENERATOR_VERSION}-{fields}"


# --------------------------------------------------------------------------------------------
# Drawing helpers. Coordinates: x right, y down, in pixels.


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h % 1.0, s, v), dtype=np.float32)


def _smooth_noise(rng: np.random.Generator, size: int, cells: int, channels: int) -> np.ndarray:
    """Low-frequency noise in [0, 1]: random values on a coarse grid, bicubically upsampled."""
    coarse = rng.random((cells, cells, channels)).astype(np.float32)
    zoom = size / cells
    fine = ndimage.zoom(coarse, (zoom, zoom, 1), order=3, mode="reflect")[:size, :size]
    return np.clip(fine, 0, 1)


def _local_coords(size: int, cx: float, cy: float, scale: float, angle: float, aspect: float):
    """Pixel coordinates in an object's frame: unit = ``scale`` pixels, rotated by ``angle``."""
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    dx, dy = xs - cx, ys - cy
    c, s = np.cos(angle), np.sin(angle)
    u = (c * dx + s * dy) / scale
    v = (-s * dx + c * dy) / (scale * aspect)
    return u, v


def _to_image(points: np.ndarray, cx, cy, scale, angle, aspect) -> np.ndarray:
    """Map (N, 2) local (u, v) points to image (x, y)."""
    u, v = points[:, 0] * scale, points[:, 1] * scale * aspect
    c, s = np.cos(angle), np.sin(angle)
    return np.stack([cx + c * u - s * v, cy + s * u + c * v], axis=1)


def _fill(size: int, xy: np.ndarray) -> np.ndarray:
    mask = np.zeros((size, size), dtype=bool)
    rr, cc = draw_polygon(xy[:, 1], xy[:, 0], shape=mask.shape)
    mask[rr, cc] = True
    return mask


def _regular(n: int, radius: float | np.ndarray = 1.0, phase: float = -np.pi / 2) -> np.ndarray:
    """``n`` points around the origin at angles ``phase + 2 pi i / n`` and radius ``radius``."""
    t = phase + 2 * np.pi * np.arange(n) / n
    return np.stack([radius * np.cos(t), radius * np.sin(t)], axis=1)


# Each class: an outline in local units (radius ~1) and a two-colour surface pattern.


def _outline(name: str, rng: np.random.Generator) -> list[np.ndarray]:
    if name == "disc":
        return [_regular(40)]
    if name == "block":
        return [np.array([[-1, -0.8], [1, -0.8], [1, 0.8], [-1, 0.8]], dtype=float)]
    if name == "triangle":
        return [_regular(3, phase=-np.pi / 2) * 1.15]
    if name == "star":
        inner = rng.uniform(0.38, 0.52)
        return [_regular(10, np.where(np.arange(10) % 2 == 0, 1.1, inner * 1.1))]
    if name == "cross":
        w = rng.uniform(0.28, 0.4)
        return [
            np.array(
                [
                    [-w, -1],
                    [w, -1],
                    [w, -w],
                    [1, -w],
                    [1, w],
                    [w, w],
                    [w, 1],
                    [-w, 1],
                    [-w, w],
                    [-1, w],
                    [-1, -w],
                    [-w, -w],
                ],
                dtype=float,
            )
        ]
    if name == "boat":
        hull = np.array([[-1.1, 0.15], [1.1, 0.15], [0.7, 0.65], [-0.7, 0.65]], dtype=float)
        mast = np.array([[-0.05, -1.0], [0.05, -1.0], [0.05, 0.15], [-0.05, 0.15]], dtype=float)
        sail = np.array([[0.1, -0.95], [0.1, 0.05], [0.85, 0.05]], dtype=float)
        return [hull, mast, sail]
    raise KeyError(name)


def _pattern(name: str, u: np.ndarray, v: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Pattern value in {0, 1} per pixel, in the object's frame (so it rotates and scales)."""
    f = rng.uniform(2.0, 3.5)
    if name == "disc":  # concentric rings
        return (np.sin(2 * np.pi * f * np.hypot(u, v) * 0.8) > 0).astype(np.float32)
    if name == "block":  # checkerboard
        return ((np.sin(np.pi * f * u) * np.sin(np.pi * f * v)) > 0).astype(np.float32)
    if name == "triangle":  # stripes parallel to the base
        return (np.sin(2 * np.pi * f * v) > 0).astype(np.float32)
    if name == "star":  # dots on a grid
        g = f * 1.3
        du = (u * g) % 1.0 - 0.5
        dv = (v * g) % 1.0 - 0.5
        return (du * du + dv * dv < 0.09).astype(np.float32)
    if name == "cross":  # diagonal hatching
        a = np.abs(np.sin(np.pi * f * (u + v))) < 0.35
        b = np.abs(np.sin(np.pi * f * (u - v))) < 0.35
        return (a | b).astype(np.float32)
    if name == "boat":  # horizontal planks on the hull
        return (np.sin(2 * np.pi * 5.0 * v) > 0.3).astype(np.float32)
    raise KeyError(name)


# Hue centres per class; colours are drawn around them but overlap between classes, and 25% of
# objects get an arbitrary hue, so colour alone never identifies a class.
_HUES = {"disc": 0.02, "block": 0.6, "triangle": 0.13, "star": 0.8, "cross": 0.33, "boat": 0.08}


def _object_colours(name: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    hue = rng.uniform(0, 1) if rng.random() < 0.25 else _HUES[name] + rng.normal(0, 0.06)
    c1 = _hsv(hue, rng.uniform(0.5, 0.95), rng.uniform(0.55, 0.95))
    c2 = _hsv(hue + rng.uniform(-0.1, 0.1), rng.uniform(0.2, 0.9), rng.uniform(0.1, 0.45))
    return c1, c2


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A textured background: a colour field, fine grain, and a random stripe or blotch layer."""
    base_hue = rng.uniform(0, 1)
    field = _smooth_noise(rng, size, int(rng.integers(3, 7)), 3)
    tint = _hsv(base_hue, rng.uniform(0.1, 0.6), rng.uniform(0.35, 0.8))
    img = 0.55 * tint + 0.45 * field * rng.uniform(0.4, 1.0)
    grain = _smooth_noise(rng, size, size // 4, 1)
    img = img * (0.8 + 0.4 * grain)
    if rng.random() < 0.5:  # a woven / striped surface, like a wall or a floor
        ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
        theta = rng.uniform(0, np.pi)
        period = rng.uniform(5, 14)
        stripes = np.sin(2 * np.pi * (xs * np.cos(theta) + ys * np.sin(theta)) / period)
        img = img * (1 + 0.15 * stripes[..., None])
    return img.astype(np.float32)


def _add_water(rng: np.random.Generator, img: np.ndarray) -> tuple[np.ndarray, float]:
    """Paint water over the lower part of the image; return the image and the horizon row."""
    size = img.shape[0]
    horizon = rng.uniform(0.35, 0.6) * size
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    wave_row = horizon + 2.0 * np.sin(xs / rng.uniform(6, 12) + rng.uniform(0, 6))
    water = ys >= wave_row
    hue = rng.uniform(0.52, 0.62)
    deep = _hsv(hue, rng.uniform(0.5, 0.9), rng.uniform(0.35, 0.6))
    light = _hsv(hue - 0.03, rng.uniform(0.2, 0.5), rng.uniform(0.7, 0.95))
    ripple = np.sin(ys * rng.uniform(0.6, 1.0) + 1.5 * np.sin(xs / rng.uniform(4, 9)))
    t = (ripple > 0.55).astype(np.float32)[..., None]
    colour = deep * (1 - t) + light * t
    img = np.where(water[..., None], colour, img)
    return img, horizon


def _add_distractors(rng: np.random.Generator, img: np.ndarray, count: int, thin: bool) -> None:
    """Draw background clutter in place: irregular blobs (``thin=False``) or thin lines."""
    size = img.shape[0]
    for _ in range(count):
        colour = _hsv(rng.uniform(0, 1), rng.uniform(0.2, 0.9), rng.uniform(0.2, 0.95))
        if thin:
            x0, y0 = rng.uniform(0, size, 2)
            angle = rng.uniform(0, np.pi)
            length = rng.uniform(0.3, 0.9) * size
            width = rng.uniform(1.0, 2.2)
            d = np.array([np.cos(angle), np.sin(angle)]) * length / 2
            n = np.array([-d[1], d[0]]) / np.linalg.norm(d) * width / 2
            p, q = np.array([x0, y0]) - d, np.array([x0, y0]) + d
            xy = np.stack([p + n, q + n, q - n, p - n])
        else:
            k = int(rng.integers(5, 9))
            r = rng.uniform(0.04, 0.12) * size
            radii = r * rng.uniform(0.5, 1.3, k)
            xy = _regular(k, radii, phase=rng.uniform(0, np.pi))
            xy = xy + rng.uniform(0, size, 2)
        img[_fill(size, xy)] = colour


@dataclass
class _Placed:
    class_index: int
    mask: np.ndarray


def render_image(rng: np.random.Generator, size: int, spec: SyntheticSpec):
    """Render one image. Returns (uint8 RGB image, uint8 label map, sorted class indices)."""
    num_objects = int(rng.choice([1, 2, 3], p=[0.4, 0.4, 0.2]))
    num_classes = int(min(num_objects, rng.choice([1, 2, 3], p=[0.3, 0.45, 0.25])))
    classes = rng.choice(len(CLASS_NAMES), size=num_classes, replace=False)
    object_classes = list(classes) + list(rng.choice(classes, size=num_objects - num_classes))
    rng.shuffle(object_classes)
    has_boat = CLASS_NAMES.index("boat") in object_classes
    water = rng.random() < (spec.boat_on_water if has_boat else spec.water_without_boat)

    img = _background(rng, size)
    horizon = None
    if water:
        img, horizon = _add_water(rng, img)
    _add_distractors(rng, img, int(rng.integers(3, 8)), thin=False)

    labels = np.zeros((size, size), dtype=np.uint8)
    placed: list[_Placed] = []
    for cls in object_classes:
        name = CLASS_NAMES[cls]
        for _attempt in range(20):
            scale = rng.uniform(0.16, 0.3) * size
            aspect = rng.uniform(0.7, 1.0)
            if name == "boat":
                angle = rng.normal(0, 0.08)
                cx = rng.uniform(0.2, 0.8) * size
                # On water the hull floats at the waterline; elsewhere it stands anywhere.
                base = horizon + rng.uniform(0.0, 0.25) * size if horizon is not None else None
                cy = (base - 0.4 * scale) if base is not None else rng.uniform(0.25, 0.75) * size
            else:
                angle = rng.uniform(0, 2 * np.pi)
                cx, cy = rng.uniform(0.18, 0.82, 2) * size
            parts = [_to_image(p, cx, cy, scale, angle, aspect) for p in _outline(name, rng)]
            mask = np.zeros((size, size), dtype=bool)
            for xy in parts:
                mask |= _fill(size, xy)
            if mask.sum() < 0.01 * size * size:
                continue
            # Partial occlusion is welcome; an object hiding most of an earlier one is not.
            if all((p.mask & ~mask).sum() >= 0.5 * p.mask.sum() for p in placed):
                break
        else:
            continue
        u, v = _local_coords(size, cx, cy, scale, angle, aspect)
        t = _pattern(name, u, v, rng)[..., None]
        c1, c2 = _object_colours(name, rng)
        if name == "boat":  # a pale sail above a patterned hull
            sail = _fill(size, parts[2])[..., None]
            canvas = _hsv(0, 0, rng.uniform(0.8, 1.0))
            surface = np.where(sail, canvas, c1 * (1 - t) + c2 * t)
        else:
            surface = c1 * (1 - t) + c2 * t
        shade = 0.85 + 0.3 * _smooth_noise(rng, size, 4, 1)
        img = np.where(mask[..., None], surface * shade, img)
        for p in placed:
            p.mask &= ~mask
        labels[mask] = cls + 1
        placed.append(_Placed(int(cls), mask))

    # A few thin lines in front of everything (wires, branches): background in the ground truth.
    line_layer = img.copy()
    _add_distractors(rng, line_layer, int(rng.integers(0, 3)), thin=True)
    occluded = np.any(line_layer != img, axis=2)
    labels[occluded] = 0
    img = line_layer

    img = ndimage.gaussian_filter(img, sigma=(0.6, 0.6, 0))
    img = img + rng.normal(0, 0.025, img.shape).astype(np.float32)
    image = (np.clip(img, 0, 1) * 255).round().astype(np.uint8)
    present = sorted({int(c) for c in np.unique(labels) if c > 0})
    return image, labels, [c - 1 for c in present]


def _render_split(root: Path, split: str, count: int, seed_offset: int, spec: SyntheticSpec):
    rows = []
    for i in tqdm(range(count), desc=f"synthetic {split}", unit="img", leave=False):
        rng = np.random.default_rng([spec.seed, seed_offset, i])
        while True:
            image, labels, present = render_image(rng, spec.image_size, spec)
            if present:  # every image must carry at least one label
                break
        image_id = f"{split}_{i:05d}"
        Image.fromarray(image).save(root / "images" / f"{image_id}.png")
        save_label_map(root / "masks" / f"{image_id}.png", labels)
        rows.append((f"{image_id}.png", [CLASS_NAMES[c] for c in present]))
    write_labels_csv(root / f"{split}.csv", rows)


def ensure_synthetic_dataset(cache_dir: str | os.PathLike, spec: SyntheticSpec) -> Path:
    """Return the folder holding the dataset for ``spec``, generating it first if needed.

    Generation writes into a temporary folder that is renamed into place at the end, so an
    interrupted run leaves nothing half-written, and concurrent runs do not clash.
    """
    cache_dir = Path(cache_dir)
    root = cache_dir / spec.fingerprint()
    if (root / "meta.json").is_file():
        return root
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = create_temporary_dir(root)  # readable by others as the umask allows, unlike mkdtemp
    try:
        (tmp / "images").mkdir()
        (tmp / "masks").mkdir()
        (tmp / "classes.txt").write_text("\n".join(CLASS_NAMES) + "\n")
        _render_split(tmp, "train", spec.num_train, 1, spec)
        _render_split(tmp, "eval", spec.num_eval, 2, spec)
        meta = {"generator_version": GENERATOR_VERSION, "spec": asdict(spec)}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
        try:
            tmp.rename(root)
        except OSError:
            if not (root / "meta.json").is_file():  # lost a race to another run: fine
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return root


@DATASETS.register("synthetic")
@dataclass
class SyntheticDataset(DatasetSettings):
    """The built-in synthetic dataset (``dataset=synthetic``, the demo's)."""

    name: str = "synthetic"
    #: where the generated dataset lives; null: ``<cache_dir>/datasets``
    root: str | None = None
    num_train: int = 1600
    num_eval: int = 200
    image_size: int = 128
    seed: int = 0
    splits: dict[str, str] = field(
        default_factory=lambda: {"train": "train.csv", "eval": "eval.csv"}
    )

    def spec(self) -> SyntheticSpec:
        return SyntheticSpec(self.num_train, self.num_eval, self.image_size, self.seed)

    def folder(self, cache_dir: Path | None = None) -> Path:
        """The dataset's folder, generated first if missing."""
        if self.root:
            base = Path(self.root).expanduser()
        elif cache_dir is not None:
            base = Path(cache_dir) / "datasets"
        else:
            raise ValueError("the synthetic dataset needs root= or a cache_dir")
        return ensure_synthetic_dataset(base, self.spec())

    def load(self, split, *, cache_dir=None, allow_unlabelled=False) -> LabelledSplit:
        return load_split(self.folder(cache_dir), self.split_entry(split))
