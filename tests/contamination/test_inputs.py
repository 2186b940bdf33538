"""Reading one split for the contamination check: image folders of every layout, text files, ids and errors."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from transferlab.contamination.inputs import modality_of, read_split
from transferlab.data import DataError, DataOptions


def _png(path: Path, value: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8, 3), value, dtype=np.uint8)).save(path)
    return path


def _tree(root: Path, layout: dict[str, int]) -> Path:
    """layout: relative folder -> number of images (0.png, 1.png, ...)."""
    for folder, n in layout.items():
        for i in range(n):
            _png(root / folder / f"{i}.png", i)
    return root


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


# ---- images ------------------------------------------------------------------------------------------------
def test_image_folder_with_train_and_test_reads_each_split_with_ids_relative_to_the_root(tmp_path):
    root = _tree(tmp_path / "data", {"train/cat": 2, "train/dog": 1, "test/cat": 1, "test/dog/close": 2})
    test = read_split(root, "test")
    assert test.modality == "image" and test.split == "test" and test.root == root and test.file is None
    assert test.ids == ["test/cat/0.png", "test/dog/close/0.png", "test/dog/close/1.png"]
    assert test.labels == ["cat", "dog", "dog"]
    assert [Path(p) for p in test.paths] == [root / i for i in test.ids] and test.texts == []
    train = read_split(root, "train")
    assert train.ids == ["train/cat/0.png", "train/cat/1.png", "train/dog/0.png"] and len(train) == 3


def test_a_folder_holding_only_test_is_read_and_its_missing_train_is_an_error(tmp_path):
    root = _tree(tmp_path / "eval", {"test/a": 1, "test/b": 1})
    assert read_split(root, "test").ids == ["test/a/0.png", "test/b/0.png"]
    with pytest.raises(DataError, match="has no train/ folder"):
        read_split(root, "train")
    with pytest.raises(DataError, match="has no val/ folder"):
        read_split(root, "val")


def test_val_split_is_found_under_its_other_names(tmp_path):
    root = _tree(tmp_path / "data", {"train/a": 1, "valid/a": 2})
    assert read_split(root, "val").ids == ["valid/a/0.png", "valid/a/1.png"]


def test_a_folder_of_loose_images_is_one_training_tree_without_labels(tmp_path):
    root = _tree(tmp_path / "loose", {".": 3})
    ex = read_split(root, "train")
    assert ex.ids == ["0.png", "1.png", "2.png"] and ex.labels == ["", "", ""]


def test_class_folders_directly_in_the_root_are_one_training_tree(tmp_path):
    root = _tree(tmp_path / "cls", {"cat": 1, "dog": 2})
    ex = read_split(root, "train")
    assert ex.ids == ["cat/0.png", "dog/0.png", "dog/1.png"] and ex.labels == ["cat", "dog", "dog"]


def test_classes_selects_class_folders_and_one_class_is_allowed(tmp_path):
    root = _tree(tmp_path / "data", {"test/cat": 2, "test/dog": 1, "test/emu": 1})
    assert read_split(root, "test", classes="dog").ids == ["test/dog/0.png"]
    two = read_split(root, "test", classes=" emu , cat")
    assert two.ids == ["test/cat/0.png", "test/cat/1.png", "test/emu/0.png"]
    assert two.labels == ["cat", "cat", "emu"]


@pytest.mark.parametrize("classes, message", [
    ("cat,cow", r"has no class folder\(s\) cow .*it has cat, dog"),
    ("cat,,dog", "has an empty name"),
    ("", "has an empty name"),
])
def test_bad_classes_are_refused(tmp_path, classes, message):
    root = _tree(tmp_path / "data", {"test/cat": 1, "test/dog": 1})
    with pytest.raises(DataError, match=message):
        read_split(root, "test", classes=classes)


def test_classes_go_to_read_split_not_to_the_data_options(tmp_path):
    root = _tree(tmp_path / "data", {"test/cat": 1, "test/dog": 1})
    with pytest.raises(ValueError, match="pass the classes as read_split"):
        read_split(root, "test", DataOptions(classes="cat,dog"))


def test_unknown_split_and_a_split_without_images_are_refused(tmp_path):
    root = _tree(tmp_path / "data", {"train/a": 1})
    (root / "test" / "a").mkdir(parents=True)
    with pytest.raises(DataError, match="unknown split 'dev'"):
        read_split(root, "dev")
    with pytest.raises(DataError, match="holds no images"):
        read_split(root, "test")


def test_hidden_folders_and_other_files_are_not_read(tmp_path):
    root = _tree(tmp_path / "data", {"test/a": 1, "test/.ipynb_checkpoints": 1})
    _write(root / "test" / "a" / "notes.txt", "x")
    ex = read_split(root, "test")
    assert ex.ids == ["test/a/0.png"] and ex.labels == ["a"]


# ---- text --------------------------------------------------------------------------------------------------
def test_text_folder_reads_the_split_file(tmp_path):
    root = tmp_path / "sst"
    _write(root / "train.tsv", "sentence\tlabel\na fine film\t1\na dull film\t0\n")
    _write(root / "test.tsv", "sentence\tlabel\n  moving and warm \t1\ntedious\t0\nbland\t0\n")
    ex = read_split(root, "test")
    assert ex.modality == "text" and ex.root == root and ex.file == "test.tsv" and ex.split == "test"
    assert ex.ids == ["0", "1", "2"] and ex.texts == ["moving and warm", "tedious", "bland"]
    assert ex.labels == ["1", "0", "0"] and ex.paths == []
    assert read_split(root, "train").texts == ["a fine film", "a dull film"]
    with pytest.raises(DataError, match="has no val file"):
        read_split(root, "val")


def test_dev_file_is_the_val_split_and_csv_is_read(tmp_path):
    root = tmp_path / "data"
    _write(root / "train.tsv", "text\tlabel\nx\t0\n")
    _write(root / "dev.csv", "text,label\n\"one, two\",a\nthree,b\n")
    ex = read_split(root, "val")
    assert ex.file == "dev.csv" and ex.texts == ["one, two", "three"] and ex.labels == ["a", "b"]


def test_a_single_text_file_is_the_split(tmp_path):
    file = _write(tmp_path / "held_out.tsv", "text\tlabel\nfirst\tpos\nsecond\tneg\n")
    ex = read_split(file, "test")
    assert ex.root == tmp_path and ex.file == "held_out.tsv" and ex.texts == ["first", "second"]


def test_row_ids_count_the_skipped_rows(tmp_path):
    file = _write(tmp_path / "test.tsv", "text\tlabel\nkept zero\t1\nno label here\t\nbad\tfields\textra\n"
                                         "kept three\t0\n")
    ex = read_split(file, "test")
    assert ex.ids == ["0", "3"] and ex.texts == ["kept zero", "kept three"]
    assert ex.skipped.count == 2


def test_classes_select_text_labels_and_keep_the_file_row_ids(tmp_path):
    file = _write(tmp_path / "test.tsv", "text\tlabel\na\tpos\nb\tneg\nc\tpos\nd\tmid\n")
    ex = read_split(file, "test", classes="pos")
    assert ex.ids == ["0", "2"] and ex.texts == ["a", "c"] and ex.labels == ["pos", "pos"]
    assert read_split(file, "test", classes="mid,neg").ids == ["1", "3"]
    with pytest.raises(DataError, match="no rows of the classes"):
        read_split(file, "test", classes="other")


def test_text_columns_come_from_the_options(tmp_path):
    file = _write(tmp_path / "test.tsv", "id\treview\tstars\n7\tgood\t5\n8\tbad\t1\n")
    ex = read_split(file, "test", DataOptions(text_column="review", label_column="stars"))
    assert ex.texts == ["good", "bad"] and ex.labels == ["5", "1"]


# ---- modality_of -------------------------------------------------------------------------------------------
def test_modality_of_each_kind_of_input(tmp_path):
    images = _tree(tmp_path / "img", {"test/a": 1})
    text = tmp_path / "txt"
    _write(text / "test.jsonl", '{"text": "x", "label": 1}\n')
    assert modality_of(images) == "image" and modality_of(text) == "text"
    assert modality_of(text / "test.jsonl") == "text"


def test_modality_of_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        modality_of(tmp_path / "missing")
    with pytest.raises(DataError, match="is a file but not a text file"):
        modality_of(_png(tmp_path / "one.png"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="holds neither images nor train/val/test text files"):
        modality_of(tmp_path / "empty")
    with pytest.raises(DataError, match="does not exist"):
        read_split(tmp_path / "missing", "test")
