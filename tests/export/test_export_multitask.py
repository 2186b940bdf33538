"""transferlab export --run MERGED --task NAME|all: two LoRA task modules on one tiny base (digits 0-4 and 5-9)
merged by `modules merge`; each task exports as its own model (merged backbone + its head, its classes and
preprocessing), whose ONNX logits equal the PyTorch multi-task model's for that task; --task all writes one folder a
task; --data stands in for a task whose module recorded no data; bad requests are one line, exit 2, nothing written."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from tests.conftest import TINY_IMAGE_MODEL, error_line, run_cli
from tests.peft.conftest import save_tiny_base
from transferlab.onnx_predictor import OnnxPredictor

TASKS = {"low": "digits:0-4", "high": "digits:5-9"}
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def merged(tmp_path_factory):
    from transferlab.cli import main

    root = tmp_path_factory.mktemp("multitask_export")
    base = save_tiny_base(root / "base.safetensors", seed=0)
    runs = []
    for name, data in TASKS.items():
        out = root / name
        assert main(["finetune", "--model", TINY_IMAGE_MODEL, "--weights", str(base), "--data", data,
                     "--strategy", "lora", "--epochs", "1", "--max-train", "40", "--max-val", "30",
                     "--image-size", "16", "--lr", "0.01", "--out", str(out)]) == 0
        runs.append(str(out))
    module = root / "merged"
    assert main(["modules", "merge", *runs, "--names", ",".join(TASKS), "--out", str(module)]) == 0
    return {"module": module, "runs": runs}


def _torch_and_onnx(module, task, onnx_path):
    """(PyTorch logits of the multi-task model's task, ONNX logits) on that task's validation images."""
    import torch

    from transferlab.runs import load_run
    from transferlab.training.evaluate import ordered_loader

    _, data, model, _ = load_run(module, augment=False, task=task)
    pixels = torch.cat([b["pixel_values"] for b in ordered_loader(data.val, 16, data.collate)])
    with torch.no_grad():
        reference = model.eval()({"pixel_values": pixels}).numpy()
    got = OnnxPredictor(onnx_path).run({"pixel_values": pixels.numpy()})
    return reference, got


def test_one_task_exports_its_own_model(merged, tmp_path, capsys):
    module = merged["module"]
    exported = {}
    for name, data in TASKS.items():
        out = tmp_path / name
        code, _, err = run_cli(["export", "--run", str(module), "--task", name, "--format", "onnx",
                                "--out", str(out)], capsys)
        assert code == 0, err
        report = json.loads((out / "export.json").read_text())
        assert report["task"] == name and report["multitask"]["tasks"] == list(TASKS)
        assert report["merged"] == ["lora"] and report["multitask"]["backbone"] == "weights"
        assert report["verified_on"]["data"] == data and report["verified_on"]["examples"] == 30
        assert report["max_abs_logit_diff"] <= 1e-3 and report["predictions_changed"] == 0
        assert report["accuracy"]["onnx"] == report["accuracy"]["pytorch"]
        low, high = (int(x) for x in data.split(":")[1].split("-"))
        assert json.loads((out / "classes.json").read_text()) == [str(d) for d in range(low, high + 1)]
        assert json.loads((out / "preprocess.json").read_text())["size"] == 16
        reference, got = _torch_and_onnx(module, name, out / "model.onnx")
        assert got.shape == reference.shape == (30, 5)
        assert np.abs(got - reference).max() <= TOLERANCE
        exported[name] = got
    assert not np.allclose(exported["low"], exported["high"], atol=1e-3)  # each task its own head
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(TASKS)  # no temporary folders left


def test_all_tasks_write_one_folder_each_and_predict_agrees(merged, tmp_path, capsys):
    module = merged["module"]
    out = tmp_path / "all"
    code, printed, err = run_cli(["export", "--run", str(module), "--task", "all", "--format", "onnx",
                                  "--out", str(out)], capsys)
    assert code == 0, err
    assert "exported 2 tasks" in printed
    summary = json.loads((out / "export.json").read_text())
    assert list(summary["tasks"]) == list(TASKS)
    assert sorted(p.name for p in out.iterdir()) == sorted([*TASKS, "export.json"])
    images = _digit_images(tmp_path)
    for name in TASKS:
        folder = out / name
        assert {"model.onnx", "classes.json", "preprocess.json", "export.json"} <= {p.name for p in folder.iterdir()}
        assert json.loads((folder / "export.json").read_text()) == summary["tasks"][name]
        reference, got = _torch_and_onnx(module, name, folder / "model.onnx")
        assert np.abs(got - reference).max() <= TOLERANCE
        # predict --model on the task's export answers as predict --run MERGED --task NAME does
        code_run, by_run, _ = run_cli(["predict", "--run", str(module), "--task", name, *images], capsys)
        code_onnx, by_onnx, _ = run_cli(["predict", "--model", str(folder / "model.onnx"), *images], capsys)
        assert code_run == code_onnx == 0
        rows = [[line.split("\t") for line in text.strip().splitlines()[1:]] for text in (by_run, by_onnx)]
        assert [r[0] for r in rows[0]] == [r[0] for r in rows[1]]
        for a, b in zip(rows[0], rows[1]):
            assert float(a[1]) == pytest.approx(float(b[1]), abs=2e-4)


def test_data_stands_in_for_a_task_without_recorded_data(merged, tmp_path, capsys):
    module = tmp_path / "module"
    shutil.copytree(merged["module"], module)
    meta = json.loads((module / "multitask.json").read_text())
    meta["tasks"]["low"]["run_config"]["data"] = ""  # as a module saved outside a run records it
    (module / "multitask.json").write_text(json.dumps(meta))
    out = tmp_path / "out"
    code, _, err = run_cli(["export", "--run", str(module), "--task", "low", "--format", "onnx",
                            "--out", str(out)], capsys)
    assert code == 2 and "--data" in error_line(err) and not out.exists()
    code, _, err = run_cli(["export", "--run", str(module), "--task", "low", "--format", "onnx",
                            "--data", "digits:0-4", "--max-val", "12", "--out", str(out)], capsys)
    assert code == 0, err
    report = json.loads((out / "export.json").read_text())
    assert report["verified_on"] == {"split": "val", "examples": 12, "data": "digits:0-4"}


def test_bad_task_requests_are_one_line_and_write_nothing(merged, tmp_path, capsys):
    module, run = merged["module"], merged["runs"][0]
    cases = [(["--run", str(module), "--task", "middle"], "no such task"),
             (["--run", str(module)], "pass --task"),
             (["--run", run, "--task", "low"], "not a multi-task module"),
             (["--run", f"{run}/task_module", "--task", "low"], "not a multi-task module"),
             (["--run", str(tmp_path / "missing"), "--task", "low"], "no such folder")]
    out = tmp_path / "out"
    for args, expected in cases:
        code, _, err = run_cli(["export", *args, "--format", "onnx", "--out", str(out)], capsys)
        assert code == 2 and expected in error_line(err), (args, err)
        assert not out.exists()
    assert not list(tmp_path.iterdir())
    assert sorted(p.name for p in module.iterdir()) == sorted(
        ["multitask.json", "backbone.safetensors", "tasks.safetensors", "adapter_config.json",
         "adapter_model.safetensors"])


def _digit_images(tmp_path):
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    paths = []
    for i in range(4):
        path = tmp_path / f"d{i}.png"
        Image.fromarray((digits.images[i] * 16).astype("uint8")).convert("RGB").save(path)
        paths.append(str(path))
    return paths
