"""The folder dataset format: images, a labels file per split, optional masks and a class list.

Layout (the built-in synthetic dataset is written in exactly this format)::

    root/
      classes.txt        one class name per line; line i is class id i (1-based; 0 is background)
      images/<id>.png    any format PIL reads; <id> may contain sub-folders
      masks/<id>.png     optional: uint8 class indices, 0 background, 255 ignored in evaluation
      train.csv          header "file,labels"; labels separated by ";" (e.g. "cat;sofa")
      eval.csv

A labels file may also be JSON: ``{"<file>": ["cat", "sofa"], ...}``. ``file`` is relative to
``images/`` and may not leave it.
"""

from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath

from omegaconf import MISSING

from wsss.data.datasets import DATASETS, DatasetSettings
from wsss.data.split import LabelledSplit, Sample, read_text_file
from wsss.errors import DataError


def read_class_names(path: str | os.PathLike) -> tuple[str, ...]:
    """Read ``classes.txt``: one non-empty, unique name per line."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: class list not found")
    names = [line.strip() for line in read_text_file(path, "class list").splitlines()]
    names = [n for n in names if n]
    if not names:
        raise DataError(f"{path}: class list is empty")
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise DataError(f"{path}: duplicate class names {dupes}")
    if "background" in names:
        raise DataError(f"{path}: 'background' is implicit (id 0) and must not be listed")
    return tuple(names)


def _read_label_rows(path: Path) -> list[tuple[str, list[str], str]]:
    """Return (file, [class names], where) rows from a CSV or JSON labels file."""
    if not path.is_file():
        raise DataError(f"{path}: labels file not found")
    if path.suffix.lower() == ".txt":  # a plain list of files: images without labels
        lines = [line.strip() for line in read_text_file(path, "list of files").splitlines()]
        return [(f, [], f"line {i}") for i, f in enumerate(lines, start=1) if f]
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(read_text_file(path, "labels file"), object_pairs_hook=_no_repeats)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}: invalid JSON ({exc})") from exc
        except _RepeatedKey as exc:
            raise DataError(f"{path}: {exc} (a CSV repeat is refused alike)") from None
        if not isinstance(data, dict):
            raise DataError(f"{path}: expected an object {{file: [class names]}}")
        rows = []
        for file, names in data.items():
            if isinstance(names, str):
                names = [names]
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                raise DataError(f"{path}: entry {file!r}: labels must be a list of class names")
            rows.append((file, [n.strip() for n in names if n.strip()], f"entry {file!r}"))
        return rows
    reader = csv.DictReader(io.StringIO(read_text_file(path, "labels file"), newline=""))
    try:
        if reader.fieldnames is None or not {"file", "labels"} <= set(reader.fieldnames):
            raise DataError(f"{path}: CSV header must contain 'file' and 'labels'")
        rows = []
        for row in reader:
            file = (row["file"] or "").strip()
            names = [n.strip() for n in (row["labels"] or "").split(";") if n.strip()]
            rows.append((file, names, f"line {reader.line_num}"))
    except csv.Error as exc:
        raise DataError(f"{path}: line {reader.line_num}: not valid CSV ({exc})") from exc
    return rows


def safe_relative(file: str, where: str, path: Path, inside: str = "images/") -> PurePosixPath:
    """Reject paths that could escape the dataset folder (absolute, ``..``, drive letters) or
    name no file in it (empty, ``.``)."""
    rel = PurePosixPath(file.replace("\\", "/"))
    if not file or rel.is_absolute() or ".." in rel.parts or ":" in file or not rel.name:
        raise DataError(f"{path}: {where}: file {file!r} must be a relative path inside {inside}")
    return rel


class _RepeatedKey(ValueError):
    pass


def _no_repeats(pairs: list[tuple[str, object]]) -> dict:
    """A JSON object's pairs as a dict, refusing a key given twice (the last would win)."""
    found: dict = {}
    for key, value in pairs:
        if key in found:
            raise _RepeatedKey(f"entry {key!r} is listed twice")
        found[key] = value
    return found


def load_split(
    root: str | os.PathLike,
    labels_file: str,
    class_names: tuple[str, ...] | None = None,
    images_dir: str = "images",
    masks_dir: str | None = "masks",
    allow_unlabelled: bool = False,
) -> LabelledSplit:
    """Read one split of a folder dataset, checking every row before any work starts.

    ``class_names`` defaults to ``root/classes.txt`` or, if that is absent, the sorted set of names
    in the labels file. Masks are used when ``root/<masks_dir>/<id>.png`` exists for every image.
    The labels file is a CSV (``file,labels``), a JSON object ``{file: [names]}`` or a ``.txt``
    list of files without labels. An empty label set is an error unless ``allow_unlabelled``
    (the classifier then labels those images, see ``predict_labels``).
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: dataset folder not found")
    labels_path = root / labels_file
    rows = _read_label_rows(labels_path)
    if not rows:
        raise DataError(f"{labels_path}: no images listed")
    if class_names is None:
        classes_path = root / "classes.txt"
        if classes_path.is_file():
            class_names = read_class_names(classes_path)
        else:
            class_names = tuple(sorted({n for _, names, _ in rows for n in names}))
    index = {name: i for i, name in enumerate(class_names)}

    samples, seen = [], {}
    for file, names, where in rows:
        rel = safe_relative(file, where, labels_path)
        unknown = [n for n in names if n not in index]
        if unknown:
            raise DataError(
                f"{labels_path}: {where}: unknown class name(s) {unknown} for {file!r}; "
                f"known classes: {list(class_names)}"
            )
        if not names and not allow_unlabelled:
            raise DataError(
                f"{labels_path}: {where}: {file!r} has an empty label set (set "
                f"predict_labels=<probability> to let the classifier label such images)"
            )
        image_id = str(rel.with_suffix(""))
        if image_id in seen:
            raise DataError(
                f"{labels_path}: {where}: duplicate image id {image_id!r} (also {seen[image_id]})"
            )
        seen[image_id] = where
        mask_path = root / masks_dir / f"{image_id}.png" if masks_dir else None
        samples.append(
            Sample(
                image_id=image_id,
                file_name=rel.as_posix(),
                image_path=root / images_dir / rel,
                labels=tuple(sorted({index[n] for n in names})),
                mask_path=mask_path,
            )
        )
    if not all(s.mask_path is not None and s.mask_path.is_file() for s in samples):
        samples = [replace(s, mask_path=None) for s in samples]
    return LabelledSplit(tuple(class_names), tuple(samples), root, images_dir)


def write_labels_csv(path: str | os.PathLike, rows: list[tuple[str, list[str]]]) -> None:
    """Write a ``file,labels`` CSV (labels joined with ``;``)."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["file", "labels"])
        for file, names in rows:
            writer.writerow([file, ";".join(names)])


@DATASETS.register("folder")
@dataclass
class FolderDataset(DatasetSettings):
    """Your own data in the folder format (``dataset=folder``)."""

    name: str = "folder"
    root: str = MISSING
    #: split name -> labels file (CSV, JSON or a .txt list) relative to ``root``
    splits: dict[str, str] = field(
        default_factory=lambda: {"train": "train.csv", "eval": "eval.csv"}
    )
    #: class names in id order; null: ``root/classes.txt``, else sorted names in the labels file
    classes: list[str] | None = None
    images_dir: str = "images"
    masks_dir: str = "masks"

    def load(self, split, *, cache_dir=None, allow_unlabelled=False) -> LabelledSplit:
        return load_split(
            Path(self.root).expanduser(),
            self.split_entry(split),
            class_names=tuple(self.classes) if self.classes else None,
            images_dir=self.images_dir,
            masks_dir=self.masks_dir,
            allow_unlabelled=allow_unlabelled,
        )
