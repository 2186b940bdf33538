"""`transferlab modules merge A B C --method ...`: three task modules trained on one tiny base for different digit
subsets merge into one multi-task module; each task's head answers its task through predict/evaluate --task;
the merged LoRA loads in plain peft; bad inputs are one line, exit 2, nothing written."""
from __future__ import annotations

import json

import pytest
import torch

from tests.conftest import TINY_IMAGE_MODEL
from tests.peft.conftest import train
from transferlab.cli import main

SUBSETS = {"low": "digits:0-2", "mid": "digits:3-5", "high": "digits:6-9"}


@pytest.fixture(scope="module")
def task_runs(tmp_path_factory, tiny_base):
    root = tmp_path_factory.mktemp("merge_runs")
    runs = {}
    for method in ("lora", "bitfit"):
        for name, data in SUBSETS.items():
            runs[method, name] = train(root / method / name, TINY_IMAGE_MODEL, data, method, weights=str(tiny_base),
                                       epochs=2, image_size=16, max_train=90).out
    return runs


@pytest.mark.parametrize("method", ["linear", "task_arithmetic", "ties", "dare_linear", "dare_ties", "svd"])
def test_lora_modules_merge_and_each_task_answers(method, task_runs, tmp_path, capsys):
    out = tmp_path / f"merged_{method}"
    modules = [str(task_runs["lora", n]) for n in SUBSETS]
    main(["modules", "merge", *modules, "--method", method, "--out", str(out)])
    report = json.loads(capsys.readouterr().out.split("\nmulti-task module")[0])
    assert report["tasks"] == list(SUBSETS) and "add_weighted_adapter" in report["merged_with"]
    for name, data in SUBSETS.items():
        main(["evaluate", "--run", str(out), "--task", name])
        result = json.loads(capsys.readouterr().out)
        classes = data.split(":")[1].split("-")
        assert result["task"] == name and 0 <= result["accuracy"] <= 1
        if method == "task_arithmetic":
            assert result["accuracy"] > 1 / (int(classes[1]) - int(classes[0]) + 1)
    main(["predict", "--run", str(out), "--task", "high", *_digit_images(tmp_path)])
    lines = capsys.readouterr().out.strip().splitlines()[1:]
    assert lines and all(line.split("\t")[0] in {"6", "7", "8", "9"} for line in lines)


def _digit_images(tmp_path):
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    paths = []
    for i in range(3):
        path = tmp_path / f"d{i}.png"
        Image.fromarray((digits.images[i] * 16).astype("uint8")).convert("RGB").save(path)
        paths.append(str(path))
    return paths


def test_merged_lora_loads_in_plain_peft(task_runs, tmp_path, tiny_base):
    import timm
    from peft import PeftModel
    from safetensors.torch import load_file

    from transferlab.runs import load_run_model

    out = tmp_path / "merged"
    main(["modules", "merge", *[str(task_runs["lora", n]) for n in SUBSETS], "--method", "ties", "--out", str(out)])
    plain = timm.create_model(TINY_IMAGE_MODEL, num_classes=0)
    plain.load_state_dict({k: v for k, v in load_file(str(tiny_base)).items() if not k.startswith("classifier.")})
    plain = PeftModel.from_pretrained(plain, str(out)).eval()
    _, model, _ = load_run_model(out, task="mid")
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert (plain(x) - model.features({"pixel_values": x})).abs().max().item() < 1e-4


@pytest.mark.parametrize("method", ["linear", "ties", "dare_ties"])
def test_bitfit_modules_merge_as_task_vectors(method, task_runs, tmp_path, capsys):
    out = tmp_path / "merged"
    main(["modules", "merge", *[str(task_runs["bitfit", n]) for n in SUBSETS], "--method", method,
          "--density", "0.7", "--out", str(out)])
    assert "merge_utils" in capsys.readouterr().out
    for name in SUBSETS:
        main(["evaluate", "--run", str(out), "--task", name])
        assert json.loads(capsys.readouterr().out)["task"] == name


def test_bad_inputs_are_one_line_and_write_nothing(task_runs, tmp_path, tiny_base, other_tiny_base, capsys):
    other = train(tmp_path / "other", TINY_IMAGE_MODEL, "digits:0-2", "lora", weights=str(other_tiny_base),
                  epochs=1, image_size=16, max_train=30).out
    rank4 = train(tmp_path / "rank4", TINY_IMAGE_MODEL, "digits:0-2", "lora:r=4", weights=str(tiny_base),
                  epochs=1, image_size=16, max_train=30).out
    lora = [str(task_runs["lora", n]) for n in SUBSETS]
    bitfit = [str(task_runs["bitfit", n]) for n in SUBSETS]
    cases = [([*lora[:2], str(other), "--names", "a,b,c"], "different bases"),
             ([*lora[1:], str(rank4), "--method", "linear"], "--method linear cannot merge these LoRA modules"),
             ([*bitfit, "--method", "svd"], "svd"),
             ([*lora, "--weights", "0.5,0.5"], "--weights"),
             ([lora[0], bitfit[1]], "different methods"),
             ([*lora, "--method", "ties", "--density", "0"], "--density must be in (0, 1]"),
             ([*bitfit, "--method", "dare_ties", "--density", "1.5"], "--density must be in (0, 1]"),
             ([*lora, "--method", "dare_linear", "--density", "nan"], "--density must be in (0, 1]")]
    for i, (argv, words) in enumerate(cases):
        out = tmp_path / f"out{i}"
        with pytest.raises(SystemExit) as info:
            main(["modules", "merge", *argv, "--out", str(out)])
        err = capsys.readouterr().err
        assert info.value.code == 2 and words in err and len(err.strip().splitlines()) == 1, err
        assert not out.exists()
    with pytest.raises(SystemExit):
        main(["evaluate", "--run", lora[0], "--task", "low"])  # --task on a plain run
    assert "not a multi-task module" in capsys.readouterr().err


def test_out_that_exists_is_refused_and_left_as_it_was(task_runs, tmp_path, capsys):
    """An earlier merge (without --overwrite), someone else's folder, a file: one line, exit 2, not touched."""
    lora = [str(task_runs["lora", n]) for n in SUBSETS]
    merged = tmp_path / "merged"
    main(["modules", "merge", *lora, "--out", str(merged)])
    capsys.readouterr()
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    a_file = tmp_path / "a_file"
    a_file.write_text("mine")
    for out, words in ((merged, "already holds a transferlab multi-task module"),
                       (foreign, "holds files that are not a transferlab multi-task module"),
                       (a_file, "is an existing file")):
        before = _tree(out)
        with pytest.raises(SystemExit) as info:
            main(["modules", "merge", *lora, "--method", "ties", "--out", str(out)])
        err = capsys.readouterr().err
        assert info.value.code == 2 and words in err and len(err.strip().splitlines()) == 1, err
        assert _tree(out) == before


def _tree(path) -> dict:
    """Every file under `path` (or `path` itself) with its bytes and modification time."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return {str(p): (p.read_bytes(), p.stat().st_mtime_ns) for p in files}
