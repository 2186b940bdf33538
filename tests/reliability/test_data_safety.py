"""Data-side safety (issue 11): `data corrupt` on hostile folders and outputs, error messages that name the
option the user typed, and text files whose labels or field sizes would silently go wrong."""
from __future__ import annotations

import json
import logging
import os
import resource
import struct
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.reliability.conftest import error_line, run_cli
from transferlab.data import DataError, DataOptions, SkipLog, load_data, load_single_image
from transferlab.data._text_reader import read_text_file
from transferlab.models._config import PretrainedCfg

IMAGE_CFG = PretrainedCfg(name="test-cnn", modality="image")
TEXT_CFG = PretrainedCfg(name="test-text", modality="text", max_length=32)


def _png_chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)


def _png_bomb(width: int, height: int) -> bytes:
    """A valid-looking 8-bit greyscale PNG header claiming width x height pixels, in a few hundred bytes."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    rows = zlib.compress(b"\x00" * (width + 1) * 4, 9)  # the first 4 rows; the rest is "missing"
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", rows) + _png_chunk(b"IEND", b"")


def _images(folder: Path, n: int, seed: int = 0) -> list[Path]:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / f"{i:02d}.png"
        Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def _tree(root: Path) -> dict[str, bytes | None]:
    """Every path under root (folders as None, links by their target), to show that nothing was written."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        out[rel] = (b"->" + os.readlink(p).encode()) if p.is_symlink() else (None if p.is_dir() else p.read_bytes())
    return out


def _corrupt(capsys, data, out, *extra) -> tuple[int, str, str]:
    return run_cli(["data", "corrupt", "--data", str(data), "--kind", "blur", "--severity", "2", "--out", str(out),
                    *extra], capsys)


# ---- data corrupt: unreadable inputs ------------------------------------------------------------------------

def test_corrupt_skips_decompression_bombs_and_other_unreadable_images(tmp_path, capsys):
    data = tmp_path / "data"
    _images(data / "a", 10)
    _images(data / "b", 2, seed=1)
    bad = {
        "a/05_bomb.png": _png_bomb(30_000, 30_000),  # above PIL's own error limit: DecompressionBombError
        "a/06_bomb.png": _png_bomb(10_000, 10_000),  # 100 M pixels: PIL only warns; decoding takes ~1 GB
        "a/07_bomb.png": _png_bomb(7_000, 7_000),  # 49 M pixels: under PIL's limits, over ours
        "b/truncated.png": (data / "b" / "00.png").read_bytes()[:60],
        "b/notes.jpg": b"a text file someone renamed\n" * 5,
    }
    for rel, raw in bad.items():
        (data / rel).write_bytes(raw)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB
    code, out, err = _corrupt(capsys, data, tmp_path / "out")
    growth_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
    assert code == 0 and "Traceback" not in err, err
    result = json.loads(out)
    skipped = {item["path"]: item["reason"] for item in result["skipped"]}
    assert set(skipped) == set(bad), skipped
    assert all("decompression bomb" in skipped[f"a/0{i}_bomb.png"] for i in (5, 6, 7))
    # no unreadable file is copied: a bomb in the output would hit whoever reads it next
    written = {p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*") if p.is_file()}
    assert written == {f"a/{i:02d}.png" for i in range(10)} | {"b/00.png", "b/01.png"}
    assert result["images"] == 12
    assert growth_mb < 300, f"peak RSS grew by {growth_mb:.0f} MB: a bomb was decoded"


# ---- data corrupt: where it may write -----------------------------------------------------------------------

def _out_spellings(tmp_path: Path) -> dict[str, str]:
    data = tmp_path / "data"
    (tmp_path / "link_to_data").symlink_to(data, target_is_directory=True)
    (tmp_path / "a_file").write_text("keep me")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "mine.txt").write_text("keep me too")
    (tmp_path / "link_to_parent").symlink_to(tmp_path, target_is_directory=True)
    return {
        "data itself": str(data),
        "trailing slash": str(data) + "/",
        "dot slash": "./data",
        "dot dot": "data/a/..",
        "a symlink to data": str(tmp_path / "link_to_data"),
        "inside data": str(data / "noisy"),
        "inside data through a symlink": str(tmp_path / "link_to_data" / "noisy"),
        "the parent of data": str(tmp_path),
        "the parent through a symlink": str(tmp_path / "link_to_parent"),
        "the working directory": ".",
        "empty": "",
        "blank": "  ",
        "an existing file": str(tmp_path / "a_file"),
        "a non-empty folder": str(tmp_path / "full"),
    }


@pytest.mark.parametrize("case", ["data itself", "trailing slash", "dot slash", "dot dot", "a symlink to data",
                                  "inside data", "inside data through a symlink", "the parent of data",
                                  "the parent through a symlink", "the working directory", "empty", "blank",
                                  "an existing file", "a non-empty folder"])
def test_corrupt_refuses_an_out_that_overlaps_data_or_holds_files(case, tmp_path, capsys, monkeypatch):
    _images(tmp_path / "data" / "a", 3)
    out = _out_spellings(tmp_path)[case]
    monkeypatch.chdir(tmp_path)
    before = _tree(tmp_path)
    code, _, err = _corrupt(capsys, "data", out)
    assert code == 2, err
    assert "--out" in error_line(err)
    assert _tree(tmp_path) == before, "something was written"


def test_corrupt_refuses_an_empty_data(tmp_path, capsys, monkeypatch):
    _images(tmp_path / "a", 2)  # Path("") is the working directory: an unset variable must not mean "here"
    monkeypatch.chdir(tmp_path)
    before = _tree(tmp_path)
    code, _, err = _corrupt(capsys, "", tmp_path / "elsewhere" / "out")
    assert code == 2 and "--data is empty" in error_line(err)
    assert _tree(tmp_path) == before


def test_corrupt_writes_into_a_new_or_empty_folder(tmp_path, capsys):
    _images(tmp_path / "data" / "a", 2)
    (tmp_path / "empty").mkdir()
    for out in (tmp_path / "empty", tmp_path / "new" / "deeper"):
        code, stdout, err = _corrupt(capsys, tmp_path / "data", out)
        assert code == 0, err
        assert json.loads(stdout)["images"] == 2 and sorted(p.name for p in (out / "a").iterdir()) == ["00.png",
                                                                                                     "01.png"]


# ---- data corrupt: links ------------------------------------------------------------------------------------

def test_corrupt_does_not_follow_links_out_of_data(tmp_path, capsys):
    data, outside = tmp_path / "data", tmp_path / "outside"
    _images(data / "a", 2)
    _images(outside / "private", 2, seed=5)
    (outside / "notes.txt").write_text("private notes")
    (data / "a" / "stolen.png").symlink_to(outside / "private" / "00.png")
    (data / "a" / "notes.txt").symlink_to(outside / "notes.txt")
    (data / "b").symlink_to(outside / "private", target_is_directory=True)
    (data / "a" / "alias.png").symlink_to(data / "a" / "01.png")  # inside: followed, as the data loader does
    (data / "a" / "loop").symlink_to(data, target_is_directory=True)  # a cycle must end
    os.mkfifo(data / "a" / "pipe.png")  # reading a FIFO would block for ever
    code, stdout, err = _corrupt(capsys, data, tmp_path / "out")
    assert code == 0, err
    result = json.loads(stdout)
    skipped = {item["path"]: item["reason"] for item in result["skipped"]}
    assert set(skipped) == {"a/stolen.png", "a/notes.txt", "b", "a/loop", "a/pipe.png"}, skipped
    assert "outside --data" in skipped["a/stolen.png"] and "outside --data" in skipped["b"]
    written = {p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*")}
    assert written == {"a", "a/00.png", "a/01.png", "a/alias.png"}


# ---- messages name the option that was typed ----------------------------------------------------------------

@pytest.mark.parametrize("flags, wanted", [
    (["--max-val", "5"], "--max-val 5 is smaller than the number of classes (10)"),
    (["--max-train", "3"], "--max-train 3 is smaller than the number of classes (10)"),
    (["--val-fraction", "1.5"], "--val-fraction must be between 0 and 1"),
    (["--image-size", "4"], "--image-size must be at least 8"),
    (["--text-column", "x", "--label-column", "x"], "--text-column and --label-column are both 'x'"),
    (["--no-header", "--text-column", "sentence"], "with --no-header, --text-column must be a 0-based column index"),
])
def test_data_errors_name_the_cli_option(flags, wanted, tmp_path, capsys):
    code, _, err = run_cli(["finetune", "--model", "test_efficientnet", "--data", "digits", "--epochs", "1",
                            *flags, "--out", str(tmp_path / "run")], capsys)
    line = error_line(err)
    assert code == 2 and wanted in line, line
    assert not any(name in line for name in ("max_train", "max_val", "val_fraction", "image_size", "text_column",
                                             "label_column", "no_header")), line


# ---- text files ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from transferlab.models.hf_models import minilm_dir

    return AutoTokenizer.from_pretrained(str(minilm_dir()))


def _rows(n: int) -> list[str]:
    return [f"a {'good' if i % 2 else 'dull'} film, number {i}\t{i % 2}" for i in range(n)]


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def test_no_header_on_a_file_with_a_header_warns_about_that_row(tmp_path, caplog, tokenizer):
    path = tmp_path / "train.tsv"
    path.write_text("\n".join(["sentence\tlabel", *_rows(20)]) + "\n")
    with caplog.at_level(logging.WARNING, logger="transferlab"):
        bundle = load_data(str(path), TEXT_CFG, DataOptions(no_header=True), tokenizer=tokenizer)
    assert bundle.classes == ["0", "1", "label"]  # kept as written: dropping a row silently would be worse
    header = [m for m in _warnings(caplog) if "header" in m]
    assert len(header) == 1 and f"{path}:1:" in header[0] and "'label'" in header[0] and "--no-header" in header[0]


def test_a_class_with_a_single_example_is_warned_about(tmp_path, caplog, tokenizer):
    path = tmp_path / "train.tsv"
    path.write_text("\n".join(["sentence\tlabel", *_rows(10), "a film labelled by mistake\t2", *_rows(6)]) + "\n")
    with caplog.at_level(logging.WARNING, logger="transferlab"):
        bundle = load_data(str(path), TEXT_CFG, DataOptions(), tokenizer=tokenizer)
    assert bundle.classes == ["0", "1", "2"]
    single = [m for m in _warnings(caplog) if "single example" in m]
    assert len(single) == 1 and f"{path}:12:" in single[0] and "'2'" in single[0]
    assert not any("header" in m for m in _warnings(caplog))


def test_no_header_on_a_headerless_file_does_not_warn(tmp_path, caplog, tokenizer):
    path = tmp_path / "train.tsv"
    path.write_text("\n".join(_rows(20)) + "\n")
    with caplog.at_level(logging.WARNING, logger="transferlab"):
        load_data(str(path), TEXT_CFG, DataOptions(no_header=True), tokenizer=tokenizer)
    assert _warnings(caplog) == []


def test_numerically_equal_labels_are_kept_apart_and_warned_about(tmp_path, caplog, tokenizer):
    path = tmp_path / "train.csv"
    rows = [f"text number {i},{label}" for i, label in enumerate(["0", "1", "01", "1.0"] * 5)]
    path.write_text("\n".join(["text,label", *rows]) + "\n")
    with caplog.at_level(logging.WARNING, logger="transferlab"):
        bundle = load_data(str(path), TEXT_CFG, DataOptions(), tokenizer=tokenizer)
    assert sorted(bundle.classes) == ["0", "01", "1", "1.0"]
    twins = [m for m in _warnings(caplog) if "same number" in m]
    assert len(twins) == 1 and str(path) in twins[0] and all(f"'{n}'" in twins[0] for n in ("1", "01", "1.0"))
    assert "'0'" not in twins[0]


def test_a_validation_label_written_differently_says_so(tmp_path, tokenizer):
    (tmp_path / "train.tsv").write_text("\n".join(["sentence\tlabel", *_rows(10)]) + "\n")
    (tmp_path / "dev.tsv").write_text("sentence\tlabel\nfine\t1.0\ndull\t0\n")
    with pytest.raises(DataError, match=r"'1\.0' is training's '1' written differently"):
        load_data(str(tmp_path), TEXT_CFG, DataOptions(), tokenizer=tokenizer)


@pytest.mark.parametrize("suffix", [".tsv", ".csv"])
def test_a_field_over_csv_limit_skips_that_row_only(suffix, tmp_path, tokenizer):
    sep = "\t" if suffix == ".tsv" else ","
    long_text, quoted = "x" * 200_000, "y" * 150_000 + "\nit goes on" + sep + ' with a "" quote\nand ends'
    lines = ["text" + sep + "label", "good" + sep + "1", long_text + sep + "0", "fine" + sep + "0",
             f'"{quoted}"' + sep + "1", "nice" + sep + "1", "bad" + sep + "0"]
    path = tmp_path / f"train{suffix}"
    path.write_text("\n".join(lines) + "\n")
    bundle = load_data(str(path), TEXT_CFG, DataOptions(val_fraction=0.5), tokenizer=tokenizer)
    texts = sorted(bundle.train.texts + bundle.val.texts)
    assert texts == ["bad", "fine", "good", "nice"]  # the quoted row's later lines are not read as rows
    assert [item["path"] for item in bundle.skipped.to_list()] == [f"{path}:3", f"{path}:5"]
    assert "field larger than field limit" in bundle.skipped.to_list()[0]["reason"]


def test_a_field_of_some_megabytes_is_read_in_bounded_memory(tmp_path):
    path = tmp_path / "train.tsv"
    path.write_text("sentence\tlabel\nshort\t1\n" + "z" * 8_000_000 + "\t0\nalso short\t0\n")
    skipped = SkipLog()
    tracemalloc.start()
    try:
        rows = read_text_file(path, DataOptions(), skipped)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert rows.texts == ["short", "also short"] and rows.lines == [2, 4]
    assert f"{path}:3" in skipped
    assert peak < 4 * 8_000_000, f"peak {peak / 1e6:.0f} MB for an 8 MB line"  # the bytes, the text, one line


# ---- predict's image reader ---------------------------------------------------------------------------------

@pytest.mark.parametrize("side", [30_000, 10_000, 7_000])
def test_a_bomb_given_to_load_single_image_is_one_data_error(side, tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_bomb(side, side))
    with pytest.raises(DataError) as info:
        load_single_image(str(path), IMAGE_CFG)
    message = str(info.value)
    assert "decompression bomb" in message and "\n" not in message and str(path) in message
