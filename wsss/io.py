"""Atomic file writes: a crash or a kill never leaves a half-written output behind.

Files and folders are created as an ordinary ``open()`` or ``mkdir()`` would create them, with
the permissions the process's umask gives (``tempfile`` would make them owner-only), so a team
folder, a container running as another user or a web server can read what wsss writes.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from wsss.errors import write_failure


def _temporary_name(path: Path) -> Path:
    return path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"


def create_temporary_file(path: Path) -> Path:
    """A new, empty file beside ``path`` with a temporary name (``.<name>.<random>.tmp``),
    created with mode 0o666 less the umask."""
    while True:
        tmp = _temporary_name(path)
        try:
            os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
            return tmp
        except FileExistsError:  # a name another writer drew: draw again
            continue


def create_temporary_dir(path: Path) -> Path:
    """A new folder beside ``path`` with a temporary name, mode 0o777 less the umask."""
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        tmp = _temporary_name(path)
        try:
            tmp.mkdir()
            return tmp
        except FileExistsError:
            continue


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path in the same directory; rename it onto ``path`` on success.

    The rename is atomic on POSIX, so readers (and a resumed run) see either the old file or the
    complete new one. On error the temporary file is removed and ``path`` is untouched; a full
    disk, a read-only folder or a file-size limit is reported as a wsss error naming the file
    (:func:`~wsss.errors.write_failure`).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = create_temporary_file(path)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except OSError as exc:
        failure = write_failure(path, exc)
        if failure is not None:
            raise failure from exc
        raise
    finally:
        tmp_path.unlink(missing_ok=True)


def json_digest(parts: Any) -> str:
    """A short digest of ``parts`` written as JSON with sorted keys (a value JSON cannot hold as
    its ``str``): the name of a cached stage, or the key a resumed training checks."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def file_digest(path: str | os.PathLike) -> str:
    """A short digest of a file's bytes ("missing" for no file): a cache key that changes when
    a checkpoint or prototypes file is rewritten in place."""
    try:
        return hashlib.sha256(Path(path).expanduser().read_bytes()).hexdigest()[:16]
    except OSError:
        return "missing"


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


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


def save_torch(path: str | os.PathLike, obj: Any) -> None:
    """``torch.save(obj)`` to ``path`` atomically. Serialised in memory first: torch's own
    writer turns a failed write (a full disk, a file-size limit) into an opaque RuntimeError,
    a plain write into the error that says what happened."""
    import io

    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buffer.getvalue())
