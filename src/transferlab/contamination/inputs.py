"""One split of a data set, as the contamination check reads it: example ids, and image files or texts.

Ids are what matches.csv and `evaluate --contamination` name examples by:
- images: the path relative to the data set's folder, '/'-separated (``test/cat/0042.jpg``);
- text: the 0-based data-row index in the split's file (header not counted), as a string.

- digits (``digits``, ``digits:0-4``): ``digits[i]``, row i of scikit-learn's ``load_digits()``, as finetune names it.

A data set may hold only the split being checked (a folder with just ``test/<class>/...``, or just
``test.tsv``); a folder of images without class folders is read as it is (labels are not needed here).
The bundled digits are split as finetune splits them (``DataOptions``: val_fraction, test_fraction, seed), through
the data layer's own loader, so a check's split holds the examples a run of the same options holds.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from transferlab.data import DataError, DataOptions, SkipLog, image_id
from transferlab.data._digits import is_digits_spec, load_digits_data
from transferlab.data._image_folder import class_folders, has_images, image_files
from transferlab.data._split import VAL_NAMES
from transferlab.data._text import find_text_file
from transferlab.data._text_reader import TEXT_EXTENSIONS, read_text_file
from transferlab.data._vectors import is_vector_spec

SPLITS = ("train", "val", "test")


@dataclass
class SplitExamples:
    """The examples of one split: `ids`, and `paths` (image files), `arrays` (the bundled digits, in memory) or
    `texts` (text)."""

    modality: str  # "image" or "text"
    root: Path  # the data set's folder (text: the folder holding the file)
    split: str
    file: str | None  # text: the split's file name; images: None
    ids: list[str]
    paths: list[str]
    texts: list[str]
    labels: list[str]  # text: each row's label; images: each file's class folder ("" without class folders)
    skipped: SkipLog
    arrays: list[np.ndarray] | None = None  # bundled images (digits): H x W x 3 uint8 each; `paths` is then empty

    def __len__(self) -> int:
        return len(self.ids)

    def origins(self) -> list[str]:
        """Where each example comes from, one string per example: a file's resolved path (links followed), a text
        row as its resolved file and row id, a digit as its row in load_digits(). Two examples with one origin are
        the same example, whatever path or data set name reached it."""
        if self.arrays is not None:
            return list(self.ids)
        if self.modality == "text":
            file = os.path.realpath(self.root / self.file)
            return [f"{file}#{i}" for i in self.ids]
        return [os.path.realpath(p) for p in self.paths]


def _split_names(split: str) -> tuple[str, ...]:
    return VAL_NAMES if split == "val" else (split,)


def image_folder(root: Path, split: str) -> Path | None:
    """The folder holding `split` of the image data set at `root`; None when it has none."""
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
    if is_vector_spec(str(path)):
        raise DataError(f"{path}: contamination checks are not supported for numeric vectors (sklearn:NAME, .npz); "
                        "they compare images or texts")
    options = options or DataOptions()
    if options.classes is not None:
        raise ValueError("pass the classes as read_split(..., classes=); DataOptions needs two or more")
    keep = _classes(classes)
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; choose from {', '.join(SPLITS)}")
    if is_digits_spec(str(path)):  # as load_data reads it: a folder named digits is ./digits
        return _read_digits(str(path), split, options, keep)
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
    folder = image_folder(root, split)
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


def _read_digits(spec: str, split: str, options: DataOptions, keep: list[str] | None) -> SplitExamples:
    """A split of scikit-learn's digits, carved by the data layer's loader with `options` (the validation split
    by val_fraction, the test split only with test_fraction, both seeded), as finetune carves it."""
    from transferlab.models._config import PretrainedCfg

    # The loader wants a model's input config for its per-item resizing, which is never used here: the scans
    # are read from the split as they are (8 x 8), so identity normalisation at their own size.
    cfg = PretrainedCfg(name="contamination", modality="image", input_size=8, mean=(0.0, 0.0, 0.0),
                        std=(1.0, 1.0, 1.0))
    bundle = load_digits_data(spec, cfg, options)
    dataset = {"train": bundle.train, "val": bundle.val, "test": bundle.test}[split]
    if dataset is None:
        raise DataError(f"{spec} has no {split} split: finetune holds one out only with --test-fraction; give the "
                        "run's --test-fraction (and --seed) here too")
    rows = list(range(len(dataset)))
    labels = [bundle.classes[t] for t in dataset.targets]
    if keep is not None:
        missing = [c for c in keep if c not in bundle.classes]
        if missing:
            raise DataError(f"{spec} has no class {', '.join(missing)} (--classes); it has "
                            f"{', '.join(bundle.classes)}")
        rows = [i for i in rows if labels[i] in keep]
    # (N, 1, 8, 8) floats scan / 16 -> uint8 0..255, rounded as the contamination lab writes digits PNGs, so a
    # folder of those PNGs and the bundled set hold the same pixels
    pixels = np.round(dataset.images[:, 0].numpy() * 255).astype(np.uint8)
    arrays = [np.repeat(pixels[i][:, :, None], 3, axis=2) for i in rows]
    return SplitExamples("image", Path(spec), split, None, [dataset.paths[i] for i in rows], [], [],
                         [labels[i] for i in rows], SkipLog(), arrays)
