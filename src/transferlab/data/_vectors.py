"""Numeric vectors: scikit-learn's bundled tabular data sets (``sklearn:wine``) and ``.npz`` files of arrays.

Each example is a float32 vector (F,) standardised per feature with the mean and standard deviation of the
training split as the run uses it (after the test and validation hold-outs and --max-train), never of the
validation or test split; a feature that is constant on the training split is only centred. The split is seeded
and stratified as digits' is, so the same seed reads the same examples and the same statistics.
"""
from __future__ import annotations

import hashlib
import re
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch.utils.data import Dataset

from ._bundle import DataBundle
from ._errors import DataError, SkipLog
from ._options import check_classes_exist, listed
from ._split import holdout_split, stratified_subset, test_holdout

if TYPE_CHECKING:
    from ._options import DataOptions

# spec name -> scikit-learn loader (bundled with scikit-learn: nothing is downloaded)
SKLEARN_SETS = {"wine": "load_wine", "breast_cancer": "load_breast_cancer", "iris": "load_iris",
                "digits": "load_digits"}
NPZ_SUFFIX = ".npz"
NPZ_SPLITS = (("x", "y"), ("x_val", "y_val"), ("x_test", "y_test"))  # (features, labels) per split
_RANGE = re.compile(r"^(\d+)(?:-(\d+))?$")


def is_sklearn_spec(spec: str) -> bool:
    return spec.startswith("sklearn:")


def is_vector_spec(spec: str) -> bool:
    """``sklearn:NAME[:CLASSES]`` or a path ending in ``.npz``: data that `load_data` reads as vectors."""
    spec = str(spec)
    return is_sklearn_spec(spec) or spec.lower().endswith(NPZ_SUFFIX)


class VectorDataset(Dataset):
    """Items ``((F,) float32 tensor, label)``, already standardised with the training split's statistics."""

    def __init__(self, values: torch.Tensor, targets: Sequence[int], ids: Sequence[str]) -> None:
        self.values = values  # (N, F) float32
        self.targets = [int(t) for t in targets]
        self.ids = list(ids)  # "wine[12]" (row 12 of load_wine()) or "x_val[3]" (row 3 of the file's x_val)

    @property
    def num_features(self) -> int:
        return int(self.values.shape[1])

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.values[index], self.targets[index]

    def fingerprint(self) -> str:
        """The standardised values, labels and ids (what the frozen-prefix cache keys its entries by)."""
        digest = hashlib.sha256(f"vectors|{self.values.shape}|{self.targets}|{self.ids}".encode())
        digest.update(self.values.contiguous().numpy().tobytes())
        return digest.hexdigest()

    def subset(self, indices: Sequence[int], augment: bool | None = None) -> VectorDataset:
        """The rows at ``indices`` (``augment`` is accepted for the other datasets' signature; vectors have none)."""
        idx = torch.as_tensor(list(indices), dtype=torch.long)
        return VectorDataset(self.values[idx], [self.targets[i] for i in indices], [self.ids[i] for i in indices])


class VectorCollate:
    """``[(x, label)] -> {"input_values": (B, F) float32, "labels": (B,) long}``; ``None`` items are dropped
    (vectors have none, but the trainer's contract allows them). A class so DataLoader workers can pickle it."""

    def __init__(self, num_features: int) -> None:
        self.num_features = num_features

    def fingerprint(self) -> str:
        return f"VectorCollate({self.num_features})"

    def __call__(self, items: list) -> dict[str, torch.Tensor]:
        kept = [item for item in items if item is not None]
        if not kept:
            return {"input_values": torch.empty(0, self.num_features), "labels": torch.empty(0, dtype=torch.long)}
        return {"input_values": torch.stack([x for x, _ in kept]),
                "labels": torch.tensor([y for _, y in kept], dtype=torch.long)}


@dataclass
class _Raw:
    """One split as read, before standardisation: float64 values, label indices 0..k-1, ids."""

    x: np.ndarray  # (N, F) float64
    y: list[int]
    ids: list[str]

    def take(self, indices: Sequence[int]) -> _Raw:
        return _Raw(self.x[list(indices)], [self.y[i] for i in indices], [self.ids[i] for i in indices])


def load_vector_data(spec: str, options: DataOptions) -> DataBundle:
    """``sklearn:NAME[:CLASSES]`` or a ``.npz`` file as a DataBundle of kind "vector"."""
    if is_sklearn_spec(spec):
        classes, full = _read_sklearn(spec, options)
        given_val = given_test = None
    else:
        classes, full, given_val, given_test = _read_npz(Path(spec).expanduser(), spec, options)

    pool, test = full, given_test
    if options.test_fraction and given_test is None:  # carved first, as digits and image folders do
        rest, held = test_holdout(pool.y, options.test_fraction, options.seed, spec)
        pool, test = pool.take(rest), pool.take(held)
    if given_val is not None:
        train, val = pool, given_val
    else:
        kept, held = holdout_split(pool.y, options.val_fraction, options.seed, spec)
        train, val = pool.take(kept), pool.take(held)
    if options.max_train is not None:
        train = train.take(stratified_subset(train.y, options.max_train, options.seed, option="--max-train"))

    center, scale = _training_statistics(train.x)

    def standardised(raw: _Raw) -> VectorDataset:
        values = torch.from_numpy(((raw.x - center) / scale).astype(np.float32))  # (N, F)
        dataset = VectorDataset(values, raw.y, raw.ids)
        dataset.center, dataset.scale = center, scale  # the training statistics, kept for reference
        return dataset

    num_features = full.x.shape[1]
    return DataBundle(kind="vector", classes=classes, train=standardised(train), val=standardised(val),
                      test=None if test is None else standardised(test), collate=VectorCollate(num_features),
                      skipped=SkipLog(), source=spec)


def _training_statistics(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature (mean, std) of the training rows (population std, as scikit-learn's StandardScaler); a std that
    is zero up to rounding becomes 1, so a constant feature is centred and not divided by ~0."""
    center = x.mean(axis=0)
    scale = x.std(axis=0)
    constant = scale <= 10 * np.finfo(np.float64).eps * np.maximum(1.0, np.abs(center))
    return center, np.where(constant, 1.0, scale)


# ---- scikit-learn ----------------------------------------------------------------------------------------------

def _read_sklearn(spec: str, options: DataOptions) -> tuple[list[str], _Raw]:
    import sklearn.datasets  # imported here: sklearn.datasets is slow to import

    name, _, selection = spec[len("sklearn:"):].partition(":")
    if name not in SKLEARN_SETS:
        raise DataError(f"{spec!r}: unknown scikit-learn data set {name!r}; choose one of "
                        f"{', '.join('sklearn:' + n for n in SKLEARN_SETS)}")
    raw = getattr(sklearn.datasets, SKLEARN_SETS[name])()
    names = [str(n) for n in raw.target_names]  # class names, indexed by target value
    values = _select(spec, names, selection) if selection else list(range(len(names)))
    keep_names = options.selected_classes()
    if keep_names is not None:
        check_classes_exist(keep_names, names, spec)
        outside = [n for n in keep_names if names.index(n) not in values]
        if outside:
            raise DataError(f"--classes names {listed(outside)}, which {spec!r} leaves out (it holds "
                            f"{listed(names[v] for v in values)}); name a subset of those, or use "
                            f"--data sklearn:{name}")
        values = sorted(names.index(n) for n in keep_names)
    renumber = {v: k for k, v in enumerate(values)}  # target value -> label index 0..k-1
    rows = [i for i, t in enumerate(raw.target) if int(t) in renumber]
    x = np.asarray(raw.data, dtype=np.float64)[rows]  # (N, F); digits: the 64 pixel values 0..16
    return [names[v] for v in values], _Raw(x, [renumber[int(raw.target[i])] for i in rows],
                                            [f"{name}[{i}]" for i in rows])


def _select(spec: str, names: list[str], selection: str) -> list[int]:
    """``0-4``, ``0,2``, ``setosa,virginica`` or a mix -> target values, sorted; names are the data set's
    class names, numbers its target values (digits: both are the digit)."""
    chosen: set[int] = set()
    for part in (p.strip() for p in selection.split(",")):
        match = _RANGE.match(part)
        if match:
            low, high = int(match[1]), int(match[2] if match[2] is not None else match[1])
            if high < low or high >= len(names):
                raise DataError(f"{spec!r}: class range {part!r} is not within 0-{len(names) - 1}")
            chosen.update(range(low, high + 1))
        elif part in names:
            chosen.add(names.index(part))
        else:
            raise DataError(f"{spec!r}: {part!r} is neither a class number 0-{len(names) - 1} nor a class name "
                            f"({listed(names)}); write e.g. {spec.rsplit(':', 1)[0]}:0-1")
    if len(chosen) < 2:
        raise DataError(f"{spec!r} selects one class only; a classifier needs at least 2")
    return sorted(chosen)


# ---- .npz files -----------------------------------------------------------------------------------------------

def _read_npz(path: Path, spec: str, options: DataOptions) -> tuple[list[str], _Raw, _Raw | None, _Raw | None]:
    """(class names, x/y, x_val/y_val or None, x_test/y_test or None), labels renumbered to 0..k-1 in the numeric
    order of the label values in y. Never unpickles: object arrays are refused."""
    arrays = _npz_arrays(path)
    splits: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for xk, yk in NPZ_SPLITS:
        if xk in arrays or yk in arrays:
            if xk not in arrays or yk not in arrays:
                missing = yk if xk in arrays else xk
                raise DataError(f"{path}: has {xk if xk in arrays else yk} but no {missing}; "
                                f"save {xk} and {yk} together")
            splits[xk] = _checked_pair(path, xk, arrays[xk], yk, arrays[yk])
    if "x" not in splits:
        raise DataError(f"{path}: no arrays x and y; save the features as x (N, F) and the labels as y (N,), "
                        "e.g. numpy.savez(path, x=x, y=y)")
    width = splits["x"][0].shape[1]
    for xk, (x, _) in splits.items():
        if x.shape[1] != width:
            raise DataError(f"{path}: {xk} has {x.shape[1]} features but x has {width}; every split needs the same")

    values = sorted({int(v) for v in splits["x"][1].tolist()})
    keep = options.selected_classes()
    if keep is not None:
        check_classes_exist(keep, [str(v) for v in values], path, what="label")
        values = sorted(int(n) for n in keep)
    index = {v: k for k, v in enumerate(values)}
    if len(values) < 2:
        raise DataError(f"{path}: y holds one label only ({values[0]}); a classifier needs at least 2")

    def raw(xk: str, yk: str) -> _Raw:
        x, y = splits[xk]
        rows = [i for i, v in enumerate(y.tolist()) if int(v) in index]
        if keep is None and len(rows) < len(y):
            unknown = sorted({int(v) for v in y.tolist()} - set(index))
            raise DataError(f"{path}: {yk} holds label(s) {listed(unknown)} that y lacks; the training labels "
                            "must include every class")
        return _Raw(x[rows], [index[int(y[i])] for i in rows], [f"{xk}[{i}]" for i in rows])

    parts = {xk: raw(xk, yk) if xk in splits else None for xk, yk in NPZ_SPLITS}
    for xk, part in parts.items():
        if part is not None and not part.y:
            raise DataError(f"{path}: {xk} holds no example of the selected classes")
    return [str(v) for v in values], parts["x"], parts["x_val"], parts["x_test"]


def _npz_arrays(path: Path) -> dict[str, np.ndarray]:
    """Every array of the archive, read with allow_pickle=False; DataError (naming the file) for anything else."""
    if not path.is_file():
        raise DataError(f"{path}: no such .npz file")
    allowed = [k for pair in NPZ_SPLITS for k in pair]
    try:
        archive = np.load(path, allow_pickle=False)
    except ValueError as exc:  # a pickle, or a file numpy cannot read
        reason = "a pickle, which is never loaded" if "pickle" in str(exc) else str(exc).splitlines()[0]
        raise DataError(f"{path}: not a .npz archive of arrays ({reason}); save it with numpy.savez") from None
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path}: cannot read the .npz file ({exc}); save it with numpy.savez") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):  # a single .npy array saved under a .npz name
        raise DataError(f"{path}: holds one .npy array, not a .npz archive; save x and y with "
                        "numpy.savez(path, x=x, y=y)")
    with archive:
        unknown = [k for k in archive.files if k not in allowed]
        if unknown:
            raise DataError(f"{path}: unexpected array(s) {listed(unknown)}; a vector data set holds only "
                            f"{', '.join(allowed)}")
        arrays = {}
        for key in archive.files:
            try:
                arrays[key] = archive[key]
            except ValueError as exc:  # object arrays need unpickling: refused, not loaded
                reason = ("an object array (it would need unpickling, which is refused)" if "pickle" in str(exc)
                          or "bject" in str(exc) else str(exc).splitlines()[0])
                raise DataError(f"{path}: {key} is {reason}; save plain numeric arrays") from None
            except (OSError, EOFError, zipfile.BadZipFile) as exc:
                raise DataError(f"{path}: cannot read {key} ({exc})") from None
    return arrays


def _checked_pair(path: Path, xk: str, x: np.ndarray, yk: str, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """x as (N, F) float64 (finite) and y as (N,) int64, or a DataError naming the file and the array."""
    if x.dtype.kind not in "fiu":
        raise DataError(f"{path}: {xk} has dtype {x.dtype}; it must hold numbers (float, or integer)")
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise DataError(f"{path}: {xk} has shape {x.shape}; it must be (N, F): one row of F features per example")
    if y.dtype.kind not in "iu":
        raise DataError(f"{path}: {yk} has dtype {y.dtype}; labels must be integers")
    if y.shape != (x.shape[0],):
        raise DataError(f"{path}: {yk} has shape {y.shape}; it must be ({x.shape[0]},), one label per row of {xk}")
    x = x.astype(np.float64)
    finite = np.isfinite(x)
    if not finite.all():
        row, col = (int(i) for i in np.argwhere(~finite)[0])
        count = int((~finite).sum())
        raise DataError(f"{path}: {xk} holds {count} NaN or infinite value(s) (first at row {row}, feature {col}); "
                        "fill or drop them before training")
    return x, y.astype(np.int64)
