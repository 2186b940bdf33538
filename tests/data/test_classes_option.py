"""The `classes` data option (--classes): keeping some classes, exactly as if the others did not exist."""
import logging
import shutil
from pathlib import Path

import pytest

from transferlab.data import DataError, DataOptions, load_data

MODEL = "test_efficientnet"


# ---- the option ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("value", ["cat", "cat,", "cat,,dog", " , ", "", "cat,dog,cat", ["cat", "dog"]])
def test_malformed_classes_raise_one_line_naming_the_flag(value):
    with pytest.raises(DataError, match="--classes") as info:
        DataOptions(classes=value)
    assert "\n" not in str(info.value)


def test_classes_are_split_on_commas_and_stripped():
    assert DataOptions(classes="dog, cat").selected_classes() == ["dog", "cat"]
    assert DataOptions().selected_classes() is None


def test_the_cli_builds_the_flag_and_passes_it_on():
    from transferlab.cli import build_parser
    from transferlab.cli.core import run_config_from_args

    args = build_parser().parse_args(["finetune", "--model", MODEL, "--data", "d", "--out", "o",
                                      "--classes", "cat,fox"])
    assert args.classes == "cat,fox"
    assert run_config_from_args(args).data_options.classes == "cat,fox"
    compare = build_parser().parse_args(["compare", "--classes", "cat,fox"])
    assert compare.classes == "cat,fox"


# ---- image folders -------------------------------------------------------------------------------------------
def _relative(dataset, root: Path) -> list[tuple[str, int]]:
    return [(str(Path(p).relative_to(root)), t) for p, t in zip(dataset.paths, dataset.targets)]


def _copy_without(src: Path, dst: Path, drop: str, splits=("",)) -> Path:
    """A copy of an image folder without the class folder `drop` (in every split)."""
    shutil.copytree(src, dst)
    for split in splits:
        shutil.rmtree(dst / split / drop)
    return dst


@pytest.fixture
def single_tree(tmp_path, image_tree):
    return image_tree(tmp_path / "data", {"cat": 9, "dog": 7, "fox": 6})


@pytest.fixture
def split_tree(tmp_path, image_tree):
    root = tmp_path / "split"
    image_tree(root / "train", {"cat": 6, "dog": 5, "fox": 4})
    image_tree(root / "val", {"cat": 2, "dog": 2, "fox": 2})
    image_tree(root / "test", {"cat": 1, "dog": 1, "fox": 3})
    return root


def test_two_of_three_classes_keep_exactly_their_files(single_tree, image_cfg):
    bundle = load_data(str(single_tree), image_cfg, DataOptions(image_size=8, classes="fox,cat"))
    assert bundle.classes == ["cat", "fox"]  # the usual sorted order, whatever order --classes gives
    files = bundle.train.paths + bundle.val.paths
    assert sorted(files) == sorted(str(p) for c in ("cat", "fox") for p in (single_tree / c).iterdir())
    for ds in (bundle.train, bundle.val):
        assert all(Path(p).parent.name == bundle.classes[t] for p, t in zip(ds.paths, ds.targets))
        assert set(ds.targets) == {0, 1}


@pytest.mark.parametrize("options", [{}, {"max_train": 5, "seed": 3}, {"val_fraction": 0.4, "seed": 1}])
def test_single_tree_equals_a_copy_without_the_other_classes(single_tree, tmp_path, image_cfg, options):
    copy = _copy_without(single_tree, tmp_path / "copy", "cat")
    assert sorted(p.name for p in copy.iterdir()) == ["dog", "fox"]
    chosen = load_data(str(single_tree), image_cfg, DataOptions(image_size=8, classes="dog,fox", **options))
    copied = load_data(str(copy), image_cfg, DataOptions(image_size=8, **options))
    assert chosen.classes == copied.classes == ["dog", "fox"]
    for split in ("train", "val"):
        assert _relative(getattr(chosen, split), single_tree) == _relative(getattr(copied, split), copy)


def test_split_folders_equal_a_copy_without_the_other_classes(split_tree, tmp_path, image_cfg):
    copy = _copy_without(split_tree, tmp_path / "copy", "dog", ("train", "val", "test"))
    assert sorted(p.name for p in (copy / "test").iterdir()) == ["cat", "fox"]
    chosen = load_data(str(split_tree), image_cfg, DataOptions(image_size=8, classes="cat,fox", max_train=6))
    copied = load_data(str(copy), image_cfg, DataOptions(image_size=8, max_train=6))
    assert chosen.summary() == copied.summary() == {"kind": "image", "classes": ["cat", "fox"], "train": 6,
                                                    "val": 4, "test": 4, "skipped": 0}
    for split in ("train", "val", "test"):
        assert _relative(getattr(chosen, split), split_tree) == _relative(getattr(copied, split), copy)


def test_numeric_class_names_keep_numeric_order(tmp_path, image_tree, image_cfg):
    image_tree(tmp_path, {"2": 3, "10": 3, "3": 3})
    bundle = load_data(str(tmp_path), image_cfg, DataOptions(image_size=8, classes="10,2"))
    assert bundle.classes == ["2", "10"]


def test_left_out_classes_are_not_read(tmp_path, image_tree, save_image, image_cfg):
    image_tree(tmp_path / "train", {"cat": 3, "dog": 3})
    (tmp_path / "train" / "fox" / "0.png").parent.mkdir()
    (tmp_path / "train" / "fox" / "0.png").write_bytes(b"not an image")  # would be skipped if read
    (tmp_path / "train" / "empty").mkdir()  # would be an error if read
    image_tree(tmp_path / "val", {"cat": 1, "dog": 1, "owl": 1})  # a class training lacks: an error if read
    bundle = load_data(str(tmp_path), image_cfg, DataOptions(image_size=8, classes="cat,dog"))
    assert bundle.summary()["skipped"] == 0 and len(bundle.val) == 2


def test_a_name_the_data_lacks_is_named_with_the_classes_it_has(single_tree, image_cfg):
    with pytest.raises(DataError, match="'zebra'") as info:
        load_data(str(single_tree), image_cfg, DataOptions(image_size=8, classes="cat,zebra"))
    message = str(info.value)
    assert "--classes" in message and "'cat', 'dog', 'fox'" in message and "\n" not in message


def test_a_long_class_list_is_shortened(tmp_path, image_tree, image_cfg):
    image_tree(tmp_path, {f"c{i:02d}": 1 for i in range(30)})
    with pytest.raises(DataError, match="and 10 more"):
        load_data(str(tmp_path), image_cfg, DataOptions(image_size=8, classes="c01,nope"))


def test_validation_split_lacking_a_selected_class_warns_as_before(tmp_path, image_tree, image_cfg, caplog):
    image_tree(tmp_path / "train", {"cat": 3, "dog": 3, "fox": 3})
    image_tree(tmp_path / "val", {"cat": 1, "dog": 1})
    with caplog.at_level(logging.WARNING, logger="transferlab.data"):
        bundle = load_data(str(tmp_path), image_cfg, DataOptions(image_size=8, classes="cat,fox"))
    assert bundle.val.targets == [0]
    assert any("no images of class(es) fox" in r.getMessage() for r in caplog.records)


def test_a_split_with_none_of_the_selected_classes_is_an_error(tmp_path, image_tree, image_cfg):
    image_tree(tmp_path / "train", {"cat": 3, "dog": 3, "fox": 3})
    image_tree(tmp_path / "val", {"dog": 1})
    with pytest.raises(DataError, match="none of the classes --classes selects"):
        load_data(str(tmp_path), image_cfg, DataOptions(image_size=8, classes="cat,fox"))


def test_fingerprints_follow_the_selection(single_tree, image_cfg):
    def prints(classes):
        bundle = load_data(str(single_tree), image_cfg, DataOptions(image_size=8, classes=classes))
        return bundle.train.fingerprint(), bundle.val.fingerprint()

    assert prints("cat,dog") == prints("dog,cat")
    assert len({prints(None), prints("cat,dog"), prints("cat,fox")}) == 3


# ---- digits --------------------------------------------------------------------------------------------------
def test_digits_selection_equals_the_spec(image_cfg):
    chosen = load_data("digits", image_cfg, DataOptions(image_size=8, classes="5,0,3"))
    spec = load_data("digits:0,3,5", image_cfg, DataOptions(image_size=8))
    assert chosen.classes == spec.classes == ["0", "3", "5"]
    assert (chosen.train.ids, chosen.train.targets) == (spec.train.ids, spec.train.targets)
    assert chosen.val.ids == spec.val.ids and set(chosen.val.targets) == {0, 1, 2}
    assert chosen.train.fingerprint() == spec.train.fingerprint()
    assert chosen.train.fingerprint() != load_data("digits:0,3,6", image_cfg, DataOptions(image_size=8)).train.fingerprint()


def test_digits_selection_within_a_spec(image_cfg):
    bundle = load_data("digits:0-4", image_cfg, DataOptions(image_size=8, classes="1,4"))
    assert bundle.classes == ["1", "4"]
    with pytest.raises(DataError, match=r"--classes names '5'.*digits:0-4"):
        load_data("digits:0-4", image_cfg, DataOptions(image_size=8, classes="1,5"))


@pytest.mark.parametrize("classes", ["0,12", "0,a", "0,03"])
def test_digits_names_outside_0_to_9(image_cfg, classes):
    with pytest.raises(DataError, match="--classes: digits has no class"):
        load_data("digits", image_cfg, DataOptions(image_size=8, classes=classes))


# ---- text ----------------------------------------------------------------------------------------------------
def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


ROWS = [("good film", "pos"), ("bad film", "neg"), ("so so", "neu"), ("great", "pos"), ("awful", "neg"),
        ("fine", "neu"), ("lovely", "pos"), ("dull", "neg"), ("ok", "neu"), ("superb", "pos"), ("poor", "neg")]


def _tsv(rows) -> str:
    return "sentence\tlabel\n" + "".join(f"{t}\t{label}\n" for t, label in rows)


def test_text_selection_equals_a_file_without_the_other_rows(tmp_path, text_cfg, tokenizer):
    full = _write(tmp_path / "full" / "train.tsv", _tsv(ROWS) + "\tneu\n")  # a bad row of a left-out class
    _write(tmp_path / "full" / "test.tsv", _tsv(ROWS[:6]))
    _write(tmp_path / "copy" / "train.tsv", _tsv([r for r in ROWS if r[1] != "neu"]))
    _write(tmp_path / "copy" / "test.tsv", _tsv([r for r in ROWS[:6] if r[1] != "neu"]))
    options = {"val_fraction": 0.25, "seed": 2}
    chosen = load_data(str(full.parent), text_cfg, DataOptions(classes="pos,neg", **options), tokenizer=tokenizer)
    copied = load_data(str(tmp_path / "copy"), text_cfg, DataOptions(**options), tokenizer=tokenizer)
    assert chosen.summary() == copied.summary()
    assert chosen.classes == ["neg", "pos"] and chosen.summary()["skipped"] == 0
    for split in ("train", "val", "test"):
        assert getattr(chosen, split).fingerprint() == getattr(copied, split).fingerprint()


def test_text_label_the_data_lacks(tmp_path, text_cfg, tokenizer):
    path = _write(tmp_path / "d.tsv", _tsv(ROWS))
    with pytest.raises(DataError, match=r"--classes: .*d\.tsv has no label 'mixed'; its classes are 'neg'"):
        load_data(str(path), text_cfg, DataOptions(classes="pos,mixed"), tokenizer=tokenizer)


# ---- the command line ----------------------------------------------------------------------------------------
def _run_cli(args, capsys) -> tuple[int, str]:
    from transferlab.cli import main

    capsys.readouterr()
    try:
        code = main(args)
    except SystemExit as exc:
        code = exc.code
    return code, capsys.readouterr().err


@pytest.mark.parametrize("classes, expected", [("cat,zebra", "'zebra'"), ("cat", "one class only"),
                                               ("cat,,dog", "empty name")])
def test_a_bad_classes_flag_exits_2_with_one_line(single_tree, tmp_path, capsys, classes, expected):
    code, err = _run_cli(["finetune", "--model", MODEL, "--data", str(single_tree), "--image-size", "32",
                          "--classes", classes, "--out", str(tmp_path / "run")], capsys)
    lines = [line for line in err.splitlines() if line.startswith("transferlab: error:")]
    assert code == 2 and "Traceback" not in err and len(lines) == 1
    assert "--classes" in lines[0] and expected in lines[0]
    assert not (tmp_path / "run").exists()
