"""Accuracy on clean and dirty examples (`contamination/subsets.py`), `evaluate --contamination` and the comparison
report's Contamination section, checked against numbers worked out by hand from one forward pass per example."""
from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import TINY_IMAGE_MODEL, error_line, run_cli
from transferlab.cli import main
from transferlab.contamination.subsets import (
    Contamination,
    contamination_section,
    read_contamination,
    split_accuracy,
)
from transferlab.errors import ConfigError
from transferlab.outputs import CONTAMINATION_FORMAT as FORMAT

CLASSES = ("0", "1", "2")
BAD = "test/1/0_bad.jpg"  # a truncated JPEG: passes the load-time check, fails to decode


# ---- helpers -----------------------------------------------------------------------------------------------
def cli(capsys, *argv) -> tuple[int, str, str]:
    return run_cli([str(a) for a in argv], capsys)




def write_contamination(folder: Path, rows: list[tuple], *, modality="image", data="DATA", split="test",
                        file=None, header="target_id,source_id,score,method,dirty", summary=None) -> Path:
    """DIR/matches.csv from (target_id, dirty) or full 5-field rows, and DIR/summary.json."""
    folder.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    buf.write(header + "\n")
    for row in rows:
        writer.writerow(row if len(row) == 5 else (row[0], "src/0.png", "0.9", "phash", row[1]))
    (folder / "matches.csv").write_text(buf.getvalue(), encoding="utf-8")
    target = {"data": data, "split": split, "n": 0, "skipped": 0}
    if file is not None:
        target["file"] = file
    if Path(data).is_dir():  # what `contamination` records of the split it checked, so evaluate can match it
        from transferlab.contamination.fingerprint import folder_fingerprint, text_fingerprint

        target["fingerprint"] = (text_fingerprint(Path(data) / file) if modality == "text"
                                 else folder_fingerprint(Path(data), Path(data) / split))
    if summary is None:
        summary = {"format": FORMAT, "modality": modality, "source": {"data": "SRC"}, "target": target,
                   "n_target": 0, "n_dirty": 0, "dirty_fraction": 0.0, "methods": {}}
    (folder / "summary.json").write_text(json.dumps(summary) if isinstance(summary, dict) else summary)
    return folder


def expected(truth: dict[str, bool], dirty: set[str], clean: set[str]) -> dict:
    """all / clean / dirty worked out by hand: n, accuracy = correct / n, se = sqrt(p (1 - p) / n)."""
    def part(ids):
        outcomes = [truth[i] for i in ids if i in truth]
        n = len(outcomes)
        p = sum(outcomes) / n if n else None
        return {"n": n, "accuracy": p, "se": None if n == 0 else math.sqrt(p * (1 - p) / n)}

    covered = dirty | clean
    return {"all": part(truth), "clean": part(clean - dirty), "dirty": part(dirty),
            "uncovered": sum(1 for i in truth if i not in covered)}


def assert_parts(got: dict, want: dict) -> None:
    assert got["uncovered"] == want["uncovered"]
    for name in ("all", "clean", "dirty"):
        assert got[name]["n"] == want[name]["n"], name
        for key in ("accuracy", "se"):
            if want[name][key] is None:
                assert got[name][key] is None, (name, key)
            else:
                assert got[name][key] == pytest.approx(want[name][key], abs=1e-12), (name, key)


def one_by_one(run_dir, split="test") -> dict[str, bool]:
    """{id: correct} for every readable example of a run's split, one example per forward pass (ids by hand)."""
    import torch

    from transferlab.runs import load_run

    config, data, model, _ = load_run(run_dir)
    dataset = getattr(data, split)
    truth = {}
    with torch.no_grad():
        for i in range(len(dataset)):
            item = dataset[i]
            if item is None:
                continue
            logits = model(data.collate([item]))
            if data.kind == "image":
                example_id = Path(dataset.paths[i]).relative_to(Path(config.data)).as_posix()
            else:
                example_id = dataset.ids[i]
            truth[example_id] = bool(int(logits.argmax(1)) == item[1])
    return truth


# ---- data and runs -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def image_data(tmp_path_factory) -> Path:
    """Digit scans as PNG class folders: train 20, val 4, test 4 per class (digits 0-2), plus one bad test file."""
    from sklearn.datasets import load_digits

    root = tmp_path_factory.mktemp("digit_images") / "data"
    raw = load_digits()
    counts = {"train": 20, "val": 4, "test": 4}
    for c in CLASSES:
        rows = [i for i, t in enumerate(raw.target) if str(t) == c]
        start = 0
        for split, n in counts.items():
            folder = root / split / c
            folder.mkdir(parents=True)
            for k, i in enumerate(rows[start:start + n]):
                pixels = (raw.images[i] * 255 / 16).astype(np.uint8)  # (8, 8)
                Image.fromarray(pixels).resize((16, 16)).save(folder / f"{k}.png")
            start += n
    jpeg = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(jpeg, "JPEG")
    (root / BAD).write_bytes(jpeg.getvalue()[: len(jpeg.getvalue()) // 2])
    return root


def finetune_args(model, data, out, *extra) -> list:
    return ["finetune", "--model", model, "--data", data, "--epochs", "1", "--eval-batch-size", "5", "--device",
            "cpu", "--out", out, *extra]


@pytest.fixture(scope="module")
def image_run(tmp_path_factory, image_data) -> Path:
    out = tmp_path_factory.mktemp("image_run") / "run"
    code = main([str(a) for a in finetune_args(TINY_IMAGE_MODEL, image_data, out, "--strategy", "full",
                                               "--image-size", "32", "--lr", "0.01")])
    assert code == 0
    return out


@pytest.fixture(scope="module")
def image_truth(image_run) -> dict[str, bool]:
    truth = one_by_one(image_run)
    assert len(truth) == 12 and BAD not in truth
    return truth


def _image_sets(truth):
    """Hand-made dirty and clean ids over the 12 readable test images (and the unreadable one)."""
    ids = sorted(truth)
    dirty = {ids[0], ids[5], ids[9], BAD}
    clean = {ids[1], ids[2], ids[3], ids[6], ids[7]}
    return dirty, clean  # ids[4], ids[8], ids[10], ids[11]: no row (uncovered)


def _image_rows(dirty, clean):
    rows = []
    for i in sorted(dirty | clean):  # two methods per example; a dirty example is dirty by one of them
        rows.append((i, "", "", "exact", "0"))
        rows.append((i, "train/x.png", "0.97", "phash", "1" if i in dirty else "0"))
    # rows naming no example of the split: ids are strings to compare, never paths to open
    rows += [("val/0/0.png", "s", "1", "exact", "1"), ("../../etc/passwd", "s", "1", "exact", "1")]
    return rows


# ---- reading the folder, and the parts by hand -------------------------------------------------------------
def test_split_accuracy_by_hand(tmp_path):
    folder = write_contamination(tmp_path / "c", [("a", "1"), ("a", "0"), ("b", "0"), ("c", "1"), ("d", "0"),
                                                  ("e", "0"), ("f", "0"), ("/etc/passwd", "1")])
    c = read_contamination(folder)
    assert c.dirty == {"a", "c", "/etc/passwd"} and c.covered == {"a", "b", "c", "d", "e", "f", "/etc/passwd"}
    ids = ["a", "b", "c", "d", "e", "f", "g", "h", "i"]
    correct = [True, True, False, True, False, None, True, False, True]  # f: not evaluated (unreadable)
    split = split_accuracy(c, ids, correct).to_dict()
    # all: 8 evaluated, 5 correct; dirty a, c: 1 of 2; clean b, d, e: 2 of 3; g, h, i uncovered
    assert split["all"] == {"n": 8, "accuracy": 5 / 8, "se": math.sqrt(5 / 8 * 3 / 8 / 8)}
    assert split["dirty"] == {"n": 2, "accuracy": 0.5, "se": math.sqrt(0.25 / 2)}
    assert split["clean"] == {"n": 3, "accuracy": 2 / 3, "se": math.sqrt(2 / 9 / 3)}
    assert split["uncovered"] == 3
    only_clean = split_accuracy(c, ["b", "d"], [True, True]).to_dict()
    assert only_clean["dirty"] == {"n": 0, "accuracy": None, "se": None}
    assert only_clean["clean"] == {"n": 2, "accuracy": 1.0, "se": 0.0}


def test_covering_none_is_refused_naming_what_was_computed(tmp_path):
    c = read_contamination(write_contamination(tmp_path / "c", [("x", "1")], data="/some/data", split="val"))
    with pytest.raises(ConfigError, match=r"covers none of the 2 examples evaluated \(mine\).*'/some/data'.*'val'"):
        split_accuracy(c, ["a", "b"], [True, False], evaluated="mine")


# ---- evaluate --contamination ------------------------------------------------------------------------------
def test_evaluate_with_contamination_matches_the_hand_computation(capsys, tmp_path, image_data, image_run,
                                                                  image_truth):
    dirty, clean = _image_sets(image_truth)
    folder = write_contamination(tmp_path / "c", _image_rows(dirty, clean), data=str(image_data))
    code, out, err = cli(capsys, "evaluate", "--run", image_run, "--split", "test", "--contamination", folder)
    assert code == 0, err
    result = json.loads(out)
    want = expected(image_truth, dirty, clean)
    assert want["dirty"]["n"] == 3 and want["clean"]["n"] == 5 and want["uncovered"] == 4
    assert result["contamination"]["folder"] == str(folder)
    assert_parts(result["contamination"], want)

    # everything else is what evaluate prints without --contamination
    code, plain, _ = cli(capsys, "evaluate", "--run", image_run, "--split", "test")
    assert code == 0
    plain = json.loads(plain)
    assert {k: v for k, v in result.items() if k != "contamination"} == plain
    assert plain["n"] == 12 and plain["accuracy"] == pytest.approx(sum(image_truth.values()) / 12)


def test_contamination_of_another_split_is_refused(capsys, tmp_path, image_data, image_run):
    folder = write_contamination(tmp_path / "c", [("val/0/0.png", "1"), ("val/1/0.png", "0")],
                                 data=str(image_data), split="val")
    code, _, err = cli(capsys, "evaluate", "--run", image_run, "--split", "test", "--contamination", folder)
    line = error_line(err)
    # refused before any forward pass: 13 examples, the unreadable one included
    assert code == 2 and f"covers none of the 13 examples of data {image_data}, split test;" in line
    assert f"computed for data '{image_data}', split 'val'" in line


def test_contamination_of_text_is_refused_for_images(capsys, tmp_path, image_run):
    folder = write_contamination(tmp_path / "c", [("0", "1")], modality="text", file="test.tsv")
    code, _, err = cli(capsys, "evaluate", "--run", image_run, "--split", "test", "--contamination", folder)
    assert code == 2 and "contamination of text data" in error_line(err)


GOOD_ROW = "test/0/0.png,train/x.png,0.9,phash,1\n"
HEADER = "target_id,source_id,score,method,dirty\n"


@pytest.mark.parametrize("matches, summary, message", [
    ("target_id,source_id,score,method\ntest/0/0.png,a,1,phash\n", None, "no column dirty"),
    ("source_id,score,method,dirty\na,1,phash,1\n", None, "no column target_id"),
    (HEADER + "test/0/0.png,a,1,phash,yes\n", None, "matches.csv:2: dirty is 'yes'; expected 0 or 1"),
    (HEADER + GOOD_ROW + "test/0/1.png,a,1,phash\n", None, "matches.csv:3: expected 5 fields, found 4"),
    (HEADER + ",a,1,phash,1\n", None, "matches.csv:2: empty target_id"),
    (HEADER + "test/0/0.png,a,high,phash,1\n", None, "score is 'high'"),
    (HEADER + "test/0/0.png,a,1,,1\n", None, "empty method"),
    (HEADER + "test/0/0.png," + "a" * 200_000 + ",1,phash,1\n", None, "matches.csv:2: cannot parse the file"),
    (b"target_id,source_id,score,method,dirty\n\xff\xfe,a,1,phash,1\n", None, "not UTF-8"),
    ("", None, "matches.csv: empty"),
    (HEADER + "test/0/0.png,a,1,phash,1,extra\n", None, "expected 5 fields, found 6"),
    ("target_id,target_id,source_id,score,method,dirty\n", None, "appears more than once"),
    (None, None, "matches.csv: missing"),
    (HEADER + GOOD_ROW, "{not json", "summary.json: not valid JSON"),
    (HEADER + GOOD_ROW, "[1, 2]", "not a transferlab contamination summary"),
    (HEADER + GOOD_ROW, {"format": "other-2", "modality": "image"}, "format 'other-2'"),
    (HEADER + GOOD_ROW, {"format": FORMAT, "modality": "audio", "target": {}}, "modality 'audio'"),
    (HEADER + GOOD_ROW, {"format": FORMAT, "modality": "image"}, "no \"target\" object"),
    (HEADER + GOOD_ROW, {"format": FORMAT, "modality": "image", "target": {"data": "d"}}, "target.split is None"),
    (HEADER + GOOD_ROW, {"format": FORMAT, "modality": "text", "target": {"data": "d", "split": "test"}},
     "target.file is None"),
    (HEADER + GOOD_ROW, "missing", "summary.json: missing"),
])
def test_malformed_folders_are_one_line_exit_2(capsys, tmp_path, image_run, matches, summary, message):
    folder = write_contamination(tmp_path / "c", [], summary=summary if summary not in (None, "missing") else None)
    if matches is None:
        (folder / "matches.csv").unlink()
    else:
        (folder / "matches.csv").write_bytes(matches if isinstance(matches, bytes) else matches.encode())
    if summary == "missing":
        (folder / "summary.json").unlink()
    code, out, err = cli(capsys, "evaluate", "--run", image_run, "--split", "test", "--contamination", folder)
    assert code == 2 and out == ""
    assert message in error_line(err)


def test_a_missing_folder_is_one_line_exit_2(capsys, tmp_path, image_run):
    code, _, err = cli(capsys, "evaluate", "--run", image_run, "--contamination", tmp_path / "nope")
    assert code == 2 and "no such folder" in error_line(err)


# ---- text ----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def text_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("text_data")
    good = ["a good film", "great acting", "lovely story", "a fine cast", "warm and funny", "truly moving"]
    bad = ["a dull film", "poor acting", "boring story", "a weak cast", "cold and flat", "truly tedious"]

    def rows(n, offset):
        return "".join(f"{good[(i + offset) % 6]} {i}\t1\n{bad[(i + offset) % 6]} {i}\t0\n" for i in range(n))

    (root / "train.tsv").write_text("sentence\tlabel\n" + rows(12, 0))
    (root / "dev.tsv").write_text("sentence\tlabel\n" + rows(3, 1))
    # row 2 has no label: skipped, but counted in the row ids
    (root / "test.tsv").write_text("sentence\tlabel\n" + rows(1, 2) + "no label\t\n" + rows(3, 3))
    return root


@pytest.fixture(scope="module")
def text_run(tmp_path_factory, tiny_bert_dir, text_data) -> Path:
    out = tmp_path_factory.mktemp("text_run") / "run"
    assert main([str(a) for a in finetune_args(tiny_bert_dir, text_data, out, "--strategy", "full",
                                               "--max-length", "16")]) == 0
    return out


def test_text_contamination_by_row_id(capsys, tmp_path, text_data, text_run):
    truth = one_by_one(text_run)
    assert sorted(truth, key=int) == ["0", "1", "3", "4", "5", "6", "7", "8"]  # row 2 was skipped
    dirty, clean = {"0", "4", "2"}, {"1", "3", "5", "6"}
    folder = write_contamination(tmp_path / "c", [(i, "1" if i in dirty else "0") for i in sorted(dirty | clean)],
                                 modality="text", data=str(text_data), file="test.tsv")
    code, out, err = cli(capsys, "evaluate", "--run", text_run, "--split", "test", "--contamination", folder)
    assert code == 0, err
    assert_parts(json.loads(out)["contamination"], expected(truth, dirty, clean))


def test_text_contamination_of_another_file_is_refused(capsys, tmp_path, text_data, text_run):
    folder = write_contamination(tmp_path / "c", [("0", "1"), ("1", "0")], modality="text", data=str(text_data),
                                 file="dev.tsv")
    code, _, err = cli(capsys, "evaluate", "--run", text_run, "--split", "test", "--contamination", folder)
    line = error_line(err)
    assert code == 2 and "file 'dev.tsv'" in line and "read from test.tsv" in line
    # the val split is dev.tsv: the same folder applies there
    code, out, err = cli(capsys, "evaluate", "--run", text_run, "--split", "val", "--contamination", folder)
    assert code == 0, err
    assert json.loads(out)["contamination"]["dirty"]["n"] == 1


# ---- the comparison report ---------------------------------------------------------------------------------
def compare_args(data, out, *extra) -> list:
    return ["compare", "--model", TINY_IMAGE_MODEL, "--data", data, "--strategies", "full", "--seeds", "2",
            "--no-scratch", "--epochs", "1", "--image-size", "32", "--lr", "0.01", "--eval-batch-size", "5",
            "--device", "cpu", "--out", out, *extra]


def test_report_section_on_a_tiny_grid(capsys, tmp_path, image_data):
    out = tmp_path / "grid"
    dirty_ids = {"test/0/1.png", "test/1/2.png", "test/2/0.png", "test/2/3.png"}
    all_ids = {f"test/{c}/{k}.png" for c in CLASSES for k in range(4)}
    clean_ids = all_ids - dirty_ids - {"test/0/0.png"}  # test/0/0.png: no row
    rows = [(i, "1" if i in dirty_ids else "0") for i in sorted(dirty_ids | clean_ids)]
    folder = write_contamination(tmp_path / "c", rows, data=str(image_data))
    code, _, err = cli(capsys, *compare_args(image_data, out, "--contamination", folder))
    assert code == 0, err
    results = json.loads((out / "results.json").read_text())
    section = results["sections"]["contamination"]
    runs = [r for r in results["runs"] if r["status"] == "finished"]
    assert len(runs) == 2 and section["notes"] == []
    per_run = [expected(one_by_one(r["run_dir"]), dirty_ids, clean_ids) for r in runs]
    entry = section["strategies"]["full"]
    assert entry["seeds"] == [r["seed"] for r in runs] and entry["uncovered"] == 1
    for got, want in zip(entry["per_seed"], per_run):
        assert_parts(got, want)
    for part in ("all", "clean", "dirty"):
        accs = [w[part]["accuracy"] for w in per_run]
        assert entry[part]["mean"] == pytest.approx(sum(accs) / 2, abs=1e-12)
        assert entry[part]["std"] == pytest.approx(abs(accs[0] - accs[1]) / math.sqrt(2), abs=1e-12)
        assert entry[part]["n"] == {"all": 12, "clean": 7, "dirty": 4}[part]
    report = (out / "report.md").read_text()
    assert "## Contamination" in report
    section_lines = report.split("## Contamination", 1)[1].split("\n## ", 1)[0].splitlines()
    row = next(line for line in section_lines if line.startswith("| full | 2 |"))
    assert "(n=12)" in row and "(n=7)" in row and "(n=4)" in row and "| 1 |" in row
    # dirty minus clean over the two seeds, under the project's rule (unpaired: disjoint example sets)
    test = entry["dirty_minus_clean"]
    from transferlab import stats

    want = stats.unpaired_accuracies([w["dirty"]["accuracy"] for w in per_run], 4,
                                     [w["clean"]["accuracy"] for w in per_run], 7)
    assert test["estimate"] == pytest.approx(want.estimate) and test["method"] == want.method
    assert row.endswith(f"| {test['band']} {test['verdict']} |")
    assert "id='contamination'" in (out / "report.html").read_text()

    # --report-only takes the option too; without it the section is left out
    assert cli(capsys, "compare", "--out", out, "--report-only")[0] == 0
    assert "contamination" not in json.loads((out / "results.json").read_text())["sections"]
    everything = write_contamination(tmp_path / "all_dirty", [(i, "1") for i in sorted(all_ids)], data=str(image_data))
    assert cli(capsys, "compare", "--out", out, "--report-only", "--contamination", everything)[0] == 0
    entry = json.loads((out / "results.json").read_text())["sections"]["contamination"]["strategies"]["full"]
    assert entry["clean"] == {"mean": None, "std": None, "n": 0} and entry["dirty"]["n"] == 12


def test_compare_checks_the_folder_before_any_run(capsys, tmp_path, image_data):
    folder = write_contamination(tmp_path / "c", [], header="target_id,method,dirty")
    code, _, err = cli(capsys, *compare_args(image_data, tmp_path / "grid", "--contamination", folder))
    assert code == 2 and "no column source_id, score" in error_line(err)
    assert not (tmp_path / "grid" / "runs").exists()


def test_section_without_a_test_split_says_so(tmp_path):
    from transferlab.compare.report import ReportContext
    from transferlab.compare.results import GridResults, RunRecord

    folder = write_contamination(tmp_path / "c", [("test/0/0.png", "1")], data="elsewhere")
    run = RunRecord("full", 0, str(tmp_path / "never_read"), "finished", val={"accuracy": 0.5, "loss": 1.0, "n": 4},
                    test=None)
    results = GridResults(str(tmp_path), TINY_IMAGE_MODEL, "digits:0-2", "val_accuracy", ["full"], [run], {}, {})
    section = contamination_section(ReportContext(results, tmp_path, contamination=str(folder)))
    assert section.title == "Contamination" and "digits:0-2 has no test split" in section.blocks[0].text
    assert contamination_section(ReportContext(results, tmp_path)) is None


def test_contamination_record_describes_its_target():
    c = Contamination("DIR", "text", {"data": "d", "split": "test", "file": "test.tsv"}, frozenset(), frozenset())
    assert c.describe() == "data 'd', split 'test', file 'test.tsv'"
