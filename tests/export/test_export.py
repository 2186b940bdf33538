"""transferlab export: every model kind and every strategy kind exports and verifies (ONNX fp32), TorchScript and
safetensors verify, int8 reports its drop, a consumer without torch reproduces the validation accuracy, predict
--model agrees with predict --run, and bad requests write nothing."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, TINY_IMAGE_MODEL, error_line, run_cli

FAST_STRATEGIES = ("full", "lora", "bitfit", "adapter", "peft:ia3")


def _export(run, out, capsys, *extra):
    code, text, err = run_cli(["export", "--run", str(run), "--out", str(out), *extra], capsys)
    assert code == 0, err
    report = json.loads((out / "export.json").read_text())
    assert report["max_abs_logit_diff"] <= report["tolerance"]["max_abs_logit_diff"]
    assert report["predictions_changed"] == 0
    assert json.loads((out / "classes.json").read_text()) and (out / "preprocess.json").is_file()
    assert not [p for p in out.parent.iterdir() if p.name.endswith(".export-tmp")]
    return report


@pytest.mark.parametrize("strategy", FAST_STRATEGIES)
def test_image_strategies_export_to_onnx(strategy, tiny_runs, tmp_path, capsys):
    report = _export(tiny_runs(TINY_IMAGE_MODEL, strategy), tmp_path / "out", capsys, "--format", "onnx")
    assert report["accuracy"]["onnx"] == report["accuracy"]["pytorch"]
    assert report["exporter"] in ("dynamo", "torchscript")
    if strategy in ("lora", "bitfit", "peft:ia3"):
        assert report["merged"] and not report["in_graph"]
    if strategy == "adapter":
        assert report["in_graph"] and not report["merged"]


def test_resnet10_cifar_exports_to_onnx(tiny_runs, tmp_path, capsys):
    _export(tiny_runs("resnet10_cifar", "full", epochs=1), tmp_path / "out", capsys, "--format", "onnx")


def test_text_run_exports_with_dynamic_sequence(tiny_runs, tiny_bert_dir, small_text_data, tmp_path, capsys):
    out = tmp_path / "out"
    report = _export(tiny_runs(str(tiny_bert_dir), "lora", data=small_text_data, epochs=1), out, capsys,
                     "--format", "onnx")
    pre = json.loads((out / "preprocess.json").read_text())
    assert pre["modality"] == "text" and pre["max_length"] == 32 and (out / "tokenizer.json").is_file()
    assert report["merged"] == ["lora"]


@pytest.mark.slow
@pytest.mark.parametrize("strategy", FAST_STRATEGIES)
@pytest.mark.parametrize("kind", ["resnet10_cifar", "bert"])
def test_every_kind_and_strategy_exports(kind, strategy, tiny_runs, tiny_bert_dir, small_text_data, tmp_path,
                                         capsys):
    if kind == "bert":
        run = tiny_runs(str(tiny_bert_dir), strategy, data=small_text_data, epochs=1)
    else:
        run = tiny_runs(kind, strategy, epochs=1)
    _export(run, tmp_path / "out", capsys, "--format", "onnx")


@pytest.mark.parametrize("fmt", ["torchscript", "safetensors"])
def test_other_formats_verify(fmt, tiny_runs, tmp_path, capsys):
    for strategy in ("lora", "adapter"):
        report = _export(tiny_runs(TINY_IMAGE_MODEL, strategy), tmp_path / strategy, capsys, "--format", fmt)
        assert report["accuracy"][fmt] == report["accuracy"]["pytorch"]


def test_int8_static_reports_its_drop(tiny_runs, tmp_path, capsys):
    out = tmp_path / "out"
    report = _export(tiny_runs(TINY_IMAGE_MODEL, "full"), out, capsys, "--format", "onnx", "--quantize", "int8",
                     "--max-drop", "1")
    int8 = report["int8"]
    assert "static" in int8["quantization"] and int8["calibration_images"] > 0
    assert int8["accuracy_drop"] == pytest.approx(report["accuracy"]["pytorch"] - int8["accuracy"])
    assert (out / "model.int8.onnx").stat().st_size < (out / "model.onnx").stat().st_size


def test_int8_beyond_max_drop_fails_and_leaves_nothing(tiny_runs, tmp_path, capsys):
    out = tmp_path / "out"
    code, _, err = run_cli(["export", "--run", str(tiny_runs(TINY_IMAGE_MODEL, "full")), "--format", "onnx",
                            "--quantize", "int8", "--max-drop", "-1", "--out", str(out)], capsys)
    assert code == 2 and "accuracy points" in error_line(err)
    assert not out.exists() and not list(tmp_path.iterdir())


GUARD = """
import runpy, sys
class Refuse:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('torch', 'transferlab'):
            raise ImportError('the consumer imported ' + name)
sys.meta_path.insert(0, Refuse())
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name='__main__')
assert not [m for m in sys.modules if m.split('.')[0] in ('torch', 'transferlab')]
"""


def test_consumer_without_torch_reproduces_validation_accuracy(tiny_runs, digit_folder, tmp_path, capsys):
    out = tmp_path / "out"
    report = _export(tiny_runs(TINY_IMAGE_MODEL, "lora"), out, capsys, "--format", "onnx")
    result = subprocess.run([sys.executable, "-c", GUARD, str(ROOT / "benchmarks" / "onnx_consumer.py"),
                             str(out / "model.onnx"), str(digit_folder / "val")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    scored = json.loads(result.stdout.strip().splitlines()[-1])
    assert scored["examples"] == report["verified_on"]["examples"]
    assert scored["accuracy"] == pytest.approx(report["accuracy"]["pytorch"])


def test_predict_model_matches_predict_run(tiny_runs, digit_folder, tmp_path, capsys):
    run = tiny_runs(TINY_IMAGE_MODEL, "lora")
    _export(run, tmp_path / "out", capsys, "--format", "onnx")
    images = sorted(str(p) for p in (digit_folder / "val").rglob("*.png"))[:8]
    code_run, by_run, _ = run_cli(["predict", "--run", str(run), *images], capsys)
    code_model, by_model, _ = run_cli(["predict", "--model", str(tmp_path / "out" / "model.onnx"), *images], capsys)
    assert code_run == code_model == 0
    rows = [[line.split("\t") for line in text.splitlines()] for text in (by_run, by_model)]
    assert [r[0] for r in rows[0]] == [r[0] for r in rows[1]] and [r[2] for r in rows[0]] == [r[2] for r in rows[1]]
    for a, b in zip(rows[0][1:], rows[1][1:]):
        assert float(a[1]) == pytest.approx(float(b[1]), abs=2e-4)


def test_bad_requests_are_one_line_and_write_nothing(tiny_runs, tmp_path, capsys):
    run = tiny_runs(TINY_IMAGE_MODEL, "full")
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / "config.json").write_text((run / "config.json").read_text())
    cases = [(["--run", str(unfinished), "--format", "onnx"], "not finished"),
             (["--run", str(run), "--format", "tflite"], "--format tflite"),
             (["--run", str(run), "--format", "onnx", "--opset", "99"], "--opset 99"),
             (["--run", str(run), "--format", "onnx", "--out", str(run / "export")], "--out")]
    for args, expected in cases:
        out = args[args.index("--out") + 1] if "--out" in args else str(tmp_path / "out")
        code, _, err = run_cli(["export", *args] + ([] if "--out" in args else ["--out", out]), capsys)
        assert code == 2 and expected in error_line(err), (args, err)
        assert not Path(out).exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["unfinished"]
    assert not (run / "export").exists()
