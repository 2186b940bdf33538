"""The fingerprint of a contamination check's target split: what the ids of its matches.csv name.

matches.csv names each target example by an id that only means something in its own data: a text row by its index in
the split's file, an image by its path under the data set's folder, a digit by its row in scikit-learn's
``load_digits()``. The check records a fingerprint of what those ids index (summary.json, ``target.fingerprint``), and
``evaluate --contamination`` computes it again on the data it evaluates: a file of the same name holding other rows,
or another folder with the same relative paths, gives another fingerprint and is refused.

- text: the sha256 of the split file's bytes (every row id indexes it);
- image files: every image file of the split's folder (all classes, readable or not), its id and the sha256 of its
  bytes, sorted by id: so --classes at either end, or a run's --max-val sample, does not change it;
- digits: the sha256 of load_digits()'s scans and labels.

Computed from the data alone, never from matches.csv: a folder's ids are untrusted and are not opened as paths.

    fp = split_fingerprint(target)                          # the check
    fp = evaluated_fingerprint(bundle, dataset, "test")     # evaluate; None when the data has no such split
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

from transferlab.contamination.inputs import SplitExamples, image_folder

_CHUNK = 1 << 20  # bytes read at a time: a file is hashed in bounded memory, whatever its size


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def text_fingerprint(path: str | Path) -> str:
    return hashlib.sha256(b"transferlab contamination text 1\n" + file_sha256(path).encode()).hexdigest()


def folder_fingerprint(root: Path, folder: Path) -> str:
    """Every image file under `folder` (a split of the data set at `root`), by its id, with its bytes' sha256."""
    from transferlab.data import SkipLog, image_id
    from transferlab.data._image_folder import image_files

    digest = hashlib.sha256(b"transferlab contamination images 1\n")
    for path in sorted(image_files(folder, SkipLog()), key=lambda p: image_id(p, str(root))):
        try:
            content = file_sha256(path)
        except OSError as exc:  # unreadable here as everywhere (the check skipped it): it counts by its reason
            content = f"unreadable: {os.strerror(exc.errno) if exc.errno else type(exc).__name__}"
        digest.update(f"{image_id(path, str(root))}\0{content}\n".encode())
    return digest.hexdigest()


def digits_fingerprint() -> str:
    from sklearn.datasets import load_digits  # imported here: sklearn.datasets is slow to import

    digits = load_digits()
    digest = hashlib.sha256(b"transferlab contamination digits 1\n")
    digest.update(digits.images.astype("<f8").tobytes())
    digest.update(digits.target.astype("<i8").tobytes())
    return digest.hexdigest()


def split_fingerprint(ex: SplitExamples) -> str:
    """The fingerprint of a checked split (all of it, whatever classes were checked)."""
    if ex.modality == "text":
        return text_fingerprint(ex.root / ex.file)
    if ex.arrays is not None:
        return digits_fingerprint()
    return folder_fingerprint(ex.root, image_folder(ex.root, ex.split))


def evaluated_fingerprint(bundle, dataset, split: str) -> str | None:
    """The fingerprint of the data `evaluate` reads (`dataset`, a split of `bundle`), as the check computed it
    for a target split `split` (the one a contamination folder records). None when that split is not there."""
    from transferlab.data._digits import DigitsDataset
    from transferlab.data._text import TextDataset

    source = Path(bundle.source)
    if isinstance(dataset, TextDataset):
        file = source if source.is_file() else source / (dataset.file or "")
        return text_fingerprint(file) if dataset.file is not None and file.is_file() else None
    if isinstance(dataset, DigitsDataset):
        return digits_fingerprint()
    folder = image_folder(source, split) if source.is_dir() else None
    return folder_fingerprint(source, folder) if folder is not None else None
