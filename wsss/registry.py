"""One registry style for every extension point: a name -> entry table filled by a decorator.

wsss has six: backbones (:data:`wsss.models.BACKBONES`), datasets (:data:`wsss.data.DATASETS`),
CAM methods (:data:`wsss.cams.CAM_METHODS`) and among them the gradient methods' formulas
(:data:`wsss.cams.GRADIENT_FORMULAS`), map refiners (:data:`wsss.masks.REFINERS`) and
segmentation models (:data:`wsss.models.segmentation.SEGMENTATION_MODELS`). Each registry's
docstring at its definition states what an entry must be. Adding one is one decorated function or
class (plus, for a config group, one YAML file in ``conf/<group>/``)::

    @CAM_METHODS.register("mycam")
    @dataclass
    class MyCam(CamSettings):
        ...
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from wsss.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """Entries of one kind (``kind`` names it in errors), looked up by name."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: make the decorated function or class available as ``name``."""

        def decorator(entry: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._entries[name] = entry
            return entry

        return decorator

    def get(self, name: str) -> T:
        """The entry registered as ``name``; a ConfigError listing the choices otherwise."""
        if name not in self._entries:
            raise ConfigError(f"unknown {self.kind} {name!r}; available: {self.names()}")
        return self._entries[name]

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def items(self) -> list[tuple[str, T]]:
        return [(name, self._entries[name]) for name in self.names()]
