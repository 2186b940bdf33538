"""transferlab export --quantize int8 on a text run: ONNX Runtime's dynamic quantisation of the tiny BERT's LoRA run
(merged) gives a smaller file that runs with any batch and sequence length, its accuracy drop is in export.json and
in the printed report, and a bound below the measured drop fails with exit 2 and writes nothing."""
from __future__ import annotations

import json

import numpy as np
import pytest

from tests.conftest import error_line, run_cli
from transferlab.onnx_predictor import OnnxPredictor

SENTENCES = ["a gripping , funny and moving film .", "dull .",
             "the best thing about it is the ending , which comes early and leaves you wanting less ."]


@pytest.fixture(scope="module")
def text_run(tiny_runs, tiny_bert_dir, small_text_data):
    return tiny_runs(str(tiny_bert_dir), "lora", data=small_text_data, epochs=1)


def test_text_int8_is_smaller_runs_dynamic_shapes_and_reports_its_drop(text_run, tmp_path, capsys):
    out = tmp_path / "out"
    code, printed, err = run_cli(["export", "--run", str(text_run), "--format", "onnx", "--quantize", "int8",
                                  "--max-drop", "1", "--out", str(out)], capsys)
    assert code == 0, err
    report = json.loads((out / "export.json").read_text())
    assert json.loads(printed.split("\nexported to")[0]) == report  # the printed summary is export.json
    int8 = report["int8"]
    assert "dynamic" in int8["quantization"] and int8["calibration_images"] is None
    assert report["accuracy"]["onnx_int8"] == int8["accuracy"]
    assert int8["accuracy_drop"] == pytest.approx(report["accuracy"]["pytorch"] - int8["accuracy"])
    assert int8["max_drop"] == 1 and int8["accuracy_drop"] <= 1
    assert 0 <= int8["predictions_changed"] <= report["verified_on"]["examples"]
    sizes = {name: (out / name).stat().st_size for name in ("model.onnx", "model.int8.onnx")}
    assert sizes["model.int8.onnx"] < sizes["model.onnx"]
    assert report["files"]["model.int8.onnx"] == sizes["model.int8.onnx"]

    # ONNX Runtime runs the int8 graph at batch sizes and sequence lengths other than the traced ones
    fp32, q8 = OnnxPredictor(out / "model.onnx"), OnnxPredictor(out / "model.int8.onnx")
    for value in q8.session.get_inputs():
        assert all(isinstance(d, str) for d in value.shape[:2]), value.shape  # symbolic batch and sequence axes
    lengths = set()
    for items in (SENTENCES[:1], SENTENCES[1:2], SENTENCES):
        feeds = q8.encode(items)
        lengths.add(feeds["input_ids"].shape[1])
        got, want = q8.run(feeds), fp32.run(feeds)
        assert got.shape == want.shape == (len(items), 2) and np.isfinite(got).all()
        assert np.abs(got - want).max() < 1.0  # int8 weights: close to fp32, not equal
    assert len(lengths) == 3

    # predict --model reads the int8 file with the preprocessing beside it
    code, rows, err = run_cli(["predict", "--model", str(out / "model.int8.onnx"), *SENTENCES], capsys)
    assert code == 0, err
    assert len(rows.strip().splitlines()) == 1 + len(SENTENCES)


def test_text_int8_below_its_drop_fails_and_writes_nothing(text_run, tmp_path, capsys):
    first = tmp_path / "first"
    code, _, err = run_cli(["export", "--run", str(text_run), "--format", "onnx", "--quantize", "int8",
                            "--max-drop", "1", "--out", str(first)], capsys)
    assert code == 0, err
    drop = json.loads((first / "export.json").read_text())["int8"]["accuracy_drop"]
    # the same run quantises to the same file: a bound just below the measured drop must refuse it
    out = tmp_path / "new" / "strict"  # a parent the export makes is removed again too
    code, _, err = run_cli(["export", "--run", str(text_run), "--format", "onnx", "--quantize", "int8",
                            "--max-drop", repr(drop - 0.005), "--out", str(out)], capsys)
    assert code == 2 and "accuracy points" in error_line(err) and "nothing was written" in error_line(err)
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["first"]  # no temporary folder, no parent left
