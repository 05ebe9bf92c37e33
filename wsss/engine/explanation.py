"""Explaining a classifier with its class maps, and judging what it learned.

For each image: the top-k predicted classes with their probabilities and maps (the CAM paper's
figure of a photo's top-5 predictions), plus the maps of any class the user names. Over a set of
images: per-class localisation metrics where masks exist, faithfulness metrics always, and a
flag on classes whose maps mostly lie away from their objects (a classifier that learned a
shortcut, such as water for boats). Written to ``explain.json`` and ``report.html``.
"""

from __future__ import annotations

import base64
import html
import io
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from scipy import ndimage
from torch import nn
from tqdm import tqdm

from wsss.cams import CamSettings
from wsss.data.images import load_image
from wsss.data.split import LabelledSplit
from wsss.errors import ConfigError, DataError
from wsss.export import map_over_image, save_rgb
from wsss.io import write_json, write_text
from wsss.masks import MaskPredictor
from wsss.metrics import maps as map_metrics
from wsss.models import CAMClassifier

log = logging.getLogger(__name__)


@dataclass
class ExplainItem:
    """One image to explain: uint8 (H, W, 3); labels and mask when known."""

    image_id: str
    image: np.ndarray
    labels: tuple[int, ...] | None = None
    mask: np.ndarray | None = None


IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


def resized(
    image: np.ndarray, long_side: int | None, resample=Image.BILINEAR, shrink_only=False
) -> np.ndarray:
    """``image`` (or a label map, with ``Image.NEAREST``) with its long side ``long_side``
    (with ``shrink_only``, only when it is longer)."""
    if not long_side or (shrink_only and max(image.shape[:2]) <= long_side):
        return image
    h, w = image.shape[:2]
    scale = long_side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(Image.fromarray(image).resize(size, resample))


def image_files(path: Path) -> list[tuple[str, Path]]:
    """(image id, file) for an image file, or for every image under a folder."""
    if path.is_file():
        return [(path.stem, path)]
    if not path.is_dir():
        raise DataError(f"{path}: no such image or folder")
    files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataError(f"{path}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) found")
    return [(p.relative_to(path).with_suffix("").as_posix(), p) for p in files]


def items_from_files(
    files: Sequence[tuple[str, Path]], long_side: int | None = None, max_side: int | None = None
):
    """Explain items of image files (no labels, no masks), read as they are consumed, resized
    to ``long_side``, or else shrunk to at most ``max_side`` (the maps' working resolution:
    explain's own measurements then stay bounded on large photos)."""
    for image_id, path in files:
        yield ExplainItem(image_id, _fitted(load_image(path), long_side, max_side))


def items_from_split(
    split: LabelledSplit, long_side: int | None = None, max_side: int | None = None
):
    """Explain items of a split's images with their labels and, when it has them, masks
    (sized as in :func:`items_from_files`)."""
    for sample in split.samples:
        image = load_image(sample.image_path)
        mask = split.ground_truth(sample, image.shape[:2]) if split.has_masks else None
        image = _fitted(image, long_side, max_side)
        if mask is not None:  # masks follow the image, by nearest neighbour
            mask = _fitted(mask, long_side, max_side, Image.NEAREST)
        yield ExplainItem(sample.image_id, image, sample.labels, mask)


def _fitted(image, long_side, max_side, resample=Image.BILINEAR) -> np.ndarray:
    if long_side:
        return resized(image, long_side, resample)
    return resized(image, max_side, resample, shrink_only=True)


@dataclass
class ExplainSettings:
    """What ``explain`` shows and how it judges the maps (the maps themselves follow the ``cam``
    settings)."""

    top_k: int = 5
    #: names of classes whose maps are shown for every image
    classes: list[str] = field(default_factory=list)
    #: how scores become probabilities: "sigmoid" (multi-label), "softmax" (single-label), or
    #: "auto": sigmoid for a wsss classifier, softmax for any other
    probability: str = "auto"
    pointing_tolerance: int = 0
    iou_threshold: float = 0.5
    #: the margin (fraction of the image's long side) around an object that still counts as
    #: "near" it: maps blur past object edges by about the feature stride
    near_margin: float = 0.08
    #: classes whose maps keep less than this share of their energy near their objects are
    #: flagged as likely shortcut learners
    shortcut_energy: float = 0.5
    #: ... or whose probability keeps at least this share of its evidence (above its level on
    #: images without the class) once the objects are removed
    context_reliance: float = 0.5
    deletion_steps: int = 10
    #: how many images get a figure (None: every image)
    figures: int | None = None
    worst_examples: int = 4

    def validate(self) -> None:
        if self.probability not in ("auto", "sigmoid", "softmax"):
            raise ConfigError(
                f"probability must be auto, sigmoid or softmax, got {self.probability!r}"
            )
        if self.top_k < 1:
            raise ConfigError(f"top_k must be >= 1, got {self.top_k}")
        if self.figures is not None and self.figures < 0:
            raise ConfigError(f"figures must be >= 0, got {self.figures}")


@dataclass
class _ClassRecord:
    energy_inside: list[float] = field(default_factory=list)
    energy_near: list[float] = field(default_factory=list)
    pointing: list[bool] = field(default_factory=list)
    iou: list[float] = field(default_factory=list)
    p_without_object: list[float] = field(default_factory=list)
    p_with_object: list[float] = field(default_factory=list)
    #: the class's probability on labelled images that do not contain it
    p_absent: list[float] = field(default_factory=list)
    p_full: list[float] = field(default_factory=list)
    p_masked: list[float] = field(default_factory=list)
    deletion: list[float] = field(default_factory=list)
    insertion: list[float] = field(default_factory=list)
    #: (energy near the object, image id, picture) of the worst-localised examples
    worst: list[tuple[float, str, np.ndarray]] = field(default_factory=list)

    def summary(self) -> dict:
        def mean(values):
            values = [v for v in values if v == v]  # drop NaN
            return round(float(np.mean(values)), 4) if values else None

        out = {"images": len(self.p_full)}
        if self.energy_inside:
            out.update(
                energy_inside=mean(self.energy_inside),
                energy_near=mean(self.energy_near),
                pointing_game=mean([float(p) for p in self.pointing]),
                map_iou=mean(self.iou),
                p_with_object=mean(self.p_with_object),
                p_without_object=mean(self.p_without_object),
            )
            if self.p_absent and self.p_with_object:
                base = float(np.mean(self.p_absent))
                evidence = float(np.mean(self.p_with_object)) - base
                kept = float(np.mean(self.p_without_object)) - base
                out["p_absent"] = round(base, 4)
                out["context_reliance"] = round(kept / evidence, 4) if evidence > 0 else None
        if self.p_full:
            out.update(
                average_drop=round(map_metrics.average_drop(self.p_full, self.p_masked), 2),
                increase_in_confidence=round(
                    map_metrics.increase_in_confidence(self.p_full, self.p_masked), 2
                ),
                deletion_auc=mean(self.deletion),
                insertion_auc=mean(self.insertion),
            )
        return out


def _probabilities(scores: torch.Tensor, kind: str) -> torch.Tensor:
    return torch.sigmoid(scores) if kind == "sigmoid" else torch.softmax(scores, dim=1)


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


def explain(
    model: nn.Module,
    items: Iterable[ExplainItem],
    class_names: Sequence[str],
    out_dir: Path,
    cam: CamSettings,
    settings: ExplainSettings | None = None,
    device: torch.device | str = "cpu",
    total: int | None = None,
) -> dict:
    """Explain every item; write figures, ``explain.json`` and ``report.html`` under ``out_dir``.

    ``model`` maps (B, 3, H, W) RGB floats in [0, 1] to (B, K) class scores; its maps are
    computed as ``cam`` says (any method, its options, scales and flip). Returns the JSON
    summary.
    """
    settings = settings or ExplainSettings()
    settings.validate()
    unknown = [c for c in settings.classes if c not in class_names]
    if unknown:
        raise ConfigError(f"unknown class name(s) {unknown} in classes=")
    extra_classes = [list(class_names).index(c) for c in settings.classes]
    probability_kind = settings.probability
    if probability_kind == "auto":
        probability_kind = "sigmoid" if isinstance(model, CAMClassifier) else "softmax"
    out_dir = Path(out_dir)
    (out_dir / "figures").mkdir(parents=True, exist_ok=True)
    predictor = MaskPredictor(model, cam, device=device)
    method = cam.method
    model, device = predictor.model, predictor.device
    records: dict[int, _ClassRecord] = {}
    per_image, figures = [], []
    has_masks = False

    def probability_of(cls: int):
        def probability(batch: torch.Tensor) -> torch.Tensor:
            with torch.inference_mode():
                return _probabilities(model(batch), probability_kind)[:, cls]

        return probability

    for n, item in enumerate(tqdm(items, total=total, desc="explain", unit="img")):
        x = torch.from_numpy(np.ascontiguousarray(item.image)).permute(2, 0, 1).float() / 255
        x = x.to(device)
        with torch.inference_mode():
            probs = _probabilities(model(x[None]), probability_kind)[0].cpu()
        top = probs.topk(min(settings.top_k, len(probs)))
        top_classes = [int(c) for c in top.indices]
        judged = list(item.labels) if item.labels else top_classes[:1]
        shown = list(dict.fromkeys([*top_classes, *extra_classes]))
        wanted = list(dict.fromkeys([*shown, *judged]))
        maps = dict(zip(wanted, predictor.maps([item.image], [wanted])[0], strict=True))

        entry = {
            "image": item.image_id,
            "top_k": [
                {"class": class_names[c], "probability": round(float(probs[c]), 4)}
                for c in top_classes
            ],
            "labels": [class_names[c] for c in item.labels] if item.labels else None,
            "classes": {},
        }
        if item.labels:
            for cls in set(range(len(probs))) - set(item.labels):
                records.setdefault(cls, _ClassRecord()).p_absent.append(float(probs[cls]))
        for cls in judged:
            record = records.setdefault(cls, _ClassRecord())
            cam = maps[cls]
            metrics = {}
            p_full = float(probs[cls])
            p_masked = map_metrics.map_only_probability(probability_of(cls), x, cam)
            deletion, insertion = map_metrics.deletion_insertion(
                probability_of(cls), x, cam, settings.deletion_steps
            )
            record.p_full.append(p_full)
            record.p_masked.append(p_masked)
            record.deletion.append(deletion)
            record.insertion.append(insertion)
            metrics.update(
                p=round(p_full, 4),
                p_map_only=round(p_masked, 4),
                deletion_auc=round(deletion, 4),
                insertion_auc=round(insertion, 4),
            )
            if item.mask is not None and (item.mask == cls + 1).any():
                has_masks = True
                obj = item.mask == cls + 1
                margin = max(1, round(settings.near_margin * max(obj.shape)))
                near = ndimage.binary_dilation(obj, iterations=margin)
                inside = map_metrics.energy_inside(cam, obj)
                near_energy = map_metrics.energy_inside(cam, near)
                record.energy_inside.append(inside)
                record.energy_near.append(near_energy)
                record.pointing.append(
                    map_metrics.pointing_hit(cam, obj, settings.pointing_tolerance)
                )
                record.iou.append(map_metrics.map_iou(cam, obj, settings.iou_threshold))
                removed = probability_of(cls)(map_metrics.remove_object(x, obj)[None])
                record.p_with_object.append(p_full)
                record.p_without_object.append(float(removed[0]))
                metrics.update(energy_inside=round(inside, 4), energy_near=round(near_energy, 4))
                worst = record.worst
                makes_the_cut = len(worst) < settings.worst_examples or near_energy < worst[-1][0]
                if near_energy == near_energy and makes_the_cut:  # render only kept examples
                    picture = class_figure(item.image, cam[None], [class_names[cls]])
                    worst.append((near_energy, item.image_id, picture))
                    worst.sort(key=lambda w: w[0])
                    del worst[settings.worst_examples :]
            entry["classes"][class_names[cls]] = metrics
        per_image.append(entry)

        if settings.figures is None or n < settings.figures:
            titles = [f"{class_names[c]} {float(probs[c]):.2f}" for c in shown]
            figure = class_figure(item.image, np.stack([maps[c] for c in shown]), titles)
            save_rgb(out_dir / "figures" / f"{n:05d}.png", figure)
            figures.append((item.image_id, f"figures/{n:05d}.png"))

    if not per_image:
        raise ConfigError("no images to explain")
    judged_records = {c: r for c, r in sorted(records.items()) if r.p_full}
    per_class = {class_names[c]: r.summary() for c, r in judged_records.items()}
    reasons = {name: shortcut_reasons(stats, settings) for name, stats in per_class.items()}
    reasons = {name: why for name, why in reasons.items() if why}
    overall = _ClassRecord()
    for record in judged_records.values():
        for key in (f.name for f in fields(_ClassRecord) if f.name not in ("worst", "p_absent")):
            getattr(overall, key).extend(getattr(record, key))
    summary = {
        "method": method,
        "images": len(per_image),
        "overall": overall.summary(),
        "per_class": per_class,
        "likely_shortcuts": list(reasons),
        "shortcut_reasons": reasons,
        "shortcut_rule": (
            f"less than {settings.shortcut_energy:.0%} of the map energy within "
            f"{settings.near_margin:.0%} of the image size around the objects, or at least "
            f"{settings.context_reliance:.0%} of the class evidence left with the objects removed"
        )
        if has_masks
        else "needs ground-truth masks",
        "per_image": per_image,
    }
    write_json(out_dir / "explain.json", summary)
    worst = {class_names[c]: r.worst for c, r in records.items()}
    write_text(out_dir / "report.html", render_report(summary, worst, figures))
    return summary


def shortcut_reasons(stats: dict, settings: ExplainSettings) -> list[str]:
    """Why a class looks like a shortcut learner (empty: it does not)."""
    reasons = []
    near = stats.get("energy_near")
    if near is not None and near < settings.shortcut_energy:
        reasons.append(f"only {near:.0%} of its map energy lies near its objects")
    reliance = stats.get("context_reliance")
    if reliance is not None and reliance >= settings.context_reliance:
        reasons.append(
            f"{reliance:.0%} of the classifier's evidence for it remains once its objects are "
            f"removed (p {stats['p_with_object']:.2f} -> {stats['p_without_object']:.2f}; "
            f"{stats['p_absent']:.2f} on images without it)"
        )
    return reasons


def _png_data_uri(picture: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(picture).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def render_report(summary: dict, worst: dict, figures: list[tuple[str, str]]) -> str:
    """A self-contained HTML page: summary table, flagged classes with their worst examples
    (embedded), and a gallery of per-image figures (linked, relative to the report)."""
    esc = html.escape
    columns = [
        ("images", "images"),
        ("energy_inside", "energy in object"),
        ("energy_near", "energy near object"),
        ("pointing_game", "pointing game"),
        ("map_iou", "map IoU"),
        ("p_with_object", "p"),
        ("p_without_object", "p with the object removed"),
        ("p_absent", "p on images without it"),
        ("context_reliance", "context reliance"),
        ("average_drop", "average drop %"),
        ("increase_in_confidence", "increase in confidence %"),
        ("deletion_auc", "deletion AUC"),
        ("insertion_auc", "insertion AUC"),
    ]
    present = [(k, t) for k, t in columns if any(k in s for s in summary["per_class"].values())]

    def cells(stats: dict) -> str:
        return "".join(f"<td>{'' if stats.get(k) is None else stats[k]}</td>" for k, _ in present)

    rows = []
    for name, stats in summary["per_class"].items():
        mark = ' class="flag"' if name in summary["likely_shortcuts"] else ""
        rows.append(f"<tr{mark}><th>{esc(name)}</th>{cells(stats)}</tr>")
    rows.append(f"<tr class='overall'><th>all</th>{cells(summary['overall'])}</tr>")
    header = "".join(f"<th>{esc(t)}</th>" for _, t in present)

    flagged_html = []
    for name in summary["likely_shortcuts"]:
        pictures = "".join(
            f"<figure><img src='{_png_data_uri(p)}'><figcaption>{esc(i)}: "
            f"{e:.2f} near the object</figcaption></figure>"
            for e, i, p in worst.get(name, [])
        )
        why = "; ".join(summary["shortcut_reasons"][name])
        flagged_html.append(
            f"<h3>{esc(name)}</h3><p>The classifier probably relies on the surroundings of "
            f"this class's objects: {esc(why)}. Its worst-localised examples:</p>"
            f"<div class='row'>{pictures}</div>"
        )
    if summary["shortcut_rule"] == "needs ground-truth masks":
        verdict = "<p>No ground-truth masks: localisation and shortcut checks were skipped.</p>"
    elif not flagged_html:
        verdict = (
            "<p>No class was flagged: every class keeps most of its map energy near its "
            f"objects ({esc(summary['shortcut_rule'])}).</p>"
        )
    else:
        verdict = f"<p>Flagged when {esc(summary['shortcut_rule'])}.</p>" + "".join(flagged_html)
    gallery = "".join(
        f"<figure><img src='{esc(path)}'><figcaption>{esc(image_id)}</figcaption></figure>"
        for image_id, path in figures
    )
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>wsss explain report</title>
<style>
body {{ font-family: sans-serif; margin: 2em; }}
table {{ border-collapse: collapse; }} td, th {{ border: 1px solid #ccc; padding: 4px 8px; }}
tr.flag {{ background: #fdd; }} tr.overall {{ font-weight: bold; }}
.row, .gallery {{ display: flex; flex-wrap: wrap; gap: 8px; }}
figure {{ margin: 0; }} figcaption {{ font-size: small; }}
</style></head><body>
<h1>What the classifier looks at</h1>
<p>Method: {esc(summary["method"])}; {summary["images"]} images.</p>
<h2>Per class</h2>
<table><tr><th>class</th>{header}</tr>{"".join(rows)}</table>
<p>Energy: share of the map inside (or near) the objects. Pointing game: the map's peak is on
the object. p with the object removed: the class probability once the object is filled in from
its surroundings; context reliance: the share of the class's evidence (above its level on images
without it) that survives the removal. A class recognised by its context keeps much of it.
Average drop and increase in confidence: the class probability when only the map's
region of the image is kept. Deletion (lower is better) and insertion (higher is better): the
probability as the most salient pixels are removed or added.</p>
<h2>Likely shortcuts</h2>
{verdict}
<h2>Images</h2>
<div class="gallery">{gallery}</div>
</body></html>
"""
