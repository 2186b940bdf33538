"""Per-example ids: the names `transferlab contamination` gives the examples of a split, so results of one
example can be matched across commands whatever the loading options (--max-val, --classes, the sort by length).

    ids = example_ids(bundle, bundle.test)   # ["test/cat/0042.jpg", ...] or ["0", "7", ...], in dataset order
"""
from __future__ import annotations

import os

from torch.utils.data import Dataset

from ._bundle import DataBundle
from ._digits import DigitsDataset
from ._errors import DataError
from ._images import ImageDataset
from ._text import TextDataset
from ._vectors import VectorDataset


def example_ids(bundle: DataBundle, dataset: Dataset) -> list[str]:
    """One id per example of ``dataset`` (a split of ``bundle``), in dataset order.

    - image folders: the file's path relative to the data set's root with '/' separators
      (``test/cat/0042.jpg``; ``cat/0042.jpg`` for a data set that is itself the one class tree);
    - text: the 0-based data-row index in the split's file (header not counted, skipped rows counted: ``"12"``);
      `split_file` names the file;
    - digits: ``digits[i]``, row i of scikit-learn's ``load_digits()``;
    - vectors: ``wine[i]``, row i of scikit-learn's ``load_wine()`` (``sklearn:wine``), or ``x[i]`` / ``x_val[i]`` /
      ``x_test[i]``, row i of that array of a .npz file.
    """
    if isinstance(dataset, TextDataset):
        if dataset.ids is None:
            raise DataError(f"{bundle.source}: this text split was not read from a file, so its rows have no ids")
        return list(dataset.ids)
    if isinstance(dataset, VectorDataset):
        return list(dataset.ids)
    if isinstance(dataset, DigitsDataset):
        return list(dataset.paths)
    if isinstance(dataset, ImageDataset):
        return [image_id(path, bundle.source) for path in dataset.paths]
    raise DataError(f"{bundle.source}: examples of a {type(dataset).__name__} have no ids")


def split_file(dataset: Dataset) -> str | None:
    """The name of the file a text split was read from (``test.tsv``); None for images (their ids name files)."""
    return dataset.file if isinstance(dataset, TextDataset) else None


def image_id(path: str, root: str) -> str:
    """An image's id: its path relative to the data set's folder, '/'-separated. String arithmetic only (no file
    is looked at): the scan joined every path onto the root it was given."""
    rel = os.path.relpath(path, root)
    if rel == os.curdir or rel == os.pardir or rel.startswith(os.pardir + os.sep):
        raise DataError(f"{path} is not inside the data set's folder {root}")
    return rel.replace(os.sep, "/") if os.sep != "/" else rel
