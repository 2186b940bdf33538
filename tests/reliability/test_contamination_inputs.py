"""What a careless user gives `transferlab contamination` and `evaluate --contamination`: one data set checked
against itself, the bundled digits, a fractional or repeated --threshold, and a contamination folder made for
other data (other images under the same relative paths, another test.tsv of the same name, a folder from before
the target fingerprint existed). Each wrong input is one line on stderr, exit code 2, nothing written."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import TINY_IMAGE_MODEL
from tests.reliability.conftest import error_line, run_cli

# the fast methods, at the fixed thresholds: these tests are about inputs, not about the methods' calibration
QUICK = ["--methods", "exact,phash", "--calibrate", "0", "--threshold-mode", "fixed"]


def cli(capsys, *argv) -> tuple[int, str, str]:
    return run_cli([str(a) for a in argv], capsys)


def refused(capsys, *argv) -> str:
    """The one error line of a command that must fail with exit code 2 and print nothing on stdout."""
    code, out, err = cli(capsys, *argv)
    assert code == 2 and out == "", (code, out, err)
    return error_line(err)


def _digit_pngs(root: Path, split: str, rows: range, seed: int | None = None) -> None:
    """split/<digit>/<k>.png from load_digits() rows; with `seed`, other pixels under the same names."""
    from sklearn.datasets import load_digits

    raw = load_digits()
    rng = np.random.default_rng(seed) if seed is not None else None
    for k, i in enumerate(rows):
        pixels = np.round(raw.images[i] * (255 / 16)).astype(np.uint8)
        if rng is not None:
            pixels = rng.integers(0, 256, pixels.shape, dtype=np.uint8)
        folder = root / split / str(raw.target[i])
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).resize((16, 16)).save(folder / f"{k}.png")


@pytest.fixture(scope="module")
def digit_folder(tmp_path_factory) -> Path:
    """train/ (60 scans) and test/ (30 other scans) as PNG class folders."""
    root = tmp_path_factory.mktemp("digit_folder") / "data"
    _digit_pngs(root, "train", range(0, 60))
    _digit_pngs(root, "test", range(60, 90))
    return root


def _tsv(path: Path, rows: list[tuple[str, str]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("sentence\tlabel\n" + "".join(f"{t}\t{l}\n" for t, l in rows), encoding="utf-8")
    return path


SENTENCES = [(f"the {w} film about a quiet harbour town and its {w} lighthouse keeper number {i}", str(i % 3))
             for i, w in enumerate(["warm", "cold", "bright", "dark", "long", "short", "odd", "plain", "grand"])]


# ---- 1. a data set checked against itself ----------------------------------------------------------------------
def test_the_same_image_split_as_source_and_target_is_refused_before_any_work(capsys, tmp_path, digit_folder):
    out = tmp_path / "out"
    line = refused(capsys, "contamination", "--source", digit_folder, "--target", digit_folder, "--split", "train",
                   *QUICK, "--out", out)
    assert "the source's own examples" in line and "100% dirty" in line and "--source-split" in line
    assert not out.exists()
    # the same files reached by another path (a link to the split folder, read as a one-split data set)
    (tmp_path / "link").symlink_to(digit_folder / "train")
    line = refused(capsys, "contamination", "--source", digit_folder, "--target", tmp_path / "link", "--split",
                   "train", *QUICK, "--out", out)
    assert "the source's own examples" in line and not out.exists()


def test_the_same_text_file_as_source_and_target_is_refused_and_a_partial_overlap_warned(capsys, tmp_path):
    data = _tsv(tmp_path / "all.tsv", SENTENCES)
    out = tmp_path / "out"
    line = refused(capsys, "contamination", "--source", data, "--target", data, "--calibrate", "0", "--out", out)
    assert "all.tsv" in line and "the source's own examples" in line and not out.exists()
    # rows of class 1 only, from the same file as the source's classes 0 and 1: every target row is a source row
    line = refused(capsys, "contamination", "--source", data, "--target", data, "--source-classes", "0,1",
                   "--classes", "1", "--calibrate", "0", "--out", out)
    assert "the source's own examples" in line and not out.exists()
    # classes 1 and 2 against 0 and 1: class 2's rows get a real answer, class 1's are the source's own rows
    code, stdout, err = cli(capsys, "contamination", "--source", data, "--target", data, "--source-classes", "0,1",
                            "--classes", "1,2", "--calibrate", "0", "--out", out)
    assert code == 0, err
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["n_target"] == 6
    assert any("3 of the 6 target examples are the source's own files" in w for w in summary["warnings"])
    assert "warning: 3 of the 6 target examples are the source's own files" in stdout


@pytest.mark.parametrize("modality", ["image", "text"])
def test_a_copy_of_the_same_split_is_checked_with_a_warning_on_the_page_and_in_the_summary(capsys, tmp_path,
                                                                                           digit_folder, modality):
    if modality == "image":  # train/ copied as another data set's test/: other files, the same images
        source, target = digit_folder, tmp_path / "copy"
        shutil.copytree(digit_folder / "train", target / "test")
        extra = QUICK
    else:
        source = _tsv(tmp_path / "a" / "train.tsv", SENTENCES).parent
        target = _tsv(tmp_path / "b" / "test.tsv", SENTENCES[::-1]).parent  # the same rows, in another order
        extra = ["--calibrate", "0"]
    out = tmp_path / "out"
    code, stdout, err = cli(capsys, "contamination", "--source", source, "--target", target, *extra, "--out", out)
    assert code == 0, err
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["dirty_fraction"] == 1.0
    same = [w for w in summary["warnings"] if "identical content" in w]
    assert len(same) == 1 and "says nothing about contamination" in same[0]
    assert f"warning: {same[0]}" in stdout
    page = (out / "contamination.html").read_text(encoding="utf-8")
    assert "<ul class='warnings'>" in page and "identical content" in page


# ---- 2. the bundled digits, as finetune reads them ---------------------------------------------------------------
def test_digits_is_a_source_and_a_target_split_as_finetune_splits_it(capsys, tmp_path):
    out = tmp_path / "val"
    # an integer-valued hash threshold written as a float is a whole distance: accepted
    code, stdout, err = cli(capsys, "contamination", "--source", "digits", "--target", "digits", "--split", "val",
                            *QUICK, "--threshold", "phash=3.0", "--out", out)
    assert code == 0, err
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["modality"] == "image" and summary["target"]["data"] == "digits"
    assert summary["source"]["n"] + summary["n_target"] == 1797  # finetune's train and val: every scan once
    assert summary["methods"]["phash"]["threshold"] == 3 and summary["methods"]["phash"]["match_if"] == "distance <= 3"
    ids = [line.split(",", 1)[0] for line in (out / "matches.csv").read_text().splitlines()[1:]]
    assert len(ids) == 2 * summary["n_target"] and all(i.startswith("digits[") for i in ids)
    assert "<img" in (out / "contamination.html").read_text(encoding="utf-8")

    # a held-out test split, as `finetune --test-fraction 0.2` holds it out; a class subset on one side
    out = tmp_path / "test"
    code, _, err = cli(capsys, "contamination", "--source", "digits", "--target", "digits:0-4", "--split", "test",
                       "--test-fraction", "0.2", *QUICK, "--out", out)
    assert code == 0, err
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert 0 < summary["n_target"] < 1797 // 4


def test_digits_refusals_are_one_line(capsys, tmp_path, digit_folder):
    out = tmp_path / "out"
    line = refused(capsys, "contamination", "--source", "digits", "--target", "digits", "--split", "test", *QUICK,
                   "--out", out)
    assert "digits has no test split" in line and "--test-fraction" in line
    line = refused(capsys, "contamination", "--source", "digits", "--target", "digits", "--split", "train", *QUICK,
                   "--out", out)
    assert "the source's own examples" in line
    line = refused(capsys, "contamination", "--source", "digits", "--target", "digits", "--split", "val", *QUICK,
                   "--export-clean", tmp_path / "clean", "--out", out)
    assert "--export-clean" in line and "not files to copy" in line
    line = refused(capsys, "contamination", "--source", digit_folder, "--target", digit_folder, "--test-fraction",
                   "0.2", *QUICK, "--out", out)
    assert "--test-fraction splits the bundled digits only" in line
    assert not out.exists() and not (tmp_path / "clean").exists()


# ---- 3. --threshold: whole Hamming distances, one value per method, checked first ---------------------------------
@pytest.mark.parametrize("thresholds, message", [
    (["phash=2.5"], "phash threshold is a Hamming distance, a whole number of bits 0..64, got 2.5"),
    (["dhash=0.5"], "dhash threshold is a Hamming distance"),
    (["aligned=0.9", "aligned=0.95"], "--threshold aligned is given twice (0.9 and 0.95)"),
    (["phash=3", " phash =3"], "--threshold phash is given twice"),
])
def test_bad_thresholds_are_refused_before_the_data_is_looked_at(capsys, tmp_path, thresholds, message):
    out = tmp_path / "out"
    # the data does not exist: a refusal about the threshold shows that it came first
    args = [a for t in thresholds for a in ("--threshold", t)]
    line = refused(capsys, "contamination", "--source", tmp_path / "nothing", "--target", tmp_path / "nothing",
                   *args, "--out", out)
    assert message in line
    assert not out.exists()


def test_the_library_refuses_a_fractional_hash_threshold_too():
    from transferlab.contamination.check import CheckOptions
    from transferlab.errors import ConfigError

    with pytest.raises(ConfigError, match="whole number of bits"):
        CheckOptions(methods=["phash"], thresholds={"phash": 2.5}).check("image")
    assert CheckOptions(methods=["phash"], thresholds={"phash": 2.0}).check("image") == ("phash",)


# ---- 4. evaluate --contamination: the folder applies to the data it was computed on only --------------------------
def _finetune(out: Path, data: Path, *extra) -> Path:
    from transferlab.cli import main

    assert main([str(a) for a in ["finetune", "--data", data, "--epochs", "1", "--eval-batch-size", "8", "--device",
                                  "cpu", "--strategy", "full", "--out", out, *extra]]) == 0
    return out


def _evaluate(capsys, run: Path, folder: Path) -> tuple[int, str, str]:
    return cli(capsys, "evaluate", "--run", run, "--split", "test", "--contamination", folder)


def test_images_of_another_folder_under_the_same_names_are_refused(capsys, tmp_path, digit_folder):
    # B: another data set with B/test/<digit>/<k>.png, the names of digit_folder's test images, other pixels
    other = tmp_path / "other"
    _digit_pngs(other, "test", range(60, 90), seed=0)
    assert sorted(p.relative_to(other).as_posix() for p in other.rglob("*.png")) == sorted(
        p.relative_to(digit_folder).as_posix() for p in (digit_folder / "test").rglob("*.png"))
    run = _finetune(tmp_path / "run", digit_folder, "--model", TINY_IMAGE_MODEL, "--image-size", "32")
    source = tmp_path / "source"
    _digit_pngs(source, "train", range(200, 260))
    for target, name in ((other, "of_other"), (digit_folder, "of_data")):
        code, _, err = cli(capsys, "contamination", "--source", source, "--target", target, *QUICK, "--out",
                           tmp_path / name)
        assert code == 0, err
    line = error_line(_evaluate(capsys, run, tmp_path / "of_other")[2])
    assert f"{tmp_path / 'of_other'} was computed on other data than data {digit_folder}, split test" in line
    assert "its ids would name other examples" in line
    # the folder computed on the data evaluated applies, and covers every test image
    code, out, err = _evaluate(capsys, run, tmp_path / "of_data")
    assert code == 0, err
    assert json.loads(out)["contamination"]["all"]["n"] == 30 and json.loads(out)["contamination"]["uncovered"] == 0
    # an image changed since the check: its id names other pixels now
    changed = next((digit_folder / "test").rglob("*.png"))
    before = changed.read_bytes()
    try:
        Image.fromarray(np.zeros((16, 16), np.uint8)).save(changed)
        code, out, err = _evaluate(capsys, run, tmp_path / "of_data")
        assert code == 2 and out == "" and "computed on other data" in error_line(err)
    finally:
        changed.write_bytes(before)


def test_another_test_tsv_of_the_same_name_and_a_folder_without_fingerprint_are_refused(capsys, tmp_path,
                                                                                         tiny_bert_dir):
    data, other = tmp_path / "data", tmp_path / "other"
    _tsv(data / "train.tsv", SENTENCES * 2)
    _tsv(data / "dev.tsv", SENTENCES[:4])
    _tsv(data / "test.tsv", SENTENCES[:6])
    _tsv(other / "test.tsv", [(f"another review entirely, row {i}", label) for i, (_, label) in
                              enumerate(SENTENCES[:6])])
    run = _finetune(tmp_path / "run", data, "--model", tiny_bert_dir, "--max-length", "16")
    source = _tsv(tmp_path / "source" / "train.tsv", SENTENCES[6:]).parent
    for target, name in ((other, "of_other"), (data, "of_data")):
        code, _, err = cli(capsys, "contamination", "--source", source, "--target", target, "--calibrate", "0",
                           "--out", tmp_path / name)
        assert code == 0, err
    # the same file name (test.tsv) and row ids 0..5: only the fingerprint tells the two apart
    line = error_line(_evaluate(capsys, run, tmp_path / "of_other")[2])
    assert "was computed on other data than data" in line and "file test.tsv" in line
    code, out, err = _evaluate(capsys, run, tmp_path / "of_data")
    assert code == 0, err
    assert json.loads(out)["contamination"]["all"]["n"] == 6

    # a folder written before target.fingerprint existed: nothing shows what its ids name
    summary_path = tmp_path / "of_data" / "summary.json"
    summary = json.loads(summary_path.read_text(encoding="utf-8"))
    del summary["target"]["fingerprint"]
    summary_path.write_text(json.dumps(summary), encoding="utf-8")
    code, out, err = _evaluate(capsys, run, tmp_path / "of_data")
    line = error_line(err)
    assert code == 2 and out == ""
    assert "records no fingerprint of its target split" in line and "re-run transferlab contamination" in line
    # and one that is not a sha256 is a malformed folder
    summary["target"]["fingerprint"] = "../../etc/passwd"
    summary_path.write_text(json.dumps(summary), encoding="utf-8")
    line = error_line(_evaluate(capsys, run, tmp_path / "of_data")[2])
    assert "target.fingerprint is '../../etc/passwd'; expected 64 hex digits" in line
