"""Per-example ids (`example_ids`, `split_file`): what `transferlab contamination` names each example by, kept through
subsets, the sort by length and --classes, without changing items or fingerprints."""
import pytest

from transferlab.data import DataError, DataOptions, example_ids, load_data, split_file
from transferlab.data._text import TextDataset


def _rows_of(path):
    """The data rows of a tsv file as written (header dropped), for reading ids back by hand."""
    return [line.split("\t") for line in path.read_text().splitlines()[1:]]


def test_text_ids_are_row_indices_in_the_file(tmp_path, text_cfg, tokenizer):
    (tmp_path / "train.tsv").write_text("sentence\tlabel\ngood film\t1\nbad film\t0\nfine\t1\nawful\t0\nmeh\t2\n")
    (tmp_path / "dev.tsv").write_text("sentence\tlabel\nnice\t1\nugly\t0\n")
    test = tmp_path / "test.tsv"
    # row 1 is skipped (no label), row 4 is left out by --classes; both still count
    test.write_text("sentence\tlabel\na much longer sentence than the others\t0\nno label here\t\n"
                    "short\t1\nmiddle length one\t0\nother class\t2\nx\t1\n")
    bundle = load_data(str(tmp_path), text_cfg, DataOptions(classes="0,1"), tokenizer=tokenizer)
    ids = example_ids(bundle, bundle.test)
    assert sorted(ids, key=int) == ["0", "2", "3", "5"]
    assert ids != sorted(ids, key=int)  # the test split is sorted by length, and the ids went with it
    rows = _rows_of(test)
    for i, row_id in enumerate(ids):
        assert bundle.test[i][0] == rows[int(row_id)][0]
    assert split_file(bundle.test) == "test.tsv" and split_file(bundle.val) == "dev.tsv"
    assert example_ids(bundle, bundle.val) in (["0", "1"], ["1", "0"])
    assert split_file(bundle.train) == "train.tsv"


def test_text_ids_survive_the_holdout_split_of_one_file(tmp_path, text_cfg, tokenizer):
    path = tmp_path / "reviews.tsv"
    path.write_text("sentence\tlabel\n" + "".join(f"text number {i}\t{i % 2}\n" for i in range(12)))
    bundle = load_data(str(path), text_cfg, DataOptions(val_fraction=0.25, max_val=2), tokenizer=tokenizer)
    rows = _rows_of(path)
    for dataset in (bundle.train, bundle.val):
        ids = example_ids(bundle, dataset)
        assert len(ids) == len(dataset) and [dataset[i][0] for i in range(len(dataset))] == \
            [rows[int(k)][0] for k in ids]
        assert split_file(dataset) == "reviews.tsv"
    assert set(example_ids(bundle, bundle.train)).isdisjoint(example_ids(bundle, bundle.val))


def test_ids_change_neither_items_nor_fingerprints():
    with_ids = TextDataset(["a b", "c"], [0, 1], ids=[4, 9], file="test.tsv")
    plain = TextDataset(["a b", "c"], [0, 1])
    assert with_ids.fingerprint() == plain.fingerprint()
    assert [with_ids[i] for i in range(2)] == [plain[i] for i in range(2)]
    assert with_ids.subset([1]).ids == ["9"] and with_ids.subset([1]).file == "test.tsv"
    assert plain.subset([1]).ids is None
    with pytest.raises(ValueError):
        TextDataset(["a"], [0], ids=[1, 2])


def test_image_ids_are_paths_under_the_root(tmp_path, image_cfg, image_tree):
    root = tmp_path / "data"
    for split, n in (("train", 4), ("val", 2), ("test", 2)):
        image_tree(root / split, {"cat": n, "dog": n})
    bundle = load_data(str(root), image_cfg, DataOptions(image_size=16))
    assert example_ids(bundle, bundle.test) == ["test/cat/0.png", "test/cat/1.png", "test/dog/0.png",
                                                "test/dog/1.png"]
    assert example_ids(bundle, bundle.train)[0] == "train/cat/0.png"
    assert split_file(bundle.test) is None

    tree = image_tree(tmp_path / "tree", {"cat": 4, "dog": 4})  # no train/: the root is the one class tree
    bundle = load_data(str(tree), image_cfg, DataOptions(image_size=16, val_fraction=0.25))
    ids = example_ids(bundle, bundle.val) + example_ids(bundle, bundle.train)
    assert sorted(ids) == [f"{c}/{i}.png" for c in ("cat", "dog") for i in range(4)]


def test_digits_ids_name_load_digits_rows(image_cfg):
    bundle = load_data("digits:0-1", image_cfg, DataOptions(image_size=8, max_val=3))
    ids = example_ids(bundle, bundle.val)
    assert len(ids) == 3 and all(i.startswith("digits[") for i in ids)


def test_a_dataset_without_ids_is_one_clear_error(tmp_path, text_cfg, tokenizer):
    (tmp_path / "train.tsv").write_text("sentence\tlabel\ngood\t1\nbad\t0\nfine\t1\nawful\t0\n")
    bundle = load_data(str(tmp_path), text_cfg, DataOptions(), tokenizer=tokenizer)
    with pytest.raises(DataError, match="no ids"):
        example_ids(bundle, TextDataset(["a"], [0]))
