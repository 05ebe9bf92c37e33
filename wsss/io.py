"""Atomic file writes: a crash or a kill never leaves a half-written output behind."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path in the same directory; rename it onto ``path`` on success.

    The rename is atomic on POSIX, so readers (and a resumed run) see either the old file or the
    complete new one. On error the temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def write_atomic(path: str | os.PathLike, write: Callable[[Path], Any]) -> None:
    """Call ``write(tmp_path)`` and move the result onto ``path`` atomically."""
    with atomic_path(path) as tmp:
        write(tmp)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2) + "\n")


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def output_path(out_dir: Path, folder: str, image_id: str, suffix: str, create=False) -> Path:
    """``out_dir/folder/<image_id><suffix>``, refusing any id that would leave ``folder``;
    with ``create``, its parent folders are made."""
    base = (out_dir / folder).resolve()
    path = (base / f"{image_id}{suffix}").resolve()
    if not path.is_relative_to(base):
        raise ValueError(f"image id {image_id!r} would write outside {base}")
    if create:
        path.parent.mkdir(parents=True, exist_ok=True)
    return path


def default_cache_dir() -> Path:
    """Where generated datasets and demo classifiers are cached: ``$WSSS_CACHE``, else
    ``~/.cache/wsss`` (the commands' ``cache_dir`` default)."""
    return Path(os.environ.get("WSSS_CACHE", Path.home() / ".cache" / "wsss")).expanduser()
