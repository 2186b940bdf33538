"""Numeric vectors: scikit-learn's tabular sets (``sklearn:wine``) and .npz files, standardised with the training
split's statistics only; a modality mismatch refused; a tiny end-to-end run on wine."""
from __future__ import annotations

import json
import os
from collections import Counter, OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn import datasets as skd
from torch import nn

from transferlab.data import DataError, DataOptions, example_ids, load_data
from transferlab.models._config import PretrainedCfg

VECTOR = PretrainedCfg(name="test-vector", modality="vector")
WINE = skd.load_wine()


def _rows(dataset) -> list[int]:
    """Row numbers of a split's examples: ``wine[12]`` / ``x_val[12]`` -> 12."""
    return [int(i[i.index("[") + 1:-1]) for i in dataset.ids]


def _hand_standardised(raw: np.ndarray, train_rows: list[int], rows: list[int]) -> np.ndarray:
    mean = raw[train_rows].mean(axis=0)
    std = raw[train_rows].std(axis=0)
    std[std == 0] = 1.0
    return (raw[rows] - mean) / std


def _npz(path: Path, **arrays) -> str:
    np.savez(path, **arrays)
    return str(path)


def _blobs(n: int = 60, features: int = 4, classes: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    x = rng.normal(size=(n, features)) * 3.0 + 10.0 + y[:, None]
    return x, y


# ---- shapes, dtype, batches ------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, rows, features, classes", [
    ("wine", 178, 13, ["class_0", "class_1", "class_2"]), ("breast_cancer", 569, 30, ["malignant", "benign"]),
    ("iris", 150, 4, ["setosa", "versicolor", "virginica"]), ("digits", 1797, 64, [str(d) for d in range(10)]),
])
def test_sklearn_sets_are_float32_vectors_with_int_labels(name, rows, features, classes):
    bundle = load_data(f"sklearn:{name}", VECTOR)
    assert bundle.kind == "vector" and bundle.classes == classes and bundle.test is None
    summary = bundle.summary()
    assert summary["train"] + summary["val"] == rows and abs(summary["val"] / rows - 0.2) < 0.02  # default 0.2
    x, y = bundle.train[0]
    assert x.shape == (features,) and x.dtype == torch.float32 and isinstance(y, int)
    batch = bundle.collate([bundle.val[i] for i in range(5)])
    assert batch["input_values"].shape == (5, features) and batch["input_values"].dtype == torch.float32
    assert batch["labels"].dtype == torch.long and batch["labels"].tolist() == bundle.val.targets[:5]
    assert bundle.collate([])["input_values"].shape == (0, features)
    assert example_ids(bundle, bundle.val)[0] == f"{name}[{_rows(bundle.val)[0]}]"


def test_sklearn_digits_vectors_are_the_64_pixel_values():
    bundle = load_data("sklearn:digits", VECTOR)
    raw = skd.load_digits()
    train_rows = _rows(bundle.train)
    expected = _hand_standardised(raw.data, train_rows, _rows(bundle.val))
    assert np.allclose(bundle.val.values.numpy(), expected, atol=1e-5)
    assert [bundle.classes[t] for t in bundle.val.targets] == [str(raw.target[r]) for r in _rows(bundle.val)]


# ---- standardisation ------------------------------------------------------------------------------------------

def test_standardisation_uses_the_training_split_only():
    options = DataOptions(test_fraction=0.2, max_train=60, seed=3)
    bundle = load_data("sklearn:wine", VECTOR, options)
    train_rows = _rows(bundle.train)
    assert len(train_rows) == 60
    for split in (bundle.train, bundle.val, bundle.test):
        assert np.allclose(split.values.numpy(), _hand_standardised(WINE.data, train_rows, _rows(split)), atol=1e-5)
    train = bundle.train.values.numpy()
    assert np.allclose(train.mean(0), 0, atol=1e-5) and np.allclose(train.std(0), 1, atol=1e-4)
    # statistics over all rows (or the validation rows too) would give other values
    pooled = _rows(bundle.train) + _rows(bundle.val)
    assert not np.allclose(bundle.val.values.numpy(), _hand_standardised(WINE.data, pooled, _rows(bundle.val)),
                           atol=1e-3)


def test_npz_validation_and_test_arrays_use_the_training_statistics(tmp_path):
    x, y = _blobs(60)
    x_val, y_val = _blobs(30, seed=1)
    x_test, y_test = _blobs(24, seed=2)
    x_val += 100.0  # shifted: their own statistics would centre them, the training ones do not
    path = _npz(tmp_path / "d.npz", x=x, y=y, x_val=x_val, y_val=y_val, x_test=x_test, y_test=y_test)
    bundle = load_data(path, VECTOR, DataOptions(test_fraction=0.5, val_fraction=0.5))  # ignored: arrays given
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (60, 30, 24)
    mean, std = x.mean(0), x.std(0)
    assert np.allclose(bundle.train.values.numpy(), (x - mean) / std, atol=1e-5)
    assert np.allclose(bundle.val.values.numpy(), (x_val - mean) / std, atol=1e-5)
    assert np.allclose(bundle.test.values.numpy(), (x_test - mean) / std, atol=1e-5)
    assert bundle.val.ids[:2] == ["x_val[0]", "x_val[1]"] and bundle.classes == ["0", "1", "2"]


def test_a_constant_feature_is_centred_not_divided(tmp_path):
    x, y = _blobs(40, features=3)
    x[:, 1] = 7.25  # constant in the training data
    x_val, y_val = _blobs(20, features=3, seed=1)
    x_val[:, 1] = np.linspace(6, 8, 20)
    path = _npz(tmp_path / "c.npz", x=x, y=y, x_val=x_val, y_val=y_val)
    bundle = load_data(path, VECTOR)
    assert torch.isfinite(bundle.train.values).all() and torch.isfinite(bundle.val.values).all()
    assert torch.equal(bundle.train.values[:, 1], torch.zeros(40))
    assert np.allclose(bundle.val.values[:, 1].numpy(), x_val[:, 1] - 7.25, atol=1e-6)
    # the other features are scaled as usual
    assert np.allclose(bundle.train.values[:, 0].numpy().std(), 1.0, atol=1e-4)


# ---- classes ---------------------------------------------------------------------------------------------------

def test_class_selection_in_the_spec_and_with_classes():
    raw = skd.load_digits()
    bundle = load_data("sklearn:digits:0-4", VECTOR)
    assert bundle.classes == ["0", "1", "2", "3", "4"]
    for split in (bundle.train, bundle.val):
        assert set(split.targets) == set(range(5))
        assert [bundle.classes[t] for t in split.targets] == [str(raw.target[r]) for r in _rows(split)]
    narrowed = load_data("sklearn:digits:0-4", VECTOR, DataOptions(classes="3,1"))
    assert narrowed.classes == ["1", "3"] and set(narrowed.train.targets) == {0, 1}
    by_name = load_data("sklearn:iris:setosa,virginica", VECTOR)
    assert by_name.classes == ["setosa", "virginica"] == load_data("sklearn:iris:0,2", VECTOR).classes
    wine = load_data("sklearn:wine", VECTOR, DataOptions(classes="class_2,class_0"))
    assert wine.classes == ["class_0", "class_2"] and len(wine.train) + len(wine.val) == 59 + 48


@pytest.mark.parametrize("spec, options, message", [
    ("sklearn:digits:0-4", DataOptions(classes="3,7"), "which 'sklearn:digits:0-4' leaves out"),
    ("sklearn:wine", DataOptions(classes="class_0,red"), "has no class 'red'"),
    ("sklearn:wine:2", DataOptions(), "selects one class only"),
    ("sklearn:wine:0-3", DataOptions(), "not within 0-2"),
    ("sklearn:iris:rose,setosa", DataOptions(), "neither a class number"),
    ("sklearn:boston", DataOptions(), "unknown scikit-learn data set 'boston'"),
])
def test_bad_class_selections_are_one_line_errors(spec, options, message):
    with pytest.raises(DataError, match=message) as info:
        load_data(spec, VECTOR, options)
    assert "\n" not in str(info.value)


def test_npz_classes_are_label_values_and_can_be_selected(tmp_path):
    x, y = _blobs(60)
    path = _npz(tmp_path / "d.npz", x=x, y=np.where(y == 2, 10, y))  # labels 0, 1, 10: numeric order
    assert load_data(path, VECTOR).classes == ["0", "1", "10"]
    kept = load_data(path, VECTOR, DataOptions(classes="10,0"))
    assert kept.classes == ["0", "10"] and len(kept.train) + len(kept.val) == 40
    with pytest.raises(DataError, match="has no label '5'"):
        load_data(path, VECTOR, DataOptions(classes="0,5"))


# ---- splits ----------------------------------------------------------------------------------------------------

def test_splits_are_stratified_seeded_and_disjoint():
    options = DataOptions(test_fraction=0.2, val_fraction=0.25, seed=5)
    a = load_data("sklearn:wine", VECTOR, options)
    b = load_data("sklearn:wine", VECTOR, options)
    assert a.train.ids == b.train.ids and a.val.ids == b.val.ids and a.test.ids == b.test.ids
    assert torch.equal(a.val.values, b.val.values)
    other = load_data("sklearn:wine", VECTOR, DataOptions(test_fraction=0.2, val_fraction=0.25, seed=6))
    assert other.val.ids != a.val.ids
    ids = [set(s.ids) for s in (a.train, a.val, a.test)]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2]) and sum(map(len, ids)) == 178
    whole = Counter(WINE.target.tolist())
    test = Counter(a.test.targets)
    for c in range(3):  # each class's share of the test split is about 0.2 of it
        assert abs(test[c] - 0.2 * whole[c]) <= 1
    capped = load_data("sklearn:wine", VECTOR, DataOptions(max_train=30, max_val=12, seed=5))
    assert len(capped.train) == 30 and len(capped.val) == 12
    assert sorted(Counter(capped.train.targets).values()) == [8, 10, 12]  # wine's 48 / 59 / 71 in proportion
    assert set(capped.train.ids) <= set(load_data("sklearn:wine", VECTOR, DataOptions(seed=5)).train.ids)


def test_npz_without_validation_arrays_is_split_like_digits(tmp_path):
    x, y = _blobs(100)
    path = _npz(tmp_path / "d.npz", x=x.astype(np.float32), y=y.astype(np.int32))
    bundle = load_data(path, VECTOR, DataOptions(test_fraction=0.1, seed=2))
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (73, 18, 9)  # per class 3 + 3 + 3, then 6 + 6 + 6
    assert bundle.test.ids[0].startswith("x[") and set(bundle.val.targets) == {0, 1, 2}
    assert load_data(path, VECTOR, DataOptions(test_fraction=0.1, seed=2)).val.ids == bundle.val.ids


def test_integer_features_are_read_as_floats(tmp_path):
    x, y = _blobs(30)
    bundle = load_data(_npz(tmp_path / "i.npz", x=np.rint(x).astype(np.int64), y=y), VECTOR)
    assert bundle.train.values.dtype == torch.float32


# ---- bad .npz files --------------------------------------------------------------------------------------------

_X, _Y = _blobs(30)


@pytest.mark.parametrize("arrays, message", [
    ({"x": _X}, "has x but no y"),
    ({"y": _Y}, "has y but no x"),
    ({"features": _X, "labels": _Y}, "unexpected array"),
    ({"x": _X[:, 0], "y": _Y}, r"x has shape \(30,\)"),
    ({"x": _X[:0], "y": _Y[:0]}, r"x has shape \(0, 4\)"),
    ({"x": _X, "y": _Y[:, None]}, r"y has shape \(30, 1\)"),
    ({"x": _X, "y": _Y[:20]}, r"y has shape \(20,\)"),
    ({"x": _X, "y": _Y.astype(float)}, "labels must be integers"),
    ({"x": _X.astype(str), "y": _Y}, "it must hold numbers"),
    ({"x": _X.astype(bool), "y": _Y}, "it must hold numbers"),
    ({"x": np.where(np.arange(30)[:, None] == 4, np.nan, _X), "y": _Y}, "NaN or infinite .* row 4"),
    ({"x": _X, "y": _Y, "x_val": np.full((3, 4), np.inf), "y_val": _Y[:3]}, "x_val holds 12 NaN or infinite"),
    ({"x": _X, "y": _Y, "x_val": _X}, "has x_val but no y_val"),
    ({"x": _X, "y": _Y, "x_test": _X[:, :3], "y_test": _Y}, "x_test has 3 features but x has 4"),
    ({"x": _X, "y": _Y, "x_val": _X[:5], "y_val": np.array([0, 1, 2, 7, 1])}, "y_val holds label"),
    ({"x": _X, "y": np.zeros(30, dtype=int)}, "one label only"),
])
def test_bad_npz_files_are_refused_in_one_line_naming_the_file(tmp_path, arrays, message):
    path = _npz(tmp_path / "bad.npz", **arrays)
    with pytest.raises(DataError, match=message) as info:
        load_data(path, VECTOR)
    assert str(info.value).startswith(path) and "\n" not in str(info.value)


class _Payload:
    """Unpickling it creates the folder `marker`: evidence that a file was unpickled."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return os.mkdir, (self.marker,)


def test_an_object_array_is_refused_without_unpickling(tmp_path):
    marker = tmp_path / "unpickled"
    path = tmp_path / "objects.npz"
    np.savez(path, x=np.array([_Payload(marker)] * 4, dtype=object), y=np.arange(4))
    with pytest.raises(DataError, match="x is an object array .*refused") as info:
        load_data(str(path), VECTOR)
    assert str(info.value).startswith(str(path)) and not marker.exists()


def test_a_pickle_npy_or_broken_file_under_an_npz_name_is_refused(tmp_path):
    import pickle

    marker = tmp_path / "unpickled"
    pickled = tmp_path / "pickled.npz"
    pickled.write_bytes(pickle.dumps({"x": _Payload(marker), "y": [0, 1]}))
    with pytest.raises(DataError, match="a pickle, which is never loaded"):
        load_data(str(pickled), VECTOR)
    assert not marker.exists()
    single = tmp_path / "single.npz"
    with open(single, "wb") as fh:
        np.save(fh, _X)
    with pytest.raises(DataError, match="holds one .npy array"):
        load_data(str(single), VECTOR)
    broken = tmp_path / "broken.npz"
    broken.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(DataError, match="broken.npz"):
        load_data(str(broken), VECTOR)


# ---- modality --------------------------------------------------------------------------------------------------

def test_a_modality_mismatch_is_refused(tmp_path):
    image_cfg = PretrainedCfg(name="some-cnn", modality="image")
    text_cfg = PretrainedCfg(name="some-bert", modality="text")
    with pytest.raises(DataError, match="sklearn:wine holds vector data but some-cnn takes image inputs; "
                                        "choose a vector model"):
        load_data("sklearn:wine", image_cfg)
    path = _npz(tmp_path / "d.npz", x=_X, y=_Y)
    with pytest.raises(DataError, match="holds vector data but some-bert takes text inputs"):
        load_data(path, text_cfg)
    with pytest.raises(DataError, match="digits holds image data but test-vector takes vector inputs; "
                                        "choose an image model"):
        load_data("digits", VECTOR)
    (tmp_path / "texts").mkdir()
    (tmp_path / "texts" / "train.tsv").write_text("sentence\tlabel\ngood\t1\nbad\t0\n")
    with pytest.raises(DataError, match="holds text data but test-vector takes vector inputs"):
        load_data(str(tmp_path / "texts"), VECTOR)


def test_contamination_refuses_vectors(tmp_path):
    from transferlab.contamination.inputs import read_split

    for spec in ("sklearn:wine", _npz(tmp_path / "d.npz", x=_X, y=_Y)):
        with pytest.raises(DataError, match="not supported for numeric vectors"):
            read_split(spec, "test")


# ---- end to end ------------------------------------------------------------------------------------------------

TINY_VECTOR_MODEL = "test_vector_mlp"


@pytest.fixture
def vector_mlp():
    """A registered two-layer MLP on wine's 13 features, removed afterwards. The TransferModel reads the
    "input_values" batch key itself, whatever `TransferModel.features` knows of vectors."""
    from transferlab.models import _registry
    from transferlab.models.transfer_model import DepthGroup, TransferModel

    class VectorTransferModel(TransferModel):
        def features(self, batch: dict) -> torch.Tensor:
            return self.backbone(batch["input_values"])  # (B, F) -> (B, D)

    cfg = PretrainedCfg(name=TINY_VECTOR_MODEL, modality="vector", architecture="mlp")

    @_registry.register_model(cfg)
    def build(num_classes: int, weights=None, head: str = "linear") -> TransferModel:
        backbone = nn.Sequential(OrderedDict(fc1=nn.Linear(13, 32), act1=nn.ReLU(), fc2=nn.Linear(32, 16),
                                             act2=nn.ReLU()))
        groups = [DepthGroup("fc1", ("backbone.fc1",)), DepthGroup("fc2", ("backbone.fc2",))]
        return VectorTransferModel(cfg, backbone, 16, num_classes, groups, head=head)

    yield TINY_VECTOR_MODEL
    _registry._BUILDERS.pop(TINY_VECTOR_MODEL, None)
    _registry._CONFIGS.pop(TINY_VECTOR_MODEL, None)


def test_finetune_evaluate_and_predict_on_wine(vector_mlp, tmp_path, capsys):
    from transferlab.cli import main

    common = ["--model", vector_mlp, "--data", "sklearn:wine", "--test-fraction", "0.2", "--epochs", "6",
              "--lr", "0.01", "--batch-size", "16", "--device", "cpu", "--seed", "0"]
    assert main(["finetune", *common, "--out", str(tmp_path / "full")]) in (0, None)
    metrics = json.loads((tmp_path / "full" / "metrics.json").read_text())
    assert metrics["data_summary"]["kind"] == "vector" and metrics["classes"] == ["class_0", "class_1", "class_2"]
    assert metrics["test"]["n"] == 36 and metrics["val"]["accuracy"] > 0.6  # chance is 0.4
    capsys.readouterr()

    assert main(["evaluate", "--run", str(tmp_path / "full"), "--split", "test"]) in (0, None)
    scored = json.loads(capsys.readouterr().out)
    assert scored["n"] == 36 and scored["accuracy"] == pytest.approx(metrics["test"]["accuracy"])

    with pytest.raises(SystemExit) as exit_info:
        main(["predict", "--run", str(tmp_path / "full"), "1,2,3"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "predict takes image or text inputs" in err and "\n" not in err

    # only the head trains: the frozen backbone's features are computed once and cached
    assert main(["finetune", *common, "--strategy", "linear_probe", "--out", str(tmp_path / "probe")]) in (0, None)
    probe = json.loads((tmp_path / "probe" / "metrics.json").read_text())
    history = [json.loads(line) for line in (tmp_path / "probe" / "history.jsonl").read_text().splitlines()]
    assert [r["cached_groups"] for r in history] == [2] * 6 and probe["val"]["accuracy"] is not None
