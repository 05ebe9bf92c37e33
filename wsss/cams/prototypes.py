"""LPCAM's class prototypes (Chen et al., "Extracting Class Activation Maps from Non-Discriminative
Features as well", CVPR 2023): maps from the classifier already trained, without retraining.

A CAM lights up where the classifier's weights for a class are largest, the most discriminative
part of the object. LPCAM instead describes each class by *prototypes*, cluster centres of the
final features of the training photos:

1. per class c, the features of the photos labelled c are split by their CAM: where the map
   (normalised to peak 1) exceeds ``select_threshold`` (foreground), and elsewhere (context);
2. each part is clustered with k-means on cosine distance (``clusters`` centres each);
3. a foreground centre is kept when the classifier, applied to it, gives c a softmax
   probability above ``class_threshold`` (it looks like c); a context centre is kept when that
   probability lies between ``context_low`` and ``context_high`` (it co-occurs with c, as water
   with boats, without being c);
4. the map of class c at a position with feature f is
   ``ReLU(mean_j cos(f, P_cj) - mean_k cos(f, Q_ck))`` over the kept foreground centres P and
   context centres Q (no context term when none is kept).

Every centre weighs alike, so the parts of an object the classifier needs least (a cat's body,
not only its face) count as much as the most discriminative one, and the context term pushes the
map off the background the class comes with. A class without a kept foreground centre (or
without training photos) keeps its CAM (:attr:`Prototypes.foreground` is empty for it).

The defaults are LPCAM's (its ``step/make_lpcam.py``: K 12, thresholds 0.1, 0.9, 0.05 and 0.9).
One departure: the CAM that splits a photo's features is computed from the same forward pass at
the feature map's resolution, where LPCAM downsamples its multi-scale map.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from wsss.errors import CheckpointError, ConfigError
from wsss.io import save_torch

log = logging.getLogger(__name__)

FORMAT = "wsss-prototypes"


@dataclass
class PrototypeFitSettings:
    """How the prototypes are found (see the module docstring)."""

    clusters: int = 12
    select_threshold: float = 0.1
    class_threshold: float = 0.9
    context_low: float = 0.05
    context_high: float = 0.9
    iterations: int = 30
    seed: int = 0

    def validate(self) -> None:
        if self.clusters < 1 or self.iterations < 1:
            raise ConfigError("prototype clusters and iterations must be >= 1")
        if not 0 < self.select_threshold < 1:
            raise ConfigError(f"select_threshold must be in (0, 1), got {self.select_threshold}")
        if not 0 <= self.context_low < self.context_high <= 1:
            raise ConfigError("prototype context thresholds must satisfy 0 <= low < high <= 1")


@dataclass
class Prototypes:
    """Per class (index = class index), the kept foreground centres (m, C) and context centres
    (n, C) in the classifier's feature space; an empty foreground means: use the CAM."""

    class_names: list[str]
    foreground: list[torch.Tensor]
    context: list[torch.Tensor]
    settings: dict = field(default_factory=dict)

    def save(self, path: str | Path) -> None:
        save_torch(path, {
            "format": FORMAT, "class_names": list(self.class_names),
            "foreground": [t.contiguous() for t in self.foreground],
            "context": [t.contiguous() for t in self.context], "settings": self.settings,
        })  # fmt: skip

    @classmethod
    def load(cls, path: str | Path) -> Prototypes:
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
        except FileNotFoundError:
            raise CheckpointError(f"{path}: no such prototypes file") from None
        except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same message
            raise CheckpointError(f"{path}: not a wsss prototypes file ({exc})") from None
        if not isinstance(payload, dict) or payload.get("format") != FORMAT:
            raise CheckpointError(f"{path}: not a wsss prototypes file")
        return cls(
            payload["class_names"], payload["foreground"], payload["context"], payload["settings"]
        )


def cosine_kmeans(
    x: torch.Tensor, k: int, iterations: int = 30, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """k-means of the rows of ``x`` (n, C) on cosine distance: returns the centres (k', C), the
    mean of each cluster's *unnormalised* rows (LPCAM feeds them to the classifier, so their
    scale matters), and each row's cluster (n,). k' = min(k, n); empty clusters are dropped.
    Initialised with k-means++ on the unit rows, seeded."""
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"k-means needs a non-empty (n, C) matrix, got {tuple(x.shape)}")
    x = x.float()
    unit = F.normalize(x, dim=1)
    generator = torch.Generator().manual_seed(seed)
    k = min(k, x.shape[0])
    chosen = [int(torch.randint(x.shape[0], (1,), generator=generator))]
    distance = 1 - unit @ unit[chosen[0]]
    for _ in range(1, k):
        weights = distance.clamp(min=0) ** 2
        if float(weights.sum()) <= 0:  # every row equals a chosen centre
            break
        chosen.append(int(torch.multinomial(weights, 1, generator=generator)))
        distance = torch.minimum(distance, 1 - unit @ unit[chosen[-1]])
    centres = unit[chosen]
    assignment = None
    for _ in range(iterations):
        new = (unit @ centres.T).argmax(dim=1)
        if assignment is not None and torch.equal(new, assignment):
            break
        assignment = new
        sums = torch.zeros_like(centres).index_add_(0, assignment, unit)
        occupied = torch.bincount(assignment, minlength=len(centres)) > 0
        centres = F.normalize(sums[occupied], dim=1)
    assignment = (unit @ centres.T).argmax(dim=1)  # of the final centres
    counts = torch.bincount(assignment, minlength=len(centres))
    means = torch.zeros_like(centres).index_add_(0, assignment, x) / counts.clamp(min=1)[:, None]
    kept = counts > 0
    remap = torch.cumsum(kept.long(), 0) - 1
    return means[kept], remap[assignment]


def fit_prototypes(
    features: Iterable[tuple[torch.Tensor, Iterable[int]]],
    cam_weights: torch.Tensor,
    class_names: list[str],
    settings: PrototypeFitSettings,
) -> Prototypes:
    """The prototypes of every class from ``features``: one (C, h, w) final feature map per
    training photo with its class indices, and the classifier's (K, C) weights."""
    settings.validate()
    weights = cam_weights.detach().float().cpu()
    num_classes = weights.shape[0]
    inside: list[list[torch.Tensor]] = [[] for _ in range(num_classes)]
    outside: list[list[torch.Tensor]] = [[] for _ in range(num_classes)]
    for feature, labels in features:
        flat = feature.float().cpu().flatten(1).T  # (h*w, C)
        for c in labels:
            cam = torch.relu(flat @ weights[c])
            cam = cam / cam.max() if float(cam.max()) > 0 else cam
            selected = cam > settings.select_threshold
            inside[c].append(flat[selected].half())
            outside[c].append(flat[~selected].half())

    def centres_of(parts: list[torch.Tensor], c: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The k-means centres of class c's features and the classifier's softmax
        probability of c for each (none for no features)."""
        rows = torch.cat(parts) if parts else weights.new_zeros(0, weights.shape[1])
        if not len(rows):
            return rows, rows.new_zeros(0)
        centres, _ = cosine_kmeans(rows, settings.clusters, settings.iterations, settings.seed)
        return centres, torch.softmax(centres @ weights.T, dim=1)[:, c]

    foreground, context = [], []
    for c in range(num_classes):
        centres, probability = centres_of(inside[c], c)
        kept_fg = centres[probability > settings.class_threshold]
        centres, probability = centres_of(outside[c], c)
        kept_ctx = centres[(probability > settings.context_low)
                           & (probability < settings.context_high)]  # fmt: skip
        if not len(kept_fg):
            log.warning(
                "LPCAM: no foreground prototype of %r passed the class threshold %.2f; its "
                "maps stay CAMs",
                class_names[c], settings.class_threshold,
            )  # fmt: skip
        foreground.append(kept_fg)
        context.append(kept_ctx)
    return Prototypes(list(class_names), foreground, context, asdict(settings))


def prototype_maps(
    features: torch.Tensor,
    cam_weights: torch.Tensor,
    prototypes: Prototypes,
    targets: Iterable[Iterable[int]],
) -> list[torch.Tensor]:
    """LPCAM's maps of ``features`` (B, C, h, w) for each image's target classes: one
    (len(targets[i]), h, w) tensor per image, after ReLU, at the feature resolution."""
    unit = F.normalize(features.float(), dim=1)
    maps = []
    for i, classes in enumerate(targets):
        per_class = []
        for c in classes:
            centres = prototypes.foreground[c]
            if not len(centres):
                per_class.append(
                    torch.relu(torch.einsum("c,chw->hw", cam_weights[c].float(), features[i]))
                )
                continue
            similarity = _mean_cosine(unit[i], centres)
            if len(prototypes.context[c]):
                similarity = similarity - _mean_cosine(unit[i], prototypes.context[c])
            per_class.append(torch.relu(similarity))
        empty = features.new_zeros(0, *features.shape[2:])
        maps.append(torch.stack(per_class) if per_class else empty)
    return maps


def _mean_cosine(unit_features: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """Mean over centres of the cosine similarity of each position's (unit) feature, (h, w)."""
    directions = F.normalize(centres.to(unit_features), dim=1).mean(dim=0)
    return torch.einsum("c,chw->hw", directions, unit_features)
