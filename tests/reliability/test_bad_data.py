"""Bad data end to end through the CLI: a real image folder with a few per cent of broken files, and text
files with bad encodings, empty lines, quotes and tabs, missing labels, one class only."""
from __future__ import annotations

import io
import json
import resource
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import shared_data
from tests.reliability.conftest import error_line, run_cli

IMAGE_ARGS = ["--model", "test_efficientnet", "--image-size", "32", "--epochs", "1", "--batch-size", "16"]


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _png_bomb(side: int) -> bytes:
    """A valid-looking 8-bit greyscale PNG header claiming side x side pixels, in a few hundred bytes."""
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    rows = zlib.compress(b"\x00" * (side + 1) * 4, 9)  # the first 4 rows; the rest is "missing"
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", rows) + _png_chunk(b"IEND", b"")


def _jpeg(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def messy_images(tmp_path_factory) -> tuple[Path, set[str], set[str]]:
    """40 real photos per class (ants, bees) plus 8 odd files: (folder, names that must be skipped,
    names that are odd but readable and must be used)."""
    hymenoptera = shared_data("hymenoptera")
    root = tmp_path_factory.mktemp("messy") / "images"
    for cls in ("ants", "bees"):
        (root / cls).mkdir(parents=True)
        for src in sorted((hymenoptera / "train" / cls).glob("*.jpg"))[:40]:
            shutil.copy(src, root / cls / src.name)
    photo = sorted((hymenoptera / "train" / "ants").glob("*.jpg"))[0].read_bytes()
    ants, bees = root / "ants", root / "bees"
    bad = {
        ants / "corrupt.jpg": photo[:200] + bytes(range(256)) * 40,
        ants / "truncated.jpg": photo[: len(photo) // 2],
        bees / "empty.jpg": b"",
        bees / "notes.jpg": b"this is a text file that someone renamed\n" * 10,
        bees / "bomb.png": _png_bomb(30_000),  # 900 M pixels: ~0.9 GB if it were decoded
    }
    for path, data in bad.items():
        path.write_bytes(data)
    rgb = Image.open(io.BytesIO(photo)).convert("RGB")
    rgb.convert("L").save(ants / "grey.jpg")
    (bees / "cmyk.jpg").write_bytes(_jpeg(rgb.convert("CMYK")))
    sixteen = (np.asarray(rgb.convert("L"), dtype=np.uint16) * 257)
    Image.fromarray(sixteen.astype("<u2")).save(bees / "sixteen.png")  # mode I;16
    assert Image.open(bees / "sixteen.png").mode.startswith("I")
    odd_ok = {"grey.jpg", "cmyk.jpg", "sixteen.png"}
    return root, {p.name for p in bad}, odd_ok


def test_image_folder_with_broken_files_completes(messy_images, tmp_path, capsys):
    root, must_skip, odd_ok = messy_images
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB, the peak so far
    code, out, err = run_cli(["finetune", *IMAGE_ARGS, "--data", str(root), "--out", str(tmp_path / "run")],
                             capsys)
    assert code == 0, err
    growth_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    skipped = {Path(item["path"]).name: item["reason"] for item in metrics["skipped_files"]}
    assert set(skipped) == must_skip, skipped
    assert metrics["skipped_inputs"] == len(must_skip)
    assert "decompression bomb" in skipped["bomb.png"]
    assert not odd_ok & set(skipped), "greyscale, CMYK and 16-bit images are converted, not skipped"
    # the truncated and corrupt JPEGs pass the cheap header check at load time, are skipped when decoded, and are
    # not counted in the splits they were in (data_summary counts the examples used)
    assert metrics["data_summary"]["train"] + metrics["data_summary"]["val"] == 80 + len(odd_ok)
    # the bomb is refused from its header: decoding it would take ~900 MB
    assert growth_mb < 300, f"peak RSS grew by {growth_mb:.0f} MB"


def test_every_image_unreadable_in_a_class_is_one_line(tmp_path, capsys):
    for cls in ("a", "b"):
        (tmp_path / "data" / cls).mkdir(parents=True)
    Image.new("RGB", (16, 16), "red").save(tmp_path / "data" / "a" / "ok.png")
    (tmp_path / "data" / "b" / "x.jpg").write_bytes(b"")
    code, _, err = run_cli(["finetune", *IMAGE_ARGS, "--data", str(tmp_path / "data"), "--out",
                            str(tmp_path / "run")], capsys)
    assert code == 2 and "unreadable" in error_line(err)


# ---- text ---------------------------------------------------------------------------------------------------

def _text_run(tmp_path, capsys, tiny_bert_dir, files: dict[str, bytes]):
    data = tmp_path / "text"
    data.mkdir()
    for name, raw in files.items():
        (data / name).write_bytes(raw)
    out = tmp_path / "run"
    code, _, err = run_cli(["finetune", "--model", str(tiny_bert_dir), "--data", str(data), "--epochs", "1",
                            "--max-length", "16", "--out", str(out)], capsys)
    return code, err, out


def _rows(n: int) -> list[str]:
    return [f"a {'good' if i % 2 else 'bad'} film number {i}\t{i % 2}" for i in range(n)]


def test_messy_text_file_trains_and_names_the_skipped_rows(tmp_path, capsys, tiny_bert_dir):
    lines = ["sentence\tlabel", *_rows(40),
             "",                                      # empty line
             "caf\xe9 latin-1 bytes here\t1",          # not UTF-8 (encoded below as latin-1)
             '"a quoted\tfield with a tab"\t0',         # quotes and a tab inside a field
             "no label on this row\t",                 # missing label
             "only one field",                         # missing column
             "\t1"]                                    # empty text
    raw = "\n".join(lines[:42]).encode() + b"\n" + lines[43].encode("latin-1") + b"\n" + \
        "\n".join(lines[44:]).encode() + b"\n"
    code, err, out = _text_run(tmp_path, capsys, tiny_bert_dir,
                               {"train.tsv": raw, "dev.tsv": "\n".join(["sentence\tlabel", *_rows(10)]).encode()})
    assert code == 0, err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["skipped_inputs"] == len(metrics["skipped_files"]) >= 3
    assert all(":" in item["path"] and item["reason"] for item in metrics["skipped_files"])
    assert metrics["data_summary"]["train"] >= 40


@pytest.mark.parametrize("case", ["one class", "no usable rows", "binary garbage", "empty"])
def test_unusable_text_file_is_one_line(tmp_path, capsys, tiny_bert_dir, case):
    train = {
        "one class": "\n".join(["sentence\tlabel", *[f"row {i}\t1" for i in range(20)]]).encode(),
        "no usable rows": b"sentence\tlabel\n\t\n\t1\nx\t\n",
        "binary garbage": bytes(range(256)) * 20,
        "empty": b"",
    }[case]
    code, err, _ = _text_run(tmp_path, capsys, tiny_bert_dir, {"train.tsv": train})
    assert code == 2
    assert "train.tsv" in error_line(err)
