"""Maps kept between runs: a rerun that changes only what comes after the maps (the threshold
rule, the background score, the CRF, the export) reads them instead of recomputing them.

A :class:`MapsCache` folder holds, for one set of map-determining settings (the classifier's
weights, the ``cam`` settings, the map refiner's, mixed precision), each image's normalised maps
at the working resolution (float16, after the refiner), under a name derived from the image's
path, size and classes. :meth:`MaskPredictor.stream` consults it when given one.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from wsss.io import atomic_path


class MapsCache:
    """``root/<settings key>/<2 hex>/<image key>.npz``; ``key`` names the settings (see
    :meth:`MaskPredictor.maps_key`). Unreadable entries count as missing."""

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
