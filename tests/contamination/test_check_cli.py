"""`transferlab contamination` end to end on tiny data: matches.csv, summary.json, the page, --export-clean,
the output folder's protection, and one error line (exit code 2) for bad input."""
from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import run_cli, shared_data
from transferlab.contamination import image_matching as im
from transferlab.contamination.check import CheckOptions, check_contamination
from transferlab.contamination.detect import DEFAULT_THRESHOLDS
from transferlab.contamination.inputs import read_split
from transferlab.errors import ConfigError

CLASSES = ("cat", "ship", "frog", "truck")
# 16 source photographs are too few for a null distribution at fpr 0.001 (tests/contamination/test_calibrate.py
# checks the data-calibrated thresholds on digits): these tests use the thresholds calibrated on CIFAR-10
NO_EMBEDDING = ("--methods", "exact,phash,dhash,aligned", "--calibrate", "0", "--threshold-mode", "fixed")
HEADER = ["target_id", "source_id", "score", "method", "dirty"]
# target id -> (its source id, the methods that must find it); strangers: no source
PLANTED = {"test/cat/copy.jpg": ("train/cat/0001.jpg", {"exact", "phash", "dhash", "aligned"}),
           "test/ship/shifted.png": ("train/ship/0002.jpg", {"aligned"}),
           "test/frog/reencoded.jpg": ("train/frog/0003.jpg", {"phash", "dhash", "aligned"})}
STRANGERS = [f"test/{c}/stranger.jpg" for c in CLASSES]


def run(capsys, *argv) -> tuple[int, str, str]:
    return run_cli([str(a) for a in argv], capsys)


def _one_error_line(err: str, message: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("transferlab: error:") and message in lines[0], err


def _rows(out: Path) -> list[dict]:
    return list(csv.DictReader(io.StringIO((out / "matches.csv").read_text(encoding="utf-8"))))


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> tuple[Path, Path]:
    """src/train/<class>/ (16 CIFAR-10 photographs) and tgt/test/<class>/: a file copy, a 3-pixel shift (PNG),
    a JPEG re-encode, and 4 photographs the source does not hold."""
    cifar_train = shared_data("cifar10") / "train"
    root = tmp_path_factory.mktemp("images")
    src, tgt = root / "src", root / "tgt"
    for c in CLASSES:
        (src / "train" / c).mkdir(parents=True)
        (tgt / "test" / c).mkdir(parents=True)
        for i in range(4):
            shutil.copyfile(cifar_train / c / f"{i:04d}.jpg", src / "train" / c / f"{i:04d}.jpg")
        shutil.copyfile(cifar_train / c / "0100.jpg", tgt / "test" / c / "stranger.jpg")
    shutil.copyfile(cifar_train / "cat" / "0001.jpg", tgt / "test" / "cat" / "copy.jpg")
    ship = np.asarray(Image.open(cifar_train / "ship" / "0002.jpg").convert("RGB"))
    Image.fromarray(im._shift(ship, 3, -2)).save(tgt / "test" / "ship" / "shifted.png")
    frog = np.asarray(Image.open(cifar_train / "frog" / "0003.jpg").convert("RGB"))
    Image.fromarray(frog).save(tgt / "test" / "frog" / "reencoded.jpg", quality=60)
    return src, tgt


@pytest.fixture(scope="module")
def texts(tmp_path_factory) -> tuple[Path, Path]:
    """src/train.tsv (one bad row first) and tgt/test.tsv: rows 0-1 clean, row 2 an exact copy of source row 3
    (case and punctuation aside), row 3 sharing 15 words with source row 2, row 4 clean."""
    root = tmp_path_factory.mktemp("texts")
    source = [
        ("the quiet harbour town wakes slowly while fishing boats drift past the old stone lighthouse", "1"),
        ("a tense thriller that never quite delivers on the promise of its clever opening scene", "0"),
        ("the cast gives warm and generous performances that lift a thin story far above its modest means", "1"),
        ("Nothing about this sequel feels necessary, and every joke lands with a dull and heavy thud.", "0"),
        ("an elegant documentary about glaciers melting in the far north of a changing world", "1"),
    ]
    lines = ["sentence\tlabel", "a row without its label\t"] + [f"{t}\t{l}" for t, l in source]
    (root / "src").mkdir()
    (root / "src" / "train.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    target = [
        ("my grandmother baked \"real\" bread every sunday morning before the whole family walked to church", "1"),
        ("engineers tested the bridge under heavy winds for three weeks before opening it to traffic", "0"),
        ("nothing about this SEQUEL feels necessary and every joke lands with a dull and heavy thud", "0"),
        (("critics agree the cast gives warm and generous performances that lift a thin story far above its "
          "modest means this year"), "1"),
        ("children chased bright kites across the windy beach until the sun finally sank behind the dunes", "1"),
    ]
    (root / "tgt").mkdir()
    (root / "tgt" / "test.tsv").write_text(
        "sentence\tlabel\n" + "".join(f"{t}\t{l}\n" for t, l in target), encoding="utf-8")
    return root / "src", root / "tgt"


# ---- images end to end -------------------------------------------------------------------------------------
def test_image_check_writes_one_row_per_target_and_method_and_finds_the_planted_copies(capsys, tmp_path, images):
    src, tgt = images
    out = tmp_path / "out"
    code, printed, err = run(capsys, "contamination", "--source", str(src), "--target", str(tgt), "--out", str(out),
                             *NO_EMBEDDING)
    assert code == 0, err
    text = (out / "matches.csv").read_text(encoding="utf-8")
    assert text.splitlines()[0] == ",".join(HEADER)
    rows = _rows(out)
    methods = ["exact", "phash", "dhash", "aligned"]
    targets = sorted(PLANTED) + STRANGERS
    assert sorted((r["target_id"], r["method"]) for r in rows) == sorted((t, m) for t in targets for m in methods)
    by = {(r["target_id"], r["method"]): r for r in rows}
    for tid, (sid, finders) in PLANTED.items():
        for m in finders:
            assert by[tid, m]["dirty"] == "1" and by[tid, m]["source_id"] == sid, (tid, m)
    assert by["test/cat/copy.jpg", "exact"]["score"] == "1"
    assert by["test/ship/shifted.png", "exact"] == {"target_id": "test/ship/shifted.png", "source_id": "",
                                                    "score": "0", "method": "exact", "dirty": "0"}
    assert float(by["test/ship/shifted.png", "aligned"]["score"]) > 0.95
    for tid in STRANGERS:
        assert all(by[tid, m]["dirty"] == "0" for m in methods), tid

    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    dirty = {r["target_id"] for r in rows if r["dirty"] == "1"}
    assert dirty == set(PLANTED)
    assert summary["n_target"] == 7 and summary["n_dirty"] == 3 and summary["dirty_fraction"] == pytest.approx(3 / 7)
    assert summary["source"]["n"] == 16 and summary["target"]["split"] == "test"
    assert list(summary["methods"]) == methods
    for m, entry in summary["methods"].items():
        n = sum(1 for r in rows if r["method"] == m and r["dirty"] == "1")
        assert entry["n_dirty"] == n and entry["dirty_fraction"] == pytest.approx(n / 7)
    assert summary["methods"]["aligned"]["threshold"] == DEFAULT_THRESHOLDS["aligned"]
    assert summary["methods"]["phash"]["threshold"] == DEFAULT_THRESHOLDS["phash"]
    assert summary["methods"]["phash"]["chosen"] == "fixed (the CIFAR-10 default)"
    assert summary["methods"]["phash"]["n_null"] == 16 and 0 <= summary["methods"]["phash"]["null_rate"] <= 1
    assert summary["thresholds"]["mode"] == "fixed" and summary["thresholds"]["fpr"] is None
    assert summary["calibration"] is None
    page = (out / "contamination.html").read_text(encoding="utf-8")
    assert "test/ship/shifted.png" in page and "data:image/png;base64," in page
    assert "dirty (any method): 3" in printed


def test_image_thresholds_from_the_command_line_are_used(capsys, tmp_path, images):
    src, tgt = images
    out = tmp_path / "out"
    code, _, err = run(capsys, "contamination", "--source", str(src), "--target", str(tgt), "--out", str(out),
                       "--methods", "phash,aligned", "--calibrate", "0", "--threshold", "aligned=-1",
                       "--threshold", "phash=0")
    assert code == 0, err
    rows = _rows(out)
    assert all(r["dirty"] == "1" for r in rows if r["method"] == "aligned")  # every score is >= -1
    assert {r["target_id"] for r in rows if r["method"] == "phash" and r["dirty"] == "1"} == {"test/cat/copy.jpg"}
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["methods"]["aligned"]["match_if"] == "score >= -1"
    assert summary["methods"]["phash"]["match_if"] == "distance <= 0"
    # the default mode is "data"; a --threshold wins over it for its method
    assert summary["thresholds"]["mode"] == "data" and summary["thresholds"]["fpr"] == 0.001
    for m in ("aligned", "phash"):
        assert summary["methods"][m]["chosen"] == "fixed (--threshold)" and not summary["methods"][m]["disabled"]
    assert summary["methods"]["aligned"]["null_rate"] == 1.0  # every null image scores >= -1 too


def test_default_methods_with_the_embedding_and_a_small_calibration(capsys, tmp_path, images):
    src, tgt = images
    out = tmp_path / "out"
    code, printed, err = run(capsys, "contamination", "--source", str(src), "--target", str(tgt), "--out", str(out),
                             "--calibrate", "5", "--classes", "cat,ship", "--threshold-mode", "fixed")
    assert code == 0, err
    rows = _rows(out)
    targets = {"test/cat/copy.jpg", "test/ship/shifted.png", "test/cat/stranger.jpg", "test/ship/stranger.jpg"}
    assert {r["target_id"] for r in rows} == targets and len(rows) == 4 * 5
    by = {(r["target_id"], r["method"]): r for r in rows}
    assert by["test/cat/copy.jpg", "embedding"]["dirty"] == "1"
    assert by["test/cat/copy.jpg", "embedding"]["source_id"] == "train/cat/0001.jpg"
    assert float(by["test/cat/copy.jpg", "embedding"]["score"]) > 0.999
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    cal = summary["calibration"]
    assert summary["source"]["n"] == 8 and summary["n_dirty"] == 2
    n_copies = 5 * len(im.COPY_KINDS)  # every kind of near-copy of each copied image
    assert cal["n_copied"] == 5 and cal["n_copies"] == n_copies and list(cal["methods"]) == list(summary["methods"])
    assert cal["any"]["recall"] == pytest.approx(cal["any"]["tp"] / n_copies)
    for m in ("phash", "dhash", "embedding", "aligned"):  # each method's recall of the near-copies, beside its rule
        assert summary["methods"][m]["copy_recall"] == cal["methods"][m]["recall"]
    assert "calibration: near-copies of 5 source images" in printed


def test_export_clean_copies_only_the_clean_images_to_the_same_relative_paths(capsys, tmp_path, images):
    src, tgt = images
    out, clean = tmp_path / "out", tmp_path / "clean"
    code, printed, err = run(capsys, "contamination", "--source", str(src), "--target", str(tgt), "--out", str(out),
                             *NO_EMBEDDING, "--export-clean", str(clean))
    assert code == 0, err
    written = sorted(p.relative_to(clean).as_posix() for p in clean.rglob("*") if p.is_file())
    assert written == sorted(STRANGERS)
    for rel in written:
        assert (clean / rel).read_bytes() == (tgt / rel).read_bytes()
    assert read_split(clean, "test").ids == sorted(STRANGERS)
    assert "clean split: 4 of 7 examples" in printed


def test_export_clean_refuses_a_folder_that_is_not_empty(capsys, tmp_path, images):
    src, tgt = images
    out, clean = tmp_path / "out", tmp_path / "clean"
    clean.mkdir()
    (clean / "mine.txt").write_text("keep me")
    code, _, err = run(capsys, "contamination", "--source", str(src), "--target", str(tgt), "--out", str(out),
                       *NO_EMBEDDING, "--export-clean", str(clean))
    assert code == 2
    _one_error_line(err, "is not empty")
    assert (clean / "mine.txt").read_text() == "keep me" and sorted(clean.iterdir()) == [clean / "mine.txt"]
    assert not out.exists()  # refused before any work


def test_rerun_needs_overwrite_and_someone_elses_folder_is_refused(capsys, tmp_path, images):
    src, tgt = images
    out = tmp_path / "out"
    inputs = ["contamination", "--source", str(src), "--target", str(tgt)]
    args = [*inputs, "--out", str(out), "--methods", "exact", "--calibrate", "0"]
    assert run(capsys, *args)[0] == 0
    before = (out / "summary.json").read_bytes()
    code, _, err = run(capsys, *args)
    assert code == 2
    _one_error_line(err, "--overwrite")
    assert (out / "summary.json").read_bytes() == before
    code, _, err = run(capsys, *inputs, "--out", str(out), "--methods", "exact,phash", "--calibrate", "0",
                       "--overwrite")
    assert code == 0, err
    assert {r["method"] for r in _rows(out)} == {"exact", "phash"}

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("my notes")
    code, _, err = run(capsys, *inputs, "--out", str(foreign), "--methods", "exact", "--calibrate", "0",
                       "--overwrite")
    assert code == 2
    _one_error_line(err, "holds files that are not a transferlab contamination check")
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]
    assert (foreign / "notes.txt").read_text() == "my notes"


# ---- text end to end ---------------------------------------------------------------------------------------
def test_text_check_finds_the_exact_row_and_the_shared_ngram(capsys, tmp_path, texts):
    src, tgt = texts
    out = tmp_path / "out"
    code, _, err = run(capsys, "contamination", "--source", str(src), "--target", str(tgt), "--out", str(out),
                       "--calibrate", "0")
    assert code == 0, err
    rows = _rows(out)
    assert sorted((r["target_id"], r["method"]) for r in rows) == sorted(
        (str(t), m) for t in range(5) for m in ("exact", "ngram"))
    by = {(r["target_id"], r["method"]): r for r in rows}
    # source ids are the file's data-row indices: the bad first row counts
    assert by["2", "exact"]["dirty"] == "1" and by["2", "exact"]["source_id"] == "4"
    assert by["2", "ngram"]["dirty"] == "1" and by["2", "ngram"]["source_id"] == "4"
    assert by["3", "exact"]["dirty"] == "0" and by["3", "exact"]["source_id"] == ""
    assert by["3", "ngram"]["dirty"] == "1" and by["3", "ngram"]["source_id"] == "3"
    assert 0 < float(by["3", "ngram"]["score"]) < 1
    for t in ("0", "1", "4"):
        assert by[t, "exact"]["dirty"] == "0" and by[t, "ngram"]["dirty"] == "0"
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["modality"] == "text" and summary["n_target"] == 5 and summary["n_dirty"] == 2
    assert summary["methods"]["exact"]["n_dirty"] == 1 and summary["methods"]["ngram"]["n_dirty"] == 2
    assert summary["source"]["skipped"] == 1 and summary["source"]["file"] == "train.tsv"
    assert 8 <= summary["options"]["n"] <= 13
    page = (out / "contamination.html").read_text(encoding="utf-8")
    assert "<mark>generous</mark> <mark>performances</mark>" in page  # the shared n-gram is marked


def test_text_export_clean_writes_the_clean_rows_readable_back(capsys, tmp_path, texts):
    src, tgt = texts
    out, clean = tmp_path / "out", tmp_path / "clean"
    code, _, err = run(capsys, "contamination", "--source", str(src), "--target", str(tgt), "--out", str(out),
                       "--calibrate", "0", "--export-clean", str(clean))
    assert code == 0, err
    assert [p.name for p in clean.iterdir()] == ["test.tsv"]
    table = list(csv.reader(io.StringIO((clean / "test.tsv").read_text(encoding="utf-8")), delimiter="\t"))
    assert table[0] == ["text", "label"] and len(table) == 4
    back = read_split(clean, "test")
    original = read_split(tgt, "test")
    assert '"real"' in back.texts[0]  # quotes survive the round trip
    assert back.texts == [original.texts[i] for i in (0, 1, 4)]
    assert back.labels == [original.labels[i] for i in (0, 1, 4)]


# ---- bad input ---------------------------------------------------------------------------------------------
@pytest.fixture()
def unreadable_source(tmp_path) -> Path:
    folder = tmp_path / "broken" / "train" / "cat"
    folder.mkdir(parents=True)
    (folder / "0.png").write_bytes(b"these bytes are not a PNG")
    return tmp_path / "broken"


@pytest.mark.parametrize("case, extra, message", [
    ("text target", [], "holds image and --target"),
    ("empty source", [], "no source image could be read (1 skipped)"),
    ("threshold range", ["--threshold", "aligned=1.5"], "aligned threshold must be in -1..1, got 1.5"),
    ("threshold method", ["--threshold", "foo=1"], "no threshold for method 'foo'"),
    ("threshold value", ["--threshold", "aligned"], "--threshold 'aligned': expected METHOD=VALUE"),
    ("text method on images", ["--methods", "ngram"], "unknown image method(s) ngram"),
    ("missing target", [], "does not exist"),
])
def test_bad_input_is_one_line_exit_2(capsys, tmp_path, images, texts, unreadable_source, case, extra, message):
    src, tgt = images
    if case == "text target":
        tgt = texts[1]
    elif case == "empty source":
        src = unreadable_source
    elif case == "missing target":
        tgt = tmp_path / "no_such_folder"
    out = tmp_path / "out"
    code, _, err = run(capsys, "contamination", "--source", str(src), "--target", str(tgt), "--out", str(out),
                       "--calibrate", "0", *extra)
    assert code == 2
    _one_error_line(err, message)
    assert not (out / "summary.json").exists() and not (out / "matches.csv").exists()


def test_check_contamination_refuses_mismatched_modalities(tmp_path, images, texts):
    with pytest.raises(ConfigError, match="the source holds image and the target text"):
        check_contamination(read_split(images[0], "train"), read_split(texts[1], "test"), CheckOptions(),
                            tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("opts, message", [
    (CheckOptions(methods=["exact"], thresholds={"aligned": 0.5}), "--threshold applies to image methods"),
    (CheckOptions(ngram=0), "--ngram must be in 1..50"),
    (CheckOptions(ngram_threshold=1.5), "--ngram-threshold must be in 0..1"),
    (CheckOptions(methods=["phash"]), "unknown text method(s) phash"),
])
def test_text_options_are_checked(opts, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        opts.check("text")
