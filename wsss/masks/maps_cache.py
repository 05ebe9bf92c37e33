"""Maps kept between runs: a rerun that changes only what comes after the maps (the threshold
rule, the background score, the CRF, the export) reads them instead of recomputing them.

A :class:`MapsCache` folder holds, for one set of map-determining settings (the classifier's
weights, the ``cam`` settings, the map refiner's, mixed precision), each image's normalised maps
at the working resolution (float16, after the refiner), under a name derived from the image's
path, size and classes. A predictor made with ``maps_cache=<folder>`` reads its maps through a
:class:`CachedMaps`: the maps themselves in one such folder and, with a refiner, the refined
maps in another, so a run with another refiner (or IRN's seeds) shares the first.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np

from wsss.io import atomic_path, file_digest


class MapsCache:
    """``root/<settings key>/<2 hex>/<image key>.npz``; ``key`` names the settings (see
    :func:`maps_key`). Unreadable entries count as missing."""

    def __init__(self, root: str | Path, key: str):
        self.folder = Path(root).expanduser() / key

    def _path(self, name: object, shape: tuple, classes) -> Path:
        what = json.dumps([str(name), list(shape), [int(c) for c in classes]])
        digest = hashlib.sha256(what.encode()).hexdigest()
        return self.folder / digest[:2] / f"{digest[2:24]}.npz"

    def load(self, name: object, shape: tuple, classes) -> np.ndarray | None:
        """The maps of the image ``name`` of ``shape`` for ``classes``, or None."""
        path = self._path(name, shape, classes)
        try:
            with np.load(path) as data:
                return data["maps"].astype(np.float32)
        except (OSError, KeyError, ValueError, EOFError):
            return None

    def save(self, name: object, shape: tuple, classes, maps: np.ndarray) -> np.ndarray:
        """Keep ``maps``; returns them as kept (float16 values, as float32), which the caller
        uses from then on, so a run and its rerun from the cache see the same numbers."""
        path = self._path(name, shape, classes)
        path.parent.mkdir(parents=True, exist_ok=True)
        kept = maps.astype(np.float16)
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, maps=kept)
        return kept.astype(np.float32)


def maps_key(weights: str, cam, amp: bool, refiner=None) -> str:
    """A digest of what determines the maps: the classifier's ``weights`` digest, the ``cam``
    settings, mixed precision and the ``refiner``'s settings (not its background score, which
    only the threshold rule reads). A checkpoint or prototypes file rewritten in place makes new
    maps, so their bytes count, not their paths."""
    refined = asdict(refiner) if refiner else None
    if refined:
        refined.pop("bg_threshold")
        if refined.get("checkpoint"):
            refined["checkpoint"] = file_digest(refined["checkpoint"])
    cam = asdict(cam)
    for path in ("prototypes", "checkpoint"):  # LPCAM's prototypes, ReCAM's weights
        if cam.get(path):
            cam[path] = file_digest(cam[path])
    parts = [weights, cam, amp] + ([refined] if refined else [])
    # not wsss.io.json_digest: its sorted keys would rename every maps cache users already hold
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:16]


class CachedMaps:
    """A predictor's maps kept in ``root``: the maps themselves (:func:`maps_key` without the
    refiner) and, with a ``refiner``, the refined maps, each computed only where missing."""

    def __init__(self, root: str | Path, weights: str, cam, amp: bool, refiner=None):
        self.maps = MapsCache(root, maps_key(weights, cam, amp))
        self.refined = MapsCache(root, maps_key(weights, cam, amp, refiner)) if refiner else None

    def get(
        self,
        names: Sequence[object],
        size: tuple[int, int],
        classes: Sequence[Sequence[int]],
        compute: Callable[[list[int]], list[np.ndarray]],
        refine: Callable[[list[int], list[np.ndarray]], list[np.ndarray]],
    ) -> list[np.ndarray]:
        """The maps of images ``names`` (of ``size``, for ``classes``): read where kept, else
        ``compute(indices)`` (the maps of those images) then ``refine(indices, maps)``, kept."""
        keys = [(name, size, tuple(c)) for name, c in zip(names, classes, strict=True)]
        final = self.refined or self.maps
        found = [final.load(*key) for key in keys]
        missing = [i for i, maps in enumerate(found) if maps is None]
        if not missing:
            return found
        raw = [self.maps.load(*keys[i]) for i in missing] if self.refined else [None] * len(missing)
        todo = [i for i, maps in zip(missing, raw, strict=True) if maps is None]
        if todo:
            for i, maps in zip(todo, compute(todo), strict=True):
                raw[missing.index(i)] = self.maps.save(*keys[i], maps)
        for i, maps in zip(missing, refine(missing, raw), strict=True):
            found[i] = self.refined.save(*keys[i], maps) if self.refined else maps
        return found
