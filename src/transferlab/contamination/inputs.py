"""One split of a data set, as the contamination check reads it: example ids, and image files or texts.

Ids are what matches.csv and `evaluate --contamination` name examples by:
- images: the path relative to the data set's folder, '/'-separated (``test/cat/0042.jpg``);
- text: the 0-based data-row index in the split's file (header not counted), as a string.

A data set may hold only the split being checked (a folder with just ``test/<class>/...``, or just
``test.tsv``); a folder of images without class folders is read as it is (labels are not needed here).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from transferlab.data import DataError, DataOptions, SkipLog, image_id
from transferlab.data._image_folder import class_folders, has_images, image_files
from transferlab.data._split import VAL_NAMES
from transferlab.data._text import find_text_file
from transferlab.data._text_reader import TEXT_EXTENSIONS, read_text_file

SPLITS = ("train", "val", "test")


@dataclass
class SplitExamples:
    """The examples of one split: `ids`, and `paths` (images) or `texts` (text)."""

    modality: str  # "image" or "text"
    root: Path  # the data set's folder (text: the folder holding the file)
    split: str
    file: str | None  # text: the split's file name; images: None
    ids: list[str]
    paths: list[str]
    texts: list[str]
    labels: list[str]  # text: each row's label; images: each file's class folder ("" without class folders)
    skipped: SkipLog

    def __len__(self) -> int:
        return len(self.ids)


def _split_names(split: str) -> tuple[str, ...]:
    return VAL_NAMES if split == "val" else (split,)


def _image_folder(root: Path, split: str) -> Path | None:
    for name in _split_names(split):
        if (root / name).is_dir():
            return root / name
    has_splits = any((root / n).is_dir() for s in SPLITS for n in _split_names(s))
    if split == "train" and not has_splits:
        return root  # the data set is one training tree: class folders directly in root
    return None


def modality_of(path: Path) -> str:
    """"image" for a folder of images, "text" for a .tsv/.csv/.jsonl file or a folder of them."""
    if path.is_file():
        if path.suffix.lower() in TEXT_EXTENSIONS:
            return "text"
        raise DataError(f"{path} is a file but not a text file (.tsv, .csv, .jsonl); give a folder of images "
                        "or a text file")
    if not path.is_dir():
        raise DataError(f"{path} does not exist")
    if any(find_text_file(path, n) for s in SPLITS for n in _split_names(s)):
        return "text"
    if has_images(path):
        return "image"
    raise DataError(f"{path} holds neither images nor train/val/test text files")


def _classes(spec: str | None) -> list[str] | None:
    """--classes as names; one class is fine here (the check needs no classifier)."""
    if spec is None:
        return None
    names = [n.strip() for n in str(spec).split(",")]
    if not names or any(not n for n in names):
        raise DataError(f"--classes {spec!r} has an empty name; separate class names with single commas")
    return names


def read_split(path: str | Path, split: str, options: DataOptions | None = None,
               classes: str | None = None) -> SplitExamples:
    """The examples of `split` ("train", "val" (or valid/validation/dev), "test") of a data set, read with
    `options` (text columns, header); only of the comma-separated `classes` (text: label values) when given."""
    options = options or DataOptions()
    if options.classes is not None:
        raise ValueError("pass the classes as read_split(..., classes=); DataOptions needs two or more")
    keep = _classes(classes)
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; choose from {', '.join(SPLITS)}")
    root = Path(path)
    modality = modality_of(root)
    skipped = SkipLog()
    if modality == "text":
        file = root if root.is_file() else next(
            (f for f in (find_text_file(root, n) for n in _split_names(split)) if f is not None), None)
        if file is None:
            raise DataError(f"{root} has no {split} file ({'/'.join(_split_names(split))}.tsv, .csv or .jsonl)")
        rows = read_text_file(file, options, skipped)
        picked = [i for i, label in enumerate(rows.labels) if keep is None or label in keep]
        if not picked:
            raise DataError(f"{file} has no rows of the classes --classes selects ({', '.join(keep)})")
        return SplitExamples("text", file.parent, split, file.name, [str(rows.row_ids[i]) for i in picked], [],
                             [rows.texts[i] for i in picked], [rows.labels[i] for i in picked], skipped)
    folder = _image_folder(root, split)
    if folder is None:
        hint = " (a folder without split folders is the train split: --split train)" if has_images(root) else ""
        raise DataError(f"{root} has no {split}/ folder{hint}")
    classes = class_folders(folder)
    if keep is not None:
        if not classes:
            raise DataError(f"{folder} has no class folders, so --classes {','.join(keep)} selects nothing")
        present = {d.name for d in classes}
        missing = [c for c in keep if c not in present]
        if missing:
            raise DataError(f"{folder} has no class folder(s) {', '.join(missing)} (--classes); "
                            f"it has {', '.join(sorted(present))}")
        paths = [p for d in classes if d.name in set(keep) for p in image_files(d, skipped)]
    else:  # every image under the folder, in class folders or not (none may escape the check)
        paths = image_files(folder, skipped)
    if not paths:
        raise DataError(f"{folder} holds no images")
    ids = [image_id(p, str(root)) for p in paths]  # as `evaluate --contamination` names them
    under = [Path(os.path.relpath(p, folder)).parts for p in paths]
    labels = [parts[0] if len(parts) > 1 else "" for parts in under]  # the class folder, if any
    return SplitExamples("image", root, split, None, ids, paths, [], labels, skipped)
