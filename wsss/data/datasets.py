"""The ``dataset`` config group: one settings class per on-disk format, registered by name.

A :data:`DATASETS` entry is a dataclass deriving from :class:`DatasetSettings` whose fields are
the keys of its YAML file (``conf/dataset/<name>.yaml``) and whose :meth:`~DatasetSettings.load`
reads one split in place and returns a :class:`~wsss.data.split.LabelledSplit`, checking every
listed file before any work starts (errors name the file and the line).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import MISSING

from wsss.data.split import LabelledSplit
from wsss.errors import ConfigError
from wsss.registry import Registry


@dataclass
class DatasetSettings:
    """Base of every dataset settings class: ``name`` is its registered name."""

    name: str = MISSING

    def load(
        self, split: str, *, cache_dir: Path | None = None, allow_unlabelled: bool = False
    ) -> LabelledSplit:
        """Read split ``split``. ``cache_dir`` is where generated datasets live;
        ``allow_unlabelled`` lets a format that can list images without labels do so (the
        classifier then labels them, see ``predict_labels``)."""
        raise NotImplementedError

    def split_entry(self, split: str) -> Any:
        """``self.splits[split]``, or an error listing the splits."""
        splits = getattr(self, "splits", {})
        if split not in splits:
            raise ConfigError(
                f"dataset {self.name!r} has no split {split!r}; splits: {sorted(splits)}"
            )
        return splits[split]


DATASETS: Registry[type[DatasetSettings]] = Registry("dataset type")
