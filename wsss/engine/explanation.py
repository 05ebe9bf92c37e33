"""Explaining a classifier with its class maps, and judging what it learned.

For each image: the top-k predicted classes with their probabilities and maps (the CAM paper's
figure of a photo's top-5 predictions), plus the maps of any class the user names. Over a set of
images: per-class localisation metrics where masks exist, faithfulness metrics always, and a
flag on classes whose maps mostly lie away from their objects (a classifier that learned a
shortcut, such as water for boats). Written to ``explain.json`` and ``report.html``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage
from torch import nn
from tqdm import tqdm

from wsss.cams import CamSettings
from wsss.data.image_items import ImageItem
from wsss.errors import ConfigError
from wsss.export import save_rgb
from wsss.export.explain_report import render_explain_report
from wsss.export.pictures import class_figure
from wsss.io import write_json, write_text
from wsss.masks import MaskPredictor
from wsss.masks.quality import remove_object
from wsss.metrics import maps as map_metrics
from wsss.models import CAMClassifier

log = logging.getLogger(__name__)


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
    #: images without the class) once the objects are removed. On the demo, boats (95% on
    #: water) keep close to half of it, varying by a few points from machine to machine, and
    #: every other class a fifth or less: a third separates them with room on both sides
    context_reliance: float = 0.35
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


def explain(
    model: nn.Module,
    items: Iterable[ImageItem],
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
    out_dir = Path(out_dir)
    (out_dir / "figures").mkdir(parents=True, exist_ok=True)
    explainer = _Explainer(MaskPredictor(model, cam, device=device), class_names, settings)
    for n, item in enumerate(tqdm(items, total=total, desc="explain", unit="img")):
        explainer.add(n, item, out_dir)
    if not explainer.per_image:
        raise ConfigError("no images to explain")
    summary = explainer.summary(cam.method)
    write_json(out_dir / "explain.json", summary)
    worst = {class_names[c]: r.worst for c, r in explainer.records.items()}
    write_text(out_dir / "report.html", render_explain_report(summary, worst, explainer.figures))
    return summary


class _Explainer:
    """What ``explain`` gathers image by image: each image's entry, each class's record, and
    the figures written."""

    def __init__(self, predictor: MaskPredictor, class_names, settings: ExplainSettings):
        self.predictor, self.class_names, self.settings = predictor, class_names, settings
        self.model, self.device = predictor.model, predictor.device
        kind = settings.probability
        if kind == "auto":
            kind = "sigmoid" if isinstance(self.model, CAMClassifier) else "softmax"
        self.probability_kind = kind
        self.extra_classes = [list(class_names).index(c) for c in settings.classes]
        self.records: dict[int, _ClassRecord] = {}
        self.per_image: list[dict] = []
        self.figures: list[tuple[str, str]] = []
        self.has_masks = False

    def probability_of(self, cls: int):
        """The class's probability as a function of a batch of images."""

        def probability(batch: torch.Tensor) -> torch.Tensor:
            with torch.inference_mode():
                return _probabilities(self.model(batch), self.probability_kind)[:, cls]

        return probability

    def add(self, n: int, item: ImageItem, out_dir: Path) -> None:
        """Explain one image: its top classes' maps, and a judgement of each labelled class."""
        names = self.class_names
        x = torch.from_numpy(np.ascontiguousarray(item.image)).permute(2, 0, 1).float() / 255
        x = x.to(self.device)
        with torch.inference_mode():
            probs = _probabilities(self.model(x[None]), self.probability_kind)[0].cpu()
        top = [int(c) for c in probs.topk(min(self.settings.top_k, len(probs))).indices]
        judged = list(item.labels) if item.labels else top[:1]
        shown = list(dict.fromkeys([*top, *self.extra_classes]))
        wanted = list(dict.fromkeys([*shown, *judged]))
        maps = dict(zip(wanted, self.predictor.maps([item.image], [wanted])[0], strict=True))
        entry = {
            "image": item.image_id,
            "top_k": [{"class": names[c], "probability": round(float(probs[c]), 4)} for c in top],
            "labels": [names[c] for c in item.labels] if item.labels else None,
            "classes": {},
        }
        if item.labels:
            for cls in set(range(len(probs))) - set(item.labels):
                self.records.setdefault(cls, _ClassRecord()).p_absent.append(float(probs[cls]))
        for cls in judged:
            entry["classes"][names[cls]] = self.judge(cls, item, x, float(probs[cls]), maps[cls])
        self.per_image.append(entry)
        if self.settings.figures is None or n < self.settings.figures:
            titles = [f"{names[c]} {float(probs[c]):.2f}" for c in shown]
            figure = class_figure(item.image, np.stack([maps[c] for c in shown]), titles)
            save_rgb(out_dir / "figures" / f"{n:05d}.png", figure)
            self.figures.append((item.image_id, f"figures/{n:05d}.png"))

    def judge(self, cls: int, item: ImageItem, x: torch.Tensor, p_full: float, cam) -> dict:
        """Faithfulness of the class's map, and, where its object's mask is known, how well
        the map localises it."""
        record = self.records.setdefault(cls, _ClassRecord())
        probability = self.probability_of(cls)
        p_masked = map_metrics.map_only_probability(probability, x, cam)
        deletion, insertion = map_metrics.deletion_insertion(
            probability, x, cam, self.settings.deletion_steps
        )
        record.p_full.append(p_full)
        record.p_masked.append(p_masked)
        record.deletion.append(deletion)
        record.insertion.append(insertion)
        metrics = {
            "p": round(p_full, 4),
            "p_map_only": round(p_masked, 4),
            "deletion_auc": round(deletion, 4),
            "insertion_auc": round(insertion, 4),
        }
        if item.mask is not None and (item.mask == cls + 1).any():
            metrics.update(self.localisation(cls, item, x, p_full, cam, record))
        return metrics

    def localisation(self, cls, item: ImageItem, x, p_full: float, cam, record) -> dict:
        """Where the map's energy lies against the object's mask, and what the classifier
        says with the object removed; keeps the class's worst-localised examples."""
        self.has_masks = True
        settings = self.settings
        obj = item.mask == cls + 1
        margin = max(1, round(settings.near_margin * max(obj.shape)))
        near = ndimage.binary_dilation(obj, iterations=margin)
        inside = map_metrics.energy_inside(cam, obj)
        near_energy = map_metrics.energy_inside(cam, near)
        record.energy_inside.append(inside)
        record.energy_near.append(near_energy)
        record.pointing.append(map_metrics.pointing_hit(cam, obj, settings.pointing_tolerance))
        record.iou.append(map_metrics.map_iou(cam, obj, settings.iou_threshold))
        removed = self.probability_of(cls)(remove_object(x, obj)[None])
        record.p_with_object.append(p_full)
        record.p_without_object.append(float(removed[0]))
        worst = record.worst
        makes_the_cut = len(worst) < settings.worst_examples or near_energy < worst[-1][0]
        if near_energy == near_energy and makes_the_cut:  # render only kept examples
            picture = class_figure(item.image, cam[None], [self.class_names[cls]])
            worst.append((near_energy, item.image_id, picture))
            worst.sort(key=lambda w: w[0])
            del worst[settings.worst_examples :]
        return {"energy_inside": round(inside, 4), "energy_near": round(near_energy, 4)}

    def summary(self, method: str) -> dict:
        """``explain.json``: per class, overall, the flagged classes and every image's entry."""
        names, settings = self.class_names, self.settings
        judged = {c: r for c, r in sorted(self.records.items()) if r.p_full}
        per_class = {names[c]: r.summary() for c, r in judged.items()}
        reasons = {name: shortcut_reasons(stats, settings) for name, stats in per_class.items()}
        reasons = {name: why for name, why in reasons.items() if why}
        overall = _ClassRecord()
        for record in judged.values():
            for key in (
                f.name for f in fields(_ClassRecord) if f.name not in ("worst", "p_absent")
            ):
                getattr(overall, key).extend(getattr(record, key))
        rule = "needs ground-truth masks"
        if self.has_masks:
            rule = (
                f"less than {settings.shortcut_energy:.0%} of the map energy within "
                f"{settings.near_margin:.0%} of the image size around the objects, or at least "
                f"{settings.context_reliance:.0%} of the class evidence left with the objects "
                "removed"
            )
        return {
            "method": method,
            "images": len(self.per_image),
            "overall": overall.summary(),
            "per_class": per_class,
            "likely_shortcuts": list(reasons),
            "shortcut_reasons": reasons,
            "shortcut_rule": rule,
            "per_image": self.per_image,
        }


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
